"""CIFAR-10 / CIFAR-100, binary version: fetch the official tarballs, read the records exactly and fast.

Record format (https://www.cs.toronto.edu/~kriz/cifar.html):
- CIFAR-10  (`cifar-10-batches-bin/`, data_batch_1..5.bin, test_batch.bin): 3073 bytes =
  label byte (0-9) + 3072 pixel bytes;
- CIFAR-100 (`cifar-100-binary/`, train.bin, test.bin): 3074 bytes =
  coarse label byte (0-19) + fine label byte (0-99) + 3072 pixel bytes.
The pixels are three 32x32 row-major planes, R then G then B; readers return (32, 32, 3) RGB.

`dest` is everywhere either the fetch destination (holding `cifar-10-batches-bin/` or
`cifar-100-binary/`) or that folder itself; which data set it is comes from the files found.
`load` reads a whole split into memory with one buffer per file (no per-record Python loop);
`records` gives a `tf.data.FixedLengthRecordDataset` for pipelines that stream from disk.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datakit import fetch as _fetch
from datakit.errors import DatakitError
from datakit.progress import null_progress

PIXEL_BYTES = 3072


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    url: str
    md5: str                      # published on the CIFAR page
    archive: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    label_bytes: int
    label_offsets: dict[str, int]  # label mode -> byte offset in a record
    classes: dict[str, int]        # label mode -> number of classes
    names: dict[str, str]          # label mode -> file of class names
    default_mode: str
    aliases: dict[str, str] = field(default_factory=dict)  # other accepted label_mode names

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXEL_BYTES

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f for files in self.splits.values() for f in files) + tuple(self.names.values())


CIFAR10 = Spec(
    key="cifar10", title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530",
    archive="cifar-10-binary.tar.gz", folder="cifar-10-batches-bin",
    splits={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    label_bytes=1, label_offsets={"label": 0}, classes={"label": 10},
    names={"label": "batches.meta.txt"}, default_mode="label", aliases={"fine": "label"},
)
CIFAR100 = Spec(
    key="cifar100", title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", md5="03b5dce01913d631647c71ecec9e9cb8",
    archive="cifar-100-binary.tar.gz", folder="cifar-100-binary",
    splits={"train": ("train.bin",), "test": ("test.bin",)},
    label_bytes=2, label_offsets={"coarse": 0, "fine": 1}, classes={"coarse": 20, "fine": 100},
    names={"coarse": "coarse_label_names.txt", "fine": "fine_label_names.txt"}, default_mode="fine",
)
SPECS = {s.key: s for s in (CIFAR10, CIFAR100)}


def spec(dataset: str) -> Spec:
    try:
        return SPECS[dataset]
    except KeyError:
        raise DatakitError(f"unknown data set {dataset!r}: expected one of {', '.join(SPECS)}") from None


def default_dest(dataset: str) -> Path:
    """$DATAKIT_HOME/<dataset>, or ~/.cache/datakit/<dataset> when DATAKIT_HOME is unset."""
    home = os.environ.get("DATAKIT_HOME") or os.path.join("~", ".cache", "datakit")
    return Path(home).expanduser() / spec(dataset).key


def locate(dest: str | os.PathLike, dataset: str | None = None) -> tuple[Spec, Path]:
    """(spec, folder of the .bin files) for a fetch destination or the batches folder itself."""
    dest = Path(dest).expanduser()
    candidates = [spec(dataset)] if dataset else list(SPECS.values())
    found = []
    for s in candidates:
        for folder in (dest / s.folder, dest):
            if any((folder / f).is_file() for files in s.splits.values() for f in files):
                found.append((s, folder))
                break
    if not found:
        wanted = " or ".join(f"{s.title} ({s.folder}/)" for s in candidates)
        raise DatakitError(f"{dest}: no {wanted} found")
    if len(found) > 1:
        raise DatakitError(f"{dest}: holds both CIFAR-10 and CIFAR-100; pass the data set folder itself "
                           "or dataset='cifar10' / 'cifar100'")
    return found[0]


def _mode(s: Spec, label_mode: str | None) -> str:
    mode = label_mode or s.default_mode
    mode = s.aliases.get(mode, mode)
    if mode not in s.label_offsets:
        raise DatakitError(f"label_mode {label_mode!r} does not apply to {s.title}: expected one of "
                           f"{', '.join(s.label_offsets)}")
    return mode


def split_files(s: Spec, folder: Path, split: str) -> list[Path]:
    if split not in s.splits:
        raise DatakitError(f"split {split!r}: expected one of {', '.join(s.splits)}")
    files = [folder / f for f in s.splits[split]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatakitError(f"{folder}: missing {', '.join(missing)} of the {s.title} {split} split")
    return files


def record_count(path: Path, s: Spec) -> int:
    """Records in a .bin file; an empty file or a partial last record is an error naming the file."""
    size = path.stat().st_size
    n, rest = divmod(size, s.record_bytes)
    if rest or n == 0:
        what = "is empty" if size == 0 else f"has {size} bytes, not a whole number of {s.record_bytes}-byte records"
        raise DatakitError(f"{path}: {what} ({s.title} binary format; truncated or not a {s.title} file)")
    return n


def _interleave(planes: np.ndarray, out: np.ndarray) -> None:
    """(n, 3072) R|G|B planes -> out (n, 1024, 3) RGB pixels; one vectorized pass per file.

    OpenCV's merge is a SIMD interleave and releases the GIL (about 5x numpy's transpose copy);
    numpy is the fallback.
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        cv2 = None
    if cv2 is not None and len(planes) < 2**31 // 1024:
        got = cv2.merge([planes[:, :1024], planes[:, 1024:2048], planes[:, 2048:]], dst=out)
        if got is out or np.shares_memory(got, out):
            return
        out[...] = got.reshape(out.shape)
        return
    _interleave_numpy(planes, out)


