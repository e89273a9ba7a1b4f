"""Every CIFAR fact in one place: archives, folders, record layout, label modes, published counts.

Record format (https://www.cs.toronto.edu/~kriz/cifar.html):
- CIFAR-10  (`cifar-10-batches-bin/`, data_batch_1..5.bin, test_batch.bin): 3073 bytes =
  label byte (0-9) + 3072 pixel bytes;
- CIFAR-100 (`cifar-100-binary/`, train.bin, test.bin): 3074 bytes =
  coarse label byte (0-19) + fine label byte (0-99) + 3072 pixel bytes.
The pixels are three 32x32 row-major planes, R then G then B.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datakit.errors import DatakitError

PIXEL_BYTES = 3072
SIDE = 32
TRAIN_CROP = 24  # the pipelines' training crop of a 32 px CIFAR picture

# The official fine -> coarse mapping of CIFAR-100 (fine label i belongs to coarse FINE_TO_COARSE[i]).
FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)
FINE_TO_COARSE.setflags(write=False)


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    url: str
    md5: str                      # published on the CIFAR page
    size: int                     # bytes of the official archive (pinned with the MD5, as TFDS's checksum files do)
    archive: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    label_bytes: int
    label_offsets: dict[str, int]  # label mode -> byte offset in a record
    classes: dict[str, int]        # label mode -> number of classes
    names: dict[str, str]          # label mode -> file of class names
    default_mode: str
    official_records: dict[str, int]  # published records per file (a subset or a stand-in differs)
    aliases: dict[str, str] = field(default_factory=dict)  # other accepted label_mode names
    fine_to_coarse: tuple[int, ...] | None = None  # CIFAR-100: the coarse class of each fine label

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXEL_BYTES

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f for files in self.splits.values() for f in files) + tuple(self.names.values())

    @property
    def split_records(self) -> dict[str, int]:
        """Published records per split, e.g. {"train": 50000, "test": 10000}."""
        return {split: sum(self.official_records[f] for f in files) for split, files in self.splits.items()}


CIFAR10 = Spec(
    key="cifar10", title="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530",
    size=170_052_171, archive="cifar-10-binary.tar.gz", folder="cifar-10-batches-bin",
    splits={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    label_bytes=1, label_offsets={"label": 0}, classes={"label": 10},
    names={"label": "batches.meta.txt"}, default_mode="label", aliases={"fine": "label"},
    official_records={**{f"data_batch_{i}.bin": 10000 for i in range(1, 6)}, "test_batch.bin": 10000},
)
CIFAR100 = Spec(
    key="cifar100", title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", md5="03b5dce01913d631647c71ecec9e9cb8",
    size=168_513_733, archive="cifar-100-binary.tar.gz", folder="cifar-100-binary",
    splits={"train": ("train.bin",), "test": ("test.bin",)},
    label_bytes=2, label_offsets={"coarse": 0, "fine": 1}, classes={"coarse": 20, "fine": 100},
    names={"coarse": "coarse_label_names.txt", "fine": "fine_label_names.txt"}, default_mode="fine",
    official_records={"train.bin": 50000, "test.bin": 10000},
    fine_to_coarse=tuple(int(c) for c in FINE_TO_COARSE),
)
SPECS = {s.key: s for s in (CIFAR10, CIFAR100)}


def spec(dataset: str) -> Spec:
    try:
        return SPECS[dataset]
    except KeyError:
        raise DatakitError(f"unknown data set {dataset!r}: expected one of {', '.join(SPECS)}") from None


def _mode(s: Spec, label_mode: str | None) -> str:
    """The label mode `label_mode` names for `s` (None: the default; aliases resolved)."""
    mode = label_mode or s.default_mode
    mode = s.aliases.get(mode, mode)
    if mode not in s.label_offsets:
        raise DatakitError(f"label_mode {label_mode!r} does not apply to {s.title}: expected one of "
                           f"{', '.join(s.label_offsets)}")
    return mode


def record_format(s: Spec) -> dict:
    """Byte layout of one record: {"dataset", "record_bytes", "label_bytes", "label_offsets", "image_offset"}."""
    return {"dataset": s.key, "record_bytes": s.record_bytes, "label_bytes": s.label_bytes,
            "label_offsets": dict(s.label_offsets), "image_offset": s.label_bytes, "image_shape": (SIDE, SIDE, 3)}
