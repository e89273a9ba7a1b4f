"""Read data sets back the way a training job would: build-utk outputs in any built format, CIFAR folders.

Why a separate layer: `preview` and `doctor` must look at what a format really holds (a label or
channel order that is wrong in one format only must show), without importing TensorFlow. So each
format is read with its own plain reader: folders with Pillow, TFRecord shards with
`datakit.tfrecord` (checksums verified), HDF5 with h5py, CIFAR binaries with numpy.

Readers stream `Item`s: the label, the original file name, where the record sits, and either the
encoded bytes (folders, TFRecord; decode with `Item.rgb()`) or the pixels (HDF5, CIFAR). Problems a
reader meets (a missing shard, a corrupt record) go to `on_error(where, reason)` and the reader
carries on where it can; without `on_error` they raise `ReadError`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from datakit.errors import DatakitError

UTK_FORMATS = ("folders", "tfrecord", "hdf5")
CIFAR_FORMAT = "binary"
HDF5_BLOCK = 64  # images read per h5py call (a few MB at 200 px)


class ReadError(DatakitError):
    """A record or file cannot be read; the message names it and says why."""


@dataclass
class Item:
    label: int
    filename: str
    where: str  # file (and record index) the item came from, relative to the data set root
    data: bytes | None = None  # encoded picture (folders, TFRecord)
    pixels: np.ndarray | None = None  # uint8 (H, W, 3) RGB once decoded (HDF5, CIFAR: always)
    meta: dict = field(default_factory=dict)  # per-format extras: tfrecord text/race/gender/height/width...
    fetch: Callable[[], np.ndarray] | None = None  # lazy pixel read (HDF5 without pixels=True)

    def rgb(self) -> np.ndarray:
        """The pixels as uint8 (H, W, 3) RGB; raises ReadError when the picture does not decode."""
        if self.pixels is None:
            if self.data is not None:
                self.pixels, self.meta["encoding"] = decode_picture(self.data, self.where)
            elif self.fetch is not None:
                self.pixels = self.fetch()
            else:
                raise ReadError(f"{self.where}: no picture")
        return self.pixels


def decode_picture(data: bytes, where: str = "picture") -> tuple[np.ndarray, str]:
    """(uint8 (H, W, 3) RGB, "FORMAT MODE" as stored) for encoded bytes; raises ReadError."""
    if not data:
        raise ReadError(f"{where}: empty file")
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except UnidentifiedImageError:
        raise ReadError(f"{where}: not an image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a property of the bytes
        raise ReadError(f"{where}: cannot decode ({exc})") from None
    encoding = f"{im.format} {im.mode}"
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im), encoding


def _raise(where: str, reason: str) -> None:
    raise ReadError(f"{where}: {reason}")


class Source:
    """An opened data set: `kind` "utk" (a build-utk output) or "cifar10" / "cifar100"."""

    kind: str
    root: Path
    classes: list[str]
    splits: list[str]
    formats: list[str]
    size: int
    manifest: dict | None = None

    def expected_counts(self, split: str) -> dict[str, int] | None:
        raise NotImplementedError

    def items(self, split: str, fmt: str | None = None, pixels: bool = True,
              on_error: Callable[[str, str], None] | None = None) -> Iterator[Item]:
        raise NotImplementedError

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise DatakitError(f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return split

    def check_format(self, fmt: str | None) -> str:
        fmt = fmt or self.formats[0]
        if fmt not in self.formats:
            raise DatakitError(f"{self.root}: format {fmt!r} not available (has {', '.join(self.formats)})")
        return fmt

    def describe(self) -> str:
        return f"{self.kind} {self.root}"


class UTKBuild(Source):
    """A build-utk output folder, read through its manifest.json."""

    kind = "utk"

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        try:
            self.classes = list(manifest["classes"])
            self.splits = list(manifest["splits"])
            self.size = int(manifest["size"])
            self.races = list(manifest.get("races", []))
            outputs = manifest["outputs"]
            self.formats = [f for f in UTK_FORMATS if f in outputs]
            self.outputs = outputs
        except (KeyError, TypeError, ValueError) as exc:
            raise DatakitError(f"{root / 'manifest.json'}: not a build-utk manifest (missing or bad {exc})") from None
        if not self.formats:
            raise DatakitError(f"{root / 'manifest.json'}: lists no outputs among {', '.join(UTK_FORMATS)}")

    def expected_counts(self, split: str) -> dict[str, int] | None:
        return dict(self.manifest.get("counts", {}).get(split, {})) or None

    def items(self, split, fmt=None, pixels=True, on_error=None):
        split, fmt = self.check_split(split), self.check_format(fmt)
        on_error = on_error or _raise
        reader = {"folders": self._folders, "tfrecord": self._tfrecord, "hdf5": self._hdf5}[fmt]
        return reader(split, pixels, on_error)

    def _folders(self, split, pixels, on_error):
        rel = self.outputs["folders"].get(split, f"folders/{split}")
        base = self.root / rel
        if not base.is_dir():
            on_error(rel, "missing folder")
            return
        for entry in sorted(base.iterdir()):
            where = f"{rel}/{entry.name}"
            if not entry.is_dir():
                on_error(where, "stray file (folders/<split>/ holds only class folders)")
                continue
            if entry.name not in self.classes:
                on_error(where, f"class folder {entry.name!r} is not a class of the manifest")
                continue
            label = self.classes.index(entry.name)
            for f in sorted(entry.iterdir()):
                if not f.is_file():
                    on_error(f"{where}/{f.name}", "not a file")
                    continue
                try:
                    data = f.read_bytes()
                except OSError as exc:
                    on_error(f"{where}/{f.name}", f"cannot read: {exc.strerror or exc}")
                    continue
                yield Item(label, f.name, f"{where}/{f.name}", data=data)

    def _tfrecord(self, split, pixels, on_error):
        from datakit import tfrecord

        for rel in self.outputs["tfrecord"].get(split, []):
            path = self.root / rel
            if not path.is_file():
                on_error(rel, "missing shard")
                continue
            i = 0
            try:
                for i, record in enumerate(tfrecord.read_records(path)):
                    where = f"{rel}#{i}"
                    try:
                        ex = tfrecord.parse_example(record)
                        data = ex["image/encoded"][0]
                        label = int(ex["image/class/label"][0])
                        filename = ex["image/filename"][0].decode("utf-8")
                    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
                        on_error(where, f"not a build-utk tf.train.Example ({type(exc).__name__}: {exc})")
                        continue
                    keys = ("image/class/text", "image/height", "image/width", "age", "gender", "race")
                    meta = {key: (ex[key][0].decode("utf-8", "replace") if isinstance(ex[key][0], bytes)
                                  else ex[key][0]) for key in keys if ex.get(key)}
                    yield Item(label, filename, where, data=data, meta=meta)
            except ValueError as exc:  # framing: truncated shard, checksum mismatch
                reason = str(exc).split(": ", 1)[-1]
                on_error(rel, f"{reason} (after {i} good records)")

    def _hdf5(self, split, pixels, on_error):
        import h5py

        for rel in self.outputs["hdf5"].get(split, []):
            path = self.root / rel
            if not path.is_file():
                on_error(rel, "missing file")
                continue
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                on_error(rel, f"cannot open HDF5 ({exc})")
                continue
            with f:
                try:
                    images = f["images"]
                    columns = {key: f[key][:] for key in ("labels", "filenames", "age", "gender", "race")}
                    names = [str(x, "utf-8") if isinstance(x, bytes) else str(x) for x in columns["filenames"]]
                    stored_classes = [str(x, "utf-8") if isinstance(x, bytes) else str(x)
                                      for x in f.attrs.get("class_names", [])]
                except (KeyError, OSError, ValueError) as exc:
                    on_error(rel, f"not a build-utk HDF5 file ({exc})")
                    continue
                n = len(images)
                lengths = {key: len(v) for key, v in columns.items()}
                if any(v != n for v in lengths.values()):
                    on_error(rel, f"images has {n} rows but {lengths}")
                    n = min([n, *lengths.values()])
                if stored_classes and stored_classes != self.classes:
                    on_error(rel, f"class_names attribute {stored_classes} differs from the manifest's classes")
                if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3) or images.dtype != np.uint8:
                    on_error(rel, f"images are {images.dtype} {images.shape[1:]}, not uint8 "
                                  f"{(self.size, self.size, 3)}")
                for start in range(0, n, HDF5_BLOCK):
                    stop = min(n, start + HDF5_BLOCK)
                    block = None
                    if pixels:
                        try:
                            block = images[start:stop]
                        except (OSError, ValueError) as exc:
                            on_error(f"{rel}[{start}:{stop}]", f"cannot read pixels ({exc})")
                            continue
                    for i in range(start, stop):
                        meta = {key: int(columns[key][i]) for key in ("age", "gender", "race")}
                        item = Item(int(columns["labels"][i]), names[i], f"{rel}[{i}]", meta=meta)
                        if block is not None:
                            item.pixels = block[i - start]
                        else:
                            item.fetch = lambda i=i: images[i]  # valid while the reader is being iterated
                        yield item


# Published record counts per file, to tell a subset (or a synthetic stand-in) from the real thing.
CIFAR_OFFICIAL = {"cifar10": {**{f"data_batch_{i}.bin": 10000 for i in range(1, 6)}, "test_batch.bin": 10000},
                  "cifar100": {"train.bin": 50000, "test.bin": 10000}}


class CifarFolder(Source):
    """cifar-10-batches-bin/ or cifar-100-binary/ (layout from `datakit.datasets.cifar`), streamed record by record.

    Files are memory-mapped and read in blocks, so a 50000-picture split never sits in memory.
    A record's file name is `<file>#<index>`. CIFAR-100 reads fine labels by default, coarse on
    request; `Item.meta` carries both.
    """

    formats = [CIFAR_FORMAT]
    size = 32
    BLOCK = 1024

    def __init__(self, dest: Path, label_mode: str | None = None):
        from datakit.datasets import cifar

        self.spec, self.root = cifar.locate(dest)
        self.kind = self.spec.key
        self.label_mode = cifar._mode(self.spec, label_mode)
        self.classes = cifar.class_names(self.root, self.label_mode, self.kind)
        self.splits = list(self.spec.splits)
        self.files = {split: list(files) for split, files in self.spec.splits.items()}

    def expected_counts(self, split: str) -> dict[str, int] | None:
        return None  # no manifest; `official_records` gives the published file sizes

    def official_records(self, name: str) -> int:
        return CIFAR_OFFICIAL[self.kind][name]

    def items(self, split, fmt=None, pixels=True, on_error=None):
        split = self.check_split(split)
        self.check_format(fmt)
        return self._records(split, on_error or _raise)

    def _records(self, split, on_error):
        s = self.spec
        col = s.label_offsets[self.label_mode]
        for name in self.files[split]:
            path = self.root / name
            try:
                nbytes = path.stat().st_size
            except OSError as exc:
                on_error(name, f"missing or unreadable ({exc.strerror or exc})")
                continue
            n, extra = divmod(nbytes, s.record_bytes)
            if extra or n == 0:
                on_error(name, f"{nbytes} bytes is not a whole number of {s.record_bytes}-byte {s.title} records "
                               f"(truncated or corrupt; {n} whole records read)")
            if n == 0:
                continue
            records = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, s.record_bytes))
            for start in range(0, n, self.BLOCK):
                block = np.array(records[start:start + self.BLOCK])
                labels = block[:, col].astype(np.int64)
                pics = np.ascontiguousarray(block[:, s.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                for j in range(len(block)):
                    i = start + j
                    meta = ({mode: int(block[j, off]) for mode, off in s.label_offsets.items()}
                            if s.label_bytes > 1 else {})
                    yield Item(int(labels[j]), f"{name}#{i}", f"{name}#{i}", pixels=pics[j], meta=meta)
            del records


def open_source(path, label_mode: str | None = None) -> Source:
    """Open a build-utk output folder or a CIFAR-10/100 binary folder; raises DatakitError otherwise."""
    root = Path(path)
    if not root.exists():
        raise DatakitError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatakitError(f"{root}: not a folder (expected a build-utk output or a CIFAR folder)")
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise DatakitError(f"{manifest_path}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("datakit", {}).get("command") != "build-utk":
            raise DatakitError(f"{manifest_path}: not a datakit build-utk manifest")
        return UTKBuild(root, manifest)
    if (root / ".datakit-build").exists():
        raise DatakitError(f"{root}: incomplete build-utk output (no manifest.json: the build did not finish)")
    if all((root / name).is_dir() for name in ("cifar-10-batches-bin", "cifar-100-binary")):
        raise DatakitError(f"{root}: holds both cifar-10-batches-bin/ and cifar-100-binary/; name one of them")
    if any(root.glob("*.bin")) or any((root / name).is_dir() for name in ("cifar-10-batches-bin", "cifar-100-binary")):
        return CifarFolder(root, label_mode)
    raise DatakitError(f"{root}: neither a build-utk output (no manifest.json) nor a CIFAR folder "
                       f"(no cifar-10-batches-bin/ or cifar-100-binary/)")
