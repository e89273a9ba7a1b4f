"""The one dataset interface: what every verb (doctor, preview, pipelines, train) asks a dataset.

A `Dataset` is an opened folder (a build output or a fetched data set). It knows its classes,
splits, formats and picture size, reads its records back without TensorFlow (`items`: folders
with Pillow, TFRecord with `datakit.tfrecord`, HDF5 with h5py, CIFAR binaries with numpy, so a
label or channel order that is wrong in one format only shows), hands a tf.data source to the
pipelines (`tf_source`), and carries its own facts and rules: the training crop, the counts to
expect, the label rules and file checks `doctor` applies.

Readers stream `Item`s: the label, the original file name, where the record sits, and either the
encoded bytes (folders, TFRecord; decode with `Item.rgb()`) or the pixels (HDF5, CIFAR). Problems a
reader meets (a missing shard, a corrupt record) go to `on_error(where, reason)` and the reader
carries on where it can; without `on_error` they raise `ReadError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from datakit.errors import DatakitError

OnError = Callable[[str, str], None]


class ReadError(DatakitError):
    """A record or file cannot be read; the message names it and says why."""


@dataclass
class Item:
    label: int
    filename: str
    where: str  # file (and record index) the item came from, relative to the data set root
    data: bytes | None = None  # encoded picture (folders, TFRecord)
    pixels: np.ndarray | None = None  # uint8 (H, W, 3) RGB once decoded (HDF5, CIFAR: always)
    meta: dict = field(default_factory=dict)  # per-format extras: label fields, class text, height/width...
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


def raise_read_error(where: str, reason: str) -> None:
    """The default `on_error`: stop at the first problem."""
    raise ReadError(f"{where}: {reason}")


@dataclass
class FileReport:
    """What `Dataset.check_files` found: doctor's "files" check."""

    errors: list[str]
    warnings: list[str]
    ok: str  # the detail when nothing is wrong


class Dataset:
    """An opened data set. Subclasses set the attributes in `__init__` and implement the readers.

    `key` is the registry name ("utk", "folder", "cifar10", "cifar100"); `default_crop` is the
    pipelines' training crop (pixels when an int, a fraction of the side when a float).
    """

    key: str
    root: Path
    classes: list[str]
    splits: list[str]
    formats: list[str]
    size: int
    manifest: dict | None = None
    default_crop: int | float
    train_splits: tuple[str, ...] = ("train",)
    # How doctor's "balance" check judges the counts: "as the manifest says" or "balanced".
    balance_basis: str = "balanced"

    # -- reading ------------------------------------------------------------------------------
    def expected_counts(self, split: str) -> dict[str, int] | None:
        """{class: pictures} the split should hold (a build's manifest), or None when nothing says."""
        return None

    def count(self, split: str) -> int:
        """Number of pictures in `split` (without reading them)."""
        raise NotImplementedError

    def files(self, split: str, fmt: str | None = None) -> list[Path]:
        """The files holding `split` in `fmt`, as the manifest or the spec lists them; DatakitError
        naming the first missing one."""
        raise NotImplementedError

    def items(self, split: str, fmt: str | None = None, pixels: bool = True,
              on_error: OnError | None = None) -> Iterator[Item]:
        """Every record of `split` in `fmt` (default: the first format), in stored order."""
        raise NotImplementedError

    def tf_source(self, split: str, fmt: str | None = None, size: int | None = None):
        """A tf.data source of `split` for `datakit.pipelines` (implemented there, per dataset family)."""
        raise NotImplementedError

    # -- doctor's rules -------------------------------------------------------------------------
    label_rules: str = ""  # what `label_problems` checks besides the range, for doctor's ok line

    def label_problems(self, item: Item) -> list[str]:
        """What is wrong with an item's label besides its range (which the caller checked)."""
        return []

    def hashed_files(self) -> list[str]:
        """Files (relative to root) whose sha256 `check_files` compares; doctor hashes them while it scans."""
        return []

    def check_files(self, hashes: dict[str, str | None]) -> FileReport:
        """The files on disk against what the dataset says they are; `hashes` maps a relative path
        to its sha256 (None: unreadable) for `hashed_files()` and every picture read as a whole file."""
        raise NotImplementedError

    def count_problems(self) -> list[str]:
        """Errors in the counts the dataset promises (e.g. a build's classes short of --per-class)."""
        return []

    # -- helpers --------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The registry key (the name `--json` results have always used)."""
        return self.key

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise DatakitError(f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return split

    def check_format(self, fmt: str | None) -> str:
        fmt = fmt or self.formats[0]
        if fmt not in self.formats:
            raise DatakitError(f"{self.root}: format {fmt!r} not available (has {', '.join(self.formats)})")
        return fmt

    def expected_total(self) -> int | None:
        """Records a pass over every format of every split reads (None when it cannot be told)."""
        try:
            return sum(self.count(s) for s in self.splits) * len(self.formats) or None
        except (DatakitError, OSError):
            return None

    def describe(self) -> str:
        return f"{self.key} {self.root}"
