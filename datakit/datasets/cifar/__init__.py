"""CIFAR-10 / CIFAR-100, binary version: fetch the official tarballs, read the records exactly and fast.

`spec` holds every CIFAR fact (archives, folders, record layout, label modes, published counts),
`layout` finds a data set on disk, `binary` is the one numpy decode of the record layout (and
`load`, a whole split into memory), `download` fetches and verifies, and `dataset.CifarDataset` is
the `datakit.datasets.Dataset` of a fetched folder.

(The function `spec(name)` shadows the module `spec` as an attribute of this package: import the
module's names with `from datakit.datasets.cifar.spec import ...`.)

`dest` is everywhere either the fetch destination (holding `cifar-10-batches-bin/` or
`cifar-100-binary/`) or that folder itself; which data set it is comes from the files found.
`load` reads a whole split into memory with one buffer per file (no per-record Python loop);
the tf.data reading and decode of the records is `datakit.datasets.cifar.tfdata`.
"""

from __future__ import annotations

import os

from datakit.datasets.cifar.download import fetch
from datakit.datasets.cifar.layout import class_names, default_dest, locate, split_files
from datakit.datasets.cifar.binary import _interleave, _interleave_numpy, decode, load, record_count
from datakit.datasets.cifar.spec import (CIFAR10, CIFAR100, FINE_TO_COARSE, PIXEL_BYTES, SPECS, Spec, _mode,
                                         spec)
from datakit.datasets.cifar.spec import record_format as _record_format

__all__ = ["CIFAR10", "CIFAR100", "FINE_TO_COARSE", "PIXEL_BYTES", "SPECS", "Spec", "class_names", "decode",
           "default_dest", "fetch", "load", "locate", "record_count", "record_format",
           "spec", "split_files", "_interleave", "_interleave_numpy", "_mode"]


def record_format(dest: str | os.PathLike | None = None, dataset: str | None = None) -> dict:
    """Byte layout of one record: {"dataset", "record_bytes", "label_bytes", "label_offsets", "image_offset"}."""
    s = locate(dest, dataset)[0] if dest is not None else spec(dataset or "cifar10")
    return _record_format(s)
