"""Streaming writers for the three build outputs; each records the sha256 of what it wrote.

All paths are relative to the build root, so the manifest lists them the same way whether the
tree sits in its temporary folder or in place.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np


TFRECORD_SHARD_BYTES = 100 * 1000 * 1000  # about 100 MB per shard
HDF5_SHARD_BYTES = 2 * 1024 ** 3  # one file per split up to 2 GiB of pixels

IMAGE_FEATURES = {
    "image/encoded": {"dtype": "string", "shape": [], "doc": "JPEG bytes, S x S RGB"},
    "image/format": {"dtype": "string", "shape": [], "doc": "b'jpeg'"},
    "image/height": {"dtype": "int64", "shape": [], "doc": "S"},
    "image/width": {"dtype": "int64", "shape": [], "doc": "S"},
    "image/class/label": {"dtype": "int64", "shape": [], "doc": "class index in manifest['classes']"},
    "image/class/text": {"dtype": "string", "shape": [], "doc": "class name"},
    "image/filename": {"dtype": "string", "shape": [], "doc": "the picture's file name in the class folders (its path under SRC, / written as __)"},
}
RESERVED = ("labels", "filenames", "images")  # HDF5 dataset names a label field may not take


def features(fields, docs: dict | None = None) -> dict:
    """The Example's keys: the image keys, then one int64 or string feature per label field, each
    with its dtype and doc (tfrecord/datakit_features.json; tfds_metadata builds TFDS's features.json
    from it)."""
    docs = docs or {}
    out = {key: {**spec, "doc": docs.get(key, spec["doc"])} for key, spec in IMAGE_FEATURES.items()}
    for f in fields:
        out[f.name] = {"dtype": "int64" if f.kind == "int" else "string", "shape": [],
                       "doc": docs.get(f.name, f"label field {f.name!r}")}
    return out


def shard_name(stem: str, i: int, n: int, ext: str = "") -> str:
    return f"{stem}{ext}-{i:05d}-of-{n:05d}"


class TFRecordWriter:
    """tfrecord/{stem}-{split}.tfrecord-{i:05d}-of-{n:05d}: contiguous blocks of the split's write order."""

    def __init__(self, root: Path, split: str, n_records: int, est_bytes: int, stem: str):
        self.dir = root / "tfrecord"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n_shards = max(1, math.ceil(est_bytes / TFRECORD_SHARD_BYTES))
        self.per_shard = max(1, math.ceil(n_records / self.n_shards))
        self.split = split
        self.stem = stem
        self.paths: list[str] = []
        self.hashes: dict[str, str] = {}
        self._count = 0
        self._file = None
        self._sha = None

    def _open(self, i: int) -> None:
        self._finish()
        rel = f"tfrecord/{shard_name(f'{self.stem}-{self.split}', i, self.n_shards, '.tfrecord')}"
        self.paths.append(rel)
        self._file = open(self.dir.parent / rel, "wb")
        self._sha = hashlib.sha256()

    def _finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self.hashes[self.paths[-1]] = self._sha.hexdigest()
            self._file = None

    def add(self, framed: bytes) -> None:
        """Append one record already framed by `tfrecord.frame` (framing happens in the worker processes)."""
        if self._count % self.per_shard == 0:
            self._open(self._count // self.per_shard)
        self._file.write(framed)
        self._sha.update(framed)
        self._count += 1

    def close(self) -> None:
        # Shards left empty (pictures dropped under --allow-short) still exist, so `-of-n` stays true.
        while len(self.paths) < self.n_shards:
            self._open(len(self.paths))
        self._finish()


class HDF5Writer:
    """hdf5/{stem}-{split}.h5 (sharded past HDF5_SHARD_BYTES): images (N,S,S,3) uint8 RGB, one chunk each,
    `labels`, one dataset per label field (int64 or utf-8 strings), `filenames`.

    Why the low-level path: HDF5 has one writer per file. The files are therefore created up front
    with every image chunk allocated (uncompressed, never filled), and worker processes write
    pixels straight to each chunk's byte offset (datakit.builder.emit). The small per-image columns
    are written through h5py when the writer closes. The result is an ordinary chunked HDF5 file.
    """

    def __init__(self, root: Path, split: str, n_records: int, size: int, classes: list[str], fields, stem: str,
                 shard_bytes: int = HDF5_SHARD_BYTES):
        self.dir = root / "hdf5"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size, self.classes, self.fields = size, classes, tuple(fields)
        n_shards = max(1, math.ceil(n_records * size * size * 3 / shard_bytes))
        self.per_shard = max(1, math.ceil(n_records / n_shards))
        rows = [min(self.per_shard, n_records - i * self.per_shard) for i in range(n_shards)]
        stem = f"{stem}-{split}"
        self.paths = [f"hdf5/{stem}.h5"] if n_shards == 1 else \
            [f"hdf5/{shard_name(stem, i, n_shards)}.h5" for i in range(n_shards)]
        self.hashes: dict[str, str] = {}
        self.rows = rows
        for rel, n in zip(self.paths, rows):
            self._create(root / rel, n)
        self._root = root

    def _create(self, path: Path, n: int) -> None:
        s = self.size
        with h5py.File(path, "w") as f:
            space = h5py.h5s.create_simple((n, s, s, 3), (h5py.h5s.UNLIMITED, s, s, 3))
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((1, s, s, 3))
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            dcpl.set_obj_track_times(False)
            h5py.h5d.create(f.id, b"images", h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl)

    def close(self, columns: list[tuple[int, int, dict, str]]) -> None:
        """Finish every shard. `columns[row] = (row, label, label fields, filename)` for the rows
        that were written, in row order; rows missing from it (pictures dropped under
        --allow-short) are squeezed out."""
        for shard, rel in enumerate(self.paths):
            lo, hi = shard * self.per_shard, shard * self.per_shard + self.rows[shard]
            mine = [c for c in columns if lo <= c[0] < hi]
            with h5py.File(self._root / rel, "r+") as f:
                images = f["images"]
                for new, c in enumerate(mine):
                    if c[0] - lo != new:
                        images[new] = images[c[0] - lo]
                if len(mine) != images.shape[0]:
                    images.resize(len(mine), axis=0)
                f.create_dataset("labels", data=np.array([c[1] for c in mine], dtype=np.int64), track_times=False)
                for fld in self.fields:
                    values = [c[2][fld.name] for c in mine]
                    if fld.kind == "int":
                        f.create_dataset(fld.name, data=np.array(values, dtype=np.int64), track_times=False)
                    else:
                        f.create_dataset(fld.name, data=np.array(values, dtype=object),
                                         dtype=h5py.string_dtype("utf-8"), track_times=False)
                f.create_dataset("filenames", data=np.array([c[3] for c in mine], dtype=object),
                                 dtype=h5py.string_dtype("utf-8"), track_times=False)
                f.attrs["class_names"] = np.array(self.classes, dtype=h5py.string_dtype("utf-8"))
                f.attrs["size"] = self.size


def write_features_json(root: Path, table: dict) -> tuple[str, str]:
    """tfrecord/datakit_features.json: the keys as plain tf.io parsing sees them (features.json is TFDS's)."""
    rel = "tfrecord/datakit_features.json"
    data = json.dumps({"features": table,
                       "parse": "tf.io.parse_single_example(record, {name: tf.io.FixedLenFeature([], "
                                "tf.string or tf.int64)})"}, indent=2).encode()
    (root / rel).write_bytes(data)
    return rel, hashlib.sha256(data).hexdigest()
