"""tf.data sources of datasets: what `datakit.pipelines` reads, whatever the dataset.

A dataset's `tf_source(split, fmt, size)` returns a `TFSource`: how many images, their shape, and
one or both ways of reading them:
- `load()`: the whole split as in-memory uint8 arrays (CIFAR, HDF5), which the pipelines gather
  batches from (the fused fast path with precomputed crop statistics);
- `read(service, shuffle)`: a tf.data.Dataset of *encoded* elements (raw records, serialized
  Examples, file paths) plus `decode` (one element -> uint8 image, int32 label) and, where the
  encoding allows it, `decode_batch` (a batch of elements at once). This is what tf.data service
  workers run: only file names travel in the graph, and the dispatcher's splits are the source's
  (files, or chunks of records).

`build_source` is the source of any builder output (build-utk, `datakit build`), read through its
manifest: TFRecord shards, class folders of JPEGs, HDF5 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datakit.errors import DatakitError

BUILD_FORMATS = ("tfrecord", "hdf5", "folders")
JPEG_SUFFIXES = (".jpg", ".jpeg")
FEATURES = {"image": "image/encoded", "label": "image/class/label"}  # the builders' TFRecord keys


def _tf():
    import tensorflow as tf

    return tf


@dataclass(frozen=True)
class TFSource:
    """One split of a dataset, as the pipelines read it (see the module docstring).

    description: "utk train tfrecord" and the like, for logs and errors;
    count: images in the split; image_shape: (height, width, channels) of every decoded image;
    files: the files read (absolute paths when the source is meant for tf.data service workers);
    shuffle_buffer: elements a streaming shuffle holds (encoded, so small): the pipelines permute
    each window of this many elements (the whole split when it holds it);
    identity: a small JSON-able fingerprint (dataset, split, format, size, count, files) that a
    pipeline state records, so that a resume refuses another source (`file_identity`).
    """

    description: str
    count: int
    image_shape: tuple[int, int, int]
    files: tuple[Path, ...] = ()
    load: Callable[[], tuple] | None = field(default=None, repr=False)
    read: Callable[[bool, bool], object] | None = field(default=None, repr=False)
    decode: Callable | None = field(default=None, repr=False)
    decode_batch: Callable | None = field(default=None, repr=False)
    shuffle_buffer: int = 10000
    identity: dict | None = None

    @property
    def in_memory(self) -> bool:
        return self.load is not None

    @property
    def streams(self) -> bool:
        return self.read is not None


def resize(image, size: int | None):
    """Resize uint8 image(s) to size x size (area-averaged when shrinking), back to uint8."""
    tf = _tf()
    if size is None:
        return image
    x = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def decoded(src: TFSource, batch: int = 256) -> TFSource:
    """`src` with a `load()` that decodes every element once (in file order, in parallel), so the
    pipelines take the fused in-memory path: what a trainer wants for a split that fits in memory and
    is read many times. `read` stays, for the tf.data service. The identity says "decoded": a pipeline
    state of the streamed source is not taken for this one."""
    import dataclasses

    import numpy as np

    def load():
        tf = _tf()
        ds = src.read(False, False)
        ds = (ds.batch(batch).map(src.decode_batch, num_parallel_calls=tf.data.AUTOTUNE) if src.decode_batch
              else ds.map(src.decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch))
        parts = [(x.numpy(), y.numpy()) for x, y in ds.prefetch(2)]
        if not parts:
            return np.zeros((0, *src.image_shape), np.uint8), np.zeros((0,), np.int32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int32)

    identity = None if src.identity is None else {**src.identity, "decoded": True}
    return dataclasses.replace(src, load=load, identity=identity)


def file_identity(files, names=None) -> str:
    """A short digest of the files' names and sizes (or of `names`): the same data moved elsewhere keeps it."""
    import hashlib
    import os

    h = hashlib.blake2b(digest_size=8)
    for f in files if names is None else ():
        h.update(f"{Path(f).name}\0{os.path.getsize(f)}\n".encode())
    for name in names or ():
        h.update(f"{name}\n".encode())
    return h.hexdigest()


