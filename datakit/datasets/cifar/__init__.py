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
`records` gives a `tf.data.FixedLengthRecordDataset` for pipelines that stream from disk.
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
           "decode_record", "default_dest", "fetch", "load", "locate", "record_count", "record_format", "records",
           "spec", "split_files", "_interleave", "_interleave_numpy", "_mode"]


def record_format(dest: str | os.PathLike | None = None, dataset: str | None = None) -> dict:
    """Byte layout of one record: {"dataset", "record_bytes", "label_bytes", "label_offsets", "image_offset"}."""
    s = locate(dest, dataset)[0] if dest is not None else spec(dataset or "cifar10")
    return _record_format(s)


def decode_record(record, label_offset: int = 0, label_bytes: int = 1):
    """TensorFlow ops: one raw record -> (image uint8 [32, 32, 3] RGB, label int32). Usable in Dataset.map."""
    import tensorflow as tf

    raw = tf.io.decode_raw(record, tf.uint8)
    label = tf.cast(raw[label_offset], tf.int32)
    image = tf.transpose(tf.reshape(raw[label_bytes:label_bytes + PIXEL_BYTES], [3, 32, 32]), [1, 2, 0])
    return image, label


def records(dest: str | os.PathLike, split: str = "train", decode: bool = False, label_mode: str | None = None,
            dataset: str | None = None):
    """tf.data.FixedLengthRecordDataset of a split's raw records (see `record_format` for the bytes).

    With decode=True each element is (image uint8 [32, 32, 3] RGB, label int32) for `label_mode`.
    File sizes are checked first: a partial record is an error naming the file, not a silent drop.
    """
    import tensorflow as tf

    s, folder = locate(dest, dataset)
    mode = _mode(s, label_mode)
    files = split_files(s, folder, split)
    for f in files:
        record_count(f, s)
    ds = tf.data.FixedLengthRecordDataset([str(f) for f in files], record_bytes=s.record_bytes)
    if decode:
        offset, nbytes = s.label_offsets[mode], s.label_bytes
        ds = ds.map(lambda r: decode_record(r, offset, nbytes), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    return ds
