"""Seeded, balanced selection: exactly N pictures per class, split per class.

Candidates are sorted by name before the seeded shuffle, so the sample does not depend on the
order a file system lists the folder in. The first N of each shuffled class are the picks; the
rest stay in reserve, in order, to replace a pick that turns out not to decode. Each split's
write order is shuffled too (classes mixed in every shard).

The plan knows nothing of near-duplicates: the write phase (datakit.builder.layout) moves the
members of a near-duplicate group into one split, or replaces them by spares, once it has decoded
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datakit.builder.classes import Classes
from datakit.builder.scan import Record, Scan
from datakit.errors import DatakitError
from datakit.textfmt import table

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Slot:
    split: str
    label: int
    record: Record


@dataclass
class Plan:
    classes: list[str]
    per_class: int
    available: dict[str, int]  # usable candidates per class (names valid, duplicates removed)
    slots: dict[str, list[Slot]]  # split -> write order
    reserves: dict[int, list[Record]] = field(default_factory=dict)  # label -> spares, in order

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.slots]


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def shortage_table(classes: list[str], available: dict[str, int], per_class: int) -> str:
    rows = [[c, available.get(c, 0), per_class, "SHORT" if available.get(c, 0) < per_class else "ok"]
            for c in classes]
    return table(rows, ["class", "valid", "needed", ""])


def select(scan: Scan, classes: Classes, per_class: int = 700, val_fraction: float = 0.1,
           test_fraction: float = 0.0, seed: int = 0, allow_short: bool = False) -> Plan:
    """The plan of a build: each class's picks split per class, and its spares in order."""
    if val_fraction + test_fraction >= 1.0:
        raise DatakitError(f"val_fraction {val_fraction} + test_fraction {test_fraction} leaves no training data",
                           param=("val_fraction", "test_fraction"))
    names = list(classes.names)
    by_label: dict[int, list[Record]] = {i: [] for i in range(len(names))}
    for rec in scan.records:  # already sorted by name
        label = classes.label(rec.labels)
        if label is not None:
            by_label[label].append(rec)
    available = {names[i]: len(recs) for i, recs in by_label.items()}
    short = [c for c, n in available.items() if n < per_class]
    if short and not allow_short:
        raise DatakitError(
            f"{scan.src}: {len(short)} class(es) have fewer than per_class {per_class} valid images "
            f"({', '.join(short)}); nothing written (use allow_short to take what there is)\n"
            + shortage_table(names, available, per_class), param=("per_class", "allow_short"))
    rng = np.random.default_rng(seed)
    wanted = [s for s in SPLITS if s == "train" or (s == "val" and val_fraction > 0) or (s == "test" and test_fraction > 0)]
    slots: dict[str, list[Slot]] = {s: [] for s in wanted}
    reserves: dict[int, list[Record]] = {}
    for label, recs in by_label.items():
        order = [recs[i] for i in rng.permutation(len(recs))]
        chosen, reserves[label] = order[:per_class], order[per_class:]
        sizes = split_sizes(len(chosen), val_fraction, test_fraction)
        start = 0
        for split in wanted:
            slots[split] += [Slot(split, label, r) for r in chosen[start:start + sizes[split]]]
            start += sizes[split]
    for split in wanted:
        slots[split] = [slots[split][i] for i in rng.permutation(len(slots[split]))]
    return Plan(classes=names, per_class=per_class, available=available, slots=slots, reserves=reserves)

