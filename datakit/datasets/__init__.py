"""One package per dataset (utk, cifar, folder) behind one interface; `open_dataset` opens any built or fetched folder.

`base.Dataset` is the interface (with `Item`, `ReadError`, `decode_picture`), `built.BuildDataset`
any builder output, `registry.open_dataset` the way in.
"""

from datakit.datasets.base import Dataset, FileReport, Item, ReadError, decode_picture
from datakit.datasets.registry import open_dataset, register

__all__ = ["Dataset", "FileReport", "Item", "ReadError", "decode_picture", "open_dataset", "register"]