def _check_request(dataset, split: str, fmt: str, size) -> None:
    where = Path(dataset.root) / "manifest.json"
    if fmt not in BUILD_FORMATS:
        raise DatakitError(f"format must be one of {', '.join(BUILD_FORMATS)}, got {fmt!r}", param="format")
    if split not in dataset.splits:
        raise DatakitError(f"{where}: no split {split!r} (splits: {', '.join(dataset.splits)})", param="split")
    if fmt not in dataset.formats:
        raise DatakitError(f"{where}: format {fmt!r} was not built (built: {', '.join(dataset.formats) or 'none'})",
                           param="format")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DatakitError(f"size must be a positive integer, got {size!r}", param="size")


def _folder_items(files, classes) -> tuple[list[str], list[int]]:
    """(paths, labels) of class-folder pictures (folders/<split>/<class>/<file>), by class then name."""
    index = {name: i for i, name in enumerate(classes)}
    items = sorted((index[f.parent.name], f.name, str(f)) for f in files
                   if f.suffix.lower() in JPEG_SUFFIXES and f.parent.name in index)
    if not items:
        where = files[0].parent.parent if files else "folders"
        raise DatakitError(f"{where}: no JPEG files in the class folders")
    return [p for _, _, p in items], [label for label, _, _ in items]


def _load_hdf5(files, size: int | None):
    import h5py
    import numpy as np

    parts = []
    for path in files:  # every shard of the split, in manifest order
        try:
            with h5py.File(path, "r") as f:
                parts.append((f["images"][...], np.asarray(f["labels"][...])))
        except (OSError, KeyError) as exc:
            raise DatakitError(f"{path}: unreadable HDF5 ({exc})") from None
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if size is not None and len(images) and images.shape[1:3] != (size, size):
        images = np.concatenate([resize(images[i:i + 256], size).numpy() for i in range(0, len(images), 256)])
    return images, labels


def build_source(dataset, split: str = "train", fmt: str | None = None, size: int | None = None) -> TFSource:
    """The TFSource of one split of a builder output (build-utk, `datakit build`), any class names.

    fmt: "tfrecord" (default) or "folders" stream and decode the JPEGs inside the pipeline; "hdf5"
    loads the decoded arrays. size: resize to size x size (default: the build's size).
    Label = the index of the class in `dataset.classes`.
    """
    fmt = fmt or "tfrecord"
    _check_request(dataset, split, fmt, size)
    files = tuple(Path(f).absolute() for f in dataset.files(split, fmt))
    side = size or int(dataset.size)
    shape = (side, side, 3)
    name = f"{dataset.key} {split} {fmt}"
    n = int(dataset.count(split))
    ident = {"dataset": dataset.key, "split": split, "format": fmt, "size": side, "count": n}
    if fmt == "hdf5":
        return TFSource(name, n, shape, files, load=lambda: _load_hdf5(files, size),
                        identity={**ident, "files": file_identity(files)})

    def jpeg(data, label):
        tf = _tf()
        image = resize(tf.io.decode_jpeg(data, channels=3), size)
        return tf.ensure_shape(image, shape), label

    if fmt == "folders":
        paths, labels = _folder_items(files, dataset.classes)

        def read(service: bool, shuffle: bool):
            tf = _tf()
            return tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))

        def decode_file(path, label):
            return jpeg(_tf().io.read_file(path), label)

        rel = [f"{label}/{Path(p).parent.name}/{Path(p).name}" for p, label in zip(paths, labels)]
        return TFSource(name, len(paths), shape, files, read=read, decode=decode_file, shuffle_buffer=len(paths),
                        identity={**ident, "count": len(paths), "files": file_identity((), rel)})

    def read(service: bool, shuffle: bool):
        tf = _tf()
        names = [str(f) for f in files]
        if service:  # the shards are the dispatcher's splits under distributed_epoch
            return tf.data.Dataset.from_tensor_slices(names).interleave(
                tf.data.TFRecordDataset, cycle_length=min(len(names), 8), num_parallel_calls=tf.data.AUTOTUNE)
        return tf.data.TFRecordDataset(names, num_parallel_reads=min(len(names), 8))

    def decode_example(record):
        tf = _tf()
        spec = {FEATURES["image"]: tf.io.FixedLenFeature([], tf.string),
                FEATURES["label"]: tf.io.FixedLenFeature([], tf.int64)}
        ex = tf.io.parse_single_example(record, spec)
        return jpeg(ex[FEATURES["image"]], tf.cast(ex[FEATURES["label"]], tf.int32))

    return TFSource(name, n, shape, files, read=read, decode=decode_example, shuffle_buffer=max(n, 1),
                    identity={**ident, "files": file_identity(files)})
