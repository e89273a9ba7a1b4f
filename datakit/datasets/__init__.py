"""One package per dataset (utk, cifar, folder) behind one interface; `open_dataset` opens any built or fetched folder."""