def _interleave_numpy(planes: np.ndarray, out: np.ndarray) -> None:
    out[...] = planes.reshape(len(planes), 3, 1024).transpose(0, 2, 1)


def _read_chunk(path: Path, s: Spec, first: int, offset: int, classes: int,
                images: np.ndarray, labels: np.ndarray) -> None:
    """Records first..first+len(labels) of `path` into `images` / `labels` (memory-mapped, no copy of the file)."""
    import mmap

    n = len(labels)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if len(m) < (first + n) * s.record_bytes:
            raise DatakitError(f"{path}: shrank while being read")
        rec = np.frombuffer(m, dtype=np.uint8).reshape(-1, s.record_bytes)[first:first + n]
        try:
            labels[...] = rec[:, offset]
            _interleave(rec[:, s.label_bytes:], images.reshape(n, 1024, 3))
        finally:
            del rec  # release the buffer so the map can close
    if int(labels.max()) >= classes:
        bad = int(np.argmax(labels >= classes))
        raise DatakitError(f"{path}: record {first + bad} has label {int(labels[bad])}, outside 0..{classes - 1} "
                           f"(not a {s.title} file?)")


_CHUNK_RECORDS = 10000  # work unit of the reader threads


def load(dest: str | os.PathLike, split: str = "train", label_mode: str | None = None,
         dataset: str | None = None, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3) RGB, labels int64 (N,)) of one split, files in official order.

    label_mode: CIFAR-100 "fine" (default) or "coarse"; CIFAR-10 has one label ("label", alias "fine").
    Each file is memory-mapped once per chunk of 10,000 records and interleaved straight into the
    output; chunks run on `workers` threads (default: all cores).
    """
    s, folder = locate(dest, dataset)
    mode = _mode(s, label_mode)
    files = split_files(s, folder, split)
    counts = [record_count(f, s) for f in files]
    total = sum(counts)
    images = np.empty((total, 32, 32, 3), np.uint8)
    labels = np.empty(total, np.int64)
    jobs, start = [], 0
    for f, n in zip(files, counts):
        for first in range(0, n, _CHUNK_RECORDS):
            k = min(_CHUNK_RECORDS, n - first)
            jobs.append((f, s, first, s.label_offsets[mode], s.classes[mode],
                         images[start + first:start + first + k], labels[start + first:start + first + k]))
        start += n
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        for job in jobs:
            _read_chunk(*job)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(_read_chunk, *job) for job in jobs]:
                future.result()
    return images, labels


def class_names(dest: str | os.PathLike, label_mode: str | None = None, dataset: str | None = None) -> list[str]:
    """Class names in label order, from batches.meta.txt or the CIFAR-100 label-name files."""
    s, folder = locate(dest, dataset)
    mode = _mode(s, label_mode)
    path = folder / s.names[mode]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatakitError(f"{path}: cannot read the {s.title} class names: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatakitError(f"{path}: not a text file of class names") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if len(names) != s.classes[mode] or not all(names):
        raise DatakitError(f"{path}: expected {s.classes[mode]} non-empty class names, found {len(names)} lines")
    return names


def record_format(dest: str | os.PathLike | None = None, dataset: str | None = None) -> dict:
    """Byte layout of one record: {"dataset", "record_bytes", "label_bytes", "label_offsets", "image_offset"}."""
    s = locate(dest, dataset)[0] if dest is not None else spec(dataset or "cifar10")
    return {"dataset": s.key, "record_bytes": s.record_bytes, "label_bytes": s.label_bytes,
            "label_offsets": dict(s.label_offsets), "image_offset": s.label_bytes, "image_shape": (32, 32, 3)}


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


def _check_tree(s: Spec):
    """Validation run on a freshly extracted tree before it is moved into place."""

    def check(tree: Path) -> dict:
        missing = [f for f in s.required if not (tree / f).is_file()]
        if missing:
            raise DatakitError(f"{tree.name}/ in the archive lacks {', '.join(missing)}: not the {s.title} binary version")
        counts = {split: sum(record_count(tree / f, s) for f in files) for split, files in s.splits.items()}
        for mode in s.names:
            class_names(tree, mode, s.key)
        return {"dataset": s.key, "counts": counts}

    return check


def fetch(dataset: str, dest: str | os.PathLike | None = None, *, url: str | None = None, md5: str | None = None,
          sha256: str | None = None, from_archive: str | os.PathLike | None = None, tries: int = 5,
          timeout: float = 30.0, backoff: float | None = None, progress=null_progress) -> dict:
    """Make `dest` (default `default_dest(dataset)`) hold the verified, extracted binary version.

    Downloads from `url` (default: the official URL, verified against the pinned MD5 unless `md5` /
    `sha256` is given) or takes the local tarball `from_archive` (verified only when a checksum is
    given). A complete earlier fetch is reused without network I/O.
    Returns {"dataset", "folder", "archive": {...md5, sha256}, "counts", "fetched", "download", ...}.
    """
    s = spec(dataset)
    if url is not None and from_archive is not None:
        raise DatakitError("--url and --from-archive exclude each other")
    expected = _fetch.check_digests(md5, sha256)
    if not expected and from_archive is None:
        expected = {"md5": s.md5}
    result = _fetch.install_archive(
        dest if dest is not None else default_dest(s.key), s.folder, archive_name=s.archive,
        url=None if from_archive is not None else (url or s.url), from_archive=from_archive, expected=expected,
        check=_check_tree(s), tries=tries, backoff=backoff, timeout=timeout, progress=progress)
    result["title"] = s.title
    result["classes"] = {mode: class_names(result["folder"], mode, s.key) for mode in s.names}
    return result
