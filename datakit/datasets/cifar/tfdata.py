"""CIFAR records in TensorFlow: the one tf.data decode of the record layout, and the split as a TFSource.

The layout (label byte(s), then three 32x32 planes R, G, B) is the `Spec`'s; `decode` turns one
record or a batch of records into RGB images and labels with one decode_raw and one transpose
(a batch at once is about 3x faster than record by record). The numpy decode of the same layout
is `datakit.datasets.cifar.records`.
"""

from __future__ import annotations

from datakit.datasets.cifar.spec import SIDE
from datakit.datasets.tfdata import TFSource, file_identity

SERVICE_CHUNK = 256  # records per split handed out by the tf.data service dispatcher (distributed_epoch)


def _tf():
    import tensorflow as tf

    return tf


def decode(records, spec, label_offset: int = 0):
    """TensorFlow ops: raw record(s) (a string, or a [B] batch of strings) -> (uint8 images [..., 32, 32, 3]
    RGB, int32 labels [...]), the label read at byte `label_offset`. Usable in Dataset.map."""
    tf = _tf()
    raw = tf.io.decode_raw(records, tf.uint8)              # [..., record_bytes]
    rank = raw.shape.rank
    lead = [-1 if d is None else d for d in raw.shape.as_list()[:-1]]
    planes = tf.reshape(raw[..., spec.label_bytes:spec.record_bytes], lead + [3, SIDE, SIDE])
    images = tf.transpose(planes, list(range(rank - 1)) + [rank, rank + 1, rank - 1])
    return images, tf.cast(raw[..., label_offset], tf.int32)


def records(files, spec):
    """tf.data.FixedLengthRecordDataset of the raw records of `files` (in order)."""
    tf = _tf()
    return tf.data.FixedLengthRecordDataset([str(f) for f in files], record_bytes=spec.record_bytes)


def label_offset(spec, label_mode: str | None) -> int:
    mode = label_mode or spec.default_mode
    return spec.label_offsets[spec.aliases.get(mode, mode)]


def source(dataset, split: str) -> TFSource:
    """One CIFAR split: in memory (the numpy reader) for local pipelines; streamed from the .bin files
    in chunks of SERVICE_CHUNK records for tf.data service workers (the chunk table is the graph)."""
    from datakit import service
    from datakit.datasets import cifar

    spec = dataset.spec
    files = tuple(f.absolute() for f in dataset.files(split, dataset.formats[0]))
    offset = label_offset(spec, dataset.label_mode)
    n = int(dataset.count(split))

    def load():
        return cifar.load(dataset.root, split=split, label_mode=dataset.label_mode, dataset=spec.key)

    def read(service_: bool, shuffle: bool):
        return service.record_chunks(files, spec.record_bytes, SERVICE_CHUNK, cycle_length=4 if shuffle else 1)

    def one(record):
        return decode(record, spec, offset)

    return TFSource(f"{spec.key} {split} ({n} images, files in {files[0].parent})", n, (SIDE, SIDE, 3), files,
                    load=load, read=read, decode=one, decode_batch=one, shuffle_buffer=min(n, 10000),
                    identity={"dataset": spec.key, "split": split, "format": "bin",
                              "labels": spec.aliases.get(dataset.label_mode or spec.default_mode,
                                                         dataset.label_mode or spec.default_mode),
                              "count": n, "files": file_identity(files)})
