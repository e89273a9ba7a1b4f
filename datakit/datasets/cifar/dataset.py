"""`CifarDataset`: a fetched CIFAR-10/100 binary folder as a `datakit.datasets.Dataset`.

Files are memory-mapped and read in blocks, so a 50000-picture split never sits in memory.
A record's file name is `<file>#<index>`. CIFAR-100 reads fine labels by default, coarse on
request; `Item.meta` carries both. Its facts all come from the `Spec`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datakit.datasets.base import Dataset, FileReport, Item, raise_read_error
from datakit.datasets.cifar.binary import decode, record_count
from datakit.datasets.cifar.layout import class_names, locate, split_files
from datakit.datasets.cifar.spec import SIDE, SPECS, TRAIN_CROP, _mode
from datakit.datasets.registry import register
from datakit.errors import DatakitError

FORMAT = "binary"


class CifarDataset(Dataset):
    formats = [FORMAT]
    size = SIDE
    default_crop = TRAIN_CROP
    balance_basis = "balanced"
    BLOCK = 1024  # records decoded per numpy call

    def __init__(self, dest: Path, label_mode: str | None = None):
        self.spec, self.root = locate(dest)
        self.key = self.spec.key
        self.label_mode = _mode(self.spec, label_mode)
        self.classes = class_names(self.root, self.label_mode, self.key)
        self.splits = list(self.spec.splits)

    @staticmethod
    def claims(root: Path) -> bool:
        """Whether `root` looks like a CIFAR fetch destination or batches folder (no manifest)."""
        folders = [s.folder for s in SPECS.values()]
        if all((root / name).is_dir() for name in folders):
            raise DatakitError(f"{root}: holds both {'/ and '.join(folders)}/; name one of them")
        return any(root.glob("*.bin")) or any((root / name).is_dir() for name in folders)

    # -- reading --------------------------------------------------------------------------------
    def files(self, split: str, fmt: str | None = None) -> list[Path]:
        self.check_split(split)
        self.check_format(fmt)
        return split_files(self.spec, self.root, split)

    def count(self, split: str) -> int:
        return sum(record_count(path, self.spec) for path in self.files(split))

    def items(self, split, fmt=None, pixels=True, on_error=None):
        split = self.check_split(split)
        self.check_format(fmt)
        return self._records(split, on_error or raise_read_error)

    def tf_source(self, split, fmt=None, size=None):
        from datakit.datasets.cifar import tfdata

        return tfdata.source(self, split)

    def _records(self, split, on_error):
        s = self.spec
        col = s.label_offsets[self.label_mode]
        for name in s.splits[split]:
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
                pics, labels = decode(block, s, col)
                for j in range(len(block)):
                    i = start + j
                    meta = ({mode: int(block[j, off]) for mode, off in s.label_offsets.items()}
                            if s.label_bytes > 1 else {})
                    yield Item(int(labels[j]), f"{name}#{i}", f"{name}#{i}", pixels=pics[j], meta=meta)
            del records

    # -- doctor's rules -------------------------------------------------------------------------
    @property
    def label_rules(self) -> str:
        return ", fine labels inside their coarse classes" if self.spec.fine_to_coarse else ""

    def label_problems(self, item: Item) -> list[str]:
        """CIFAR-100: a record's fine label belongs to its coarse class (the published mapping)."""
        table = self.spec.fine_to_coarse
        if not table:
            return []
        fine, coarse = item.meta["fine"], item.meta["coarse"]
        n_coarse = self.spec.classes["coarse"]
        if fine >= len(table) or coarse >= n_coarse:
            return [f"fine {fine} / coarse {coarse} outside 0..{len(table) - 1} / 0..{n_coarse - 1}"]
        if table[fine] != coarse:
            return [f"fine label {fine} belongs to coarse class {table[fine]}, record says {coarse}"]
        return []

    def check_files(self, hashes: dict[str, str | None]) -> FileReport:
        """Whole records in every file, and the published record count per file (else a warning)."""
        errors, warnings, found = [], [], []
        s = self.spec
        for files in s.splits.values():
            for name in files:
                path = self.root / name
                if not path.is_file():
                    errors.append(f"{name}: missing")
                    continue
                n, rest = divmod(path.stat().st_size, s.record_bytes)
                if rest:
                    errors.append(f"{name}: {path.stat().st_size} bytes, not a whole number of "
                                  f"{s.record_bytes}-byte records")
                official = s.official_records[name]
                if n != official:
                    warnings.append(f"{name}: {n} records, the official file has {official} "
                                    f"(a subset or a synthetic set?)")
                found.append(f"{name} {n}")
        return FileReport(errors, warnings, f"{s.title} record counts as published: {', '.join(found)}")


register("cifar10", CifarDataset)
register("cifar100", CifarDataset)
