"""Seeded, balanced selection: exactly N pictures per class, split per class.

Candidates are sorted by name before the seeded shuffle, so the sample does not depend on the
order a file system lists the folder in. The first N of each shuffled class are the picks; the
rest stay in reserve, in order, to replace a pick that turns out not to decode. Each split's
write order is shuffled too (classes mixed in every shard).

Near-duplicate groups (datakit.builder.neargroups) stay inside one split: a group is split as one
unit. The random draws happen in the same order with or without them (every class's shuffle, then
every split's), so `near_duplicates="keep"` gives the plan of a build without the feature.
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
    spares_split: dict[str, str] = field(default_factory=dict)  # spare name -> the split it must go to

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
           test_fraction: float = 0.0, seed: int = 0, allow_short: bool = False,
           regroup=None) -> Plan:
    """The plan of a build. `regroup(picks, reserves)` (datakit.builder.neargroups), called with
    each class's picks and spares once they are drawn, may replace picks by spares (in order) and
    returns {record name: near-duplicate group id}: the members of a group go to one split."""
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
    spares_split: dict[str, str] = {}
    picks: dict[int, list[Record]] = {}
    for label, recs in by_label.items():
        order = [recs[i] for i in rng.permutation(len(recs))]
        take = min(per_class, len(order))
        picks[label], reserves[label] = order[:take], order[take:]
    groups = regroup(picks, reserves) if regroup else {}
    after = {names[label]: len(chosen) for label, chosen in picks.items()}
    short = [c for c, n in after.items() if n < min(per_class, available[c])]
    if short and not allow_short:
        raise DatakitError(
            f"{scan.src}: {len(short)} class(es) have fewer than per_class {per_class} images once near-identical "
            f"copies are set aside ({', '.join(short)}); nothing written (use allow_short to take what there is, "
            "or near_duplicates='keep')\n" + shortage_table(names, after, per_class),
            param=("per_class", "allow_short", "near_duplicates"))
    for label, chosen in picks.items():
        sizes = split_sizes(len(chosen), val_fraction, test_fraction)
        if groups:
            assigned = _grouped(chosen, sizes, wanted, groups)
            for rec in reserves[label]:  # a spare of a picked group must replace into that group's split
                g = groups.get(rec.name)
                if g is not None and g in assigned[1]:
                    spares_split[rec.name] = assigned[1][g]
            for split in wanted:
                slots[split] += [Slot(split, label, r) for r in assigned[0][split]]
            continue
        start = 0
        for split in wanted:
            slots[split] += [Slot(split, label, r) for r in chosen[start:start + sizes[split]]]
            start += sizes[split]
    for split in wanted:
        slots[split] = [slots[split][i] for i in rng.permutation(len(slots[split]))]
    return Plan(classes=names, per_class=per_class, available=available, slots=slots, reserves=reserves,
                spares_split=spares_split)


def _grouped(picks: list[Record], sizes: dict[str, int], wanted: list[str], groups: dict[str, int]):
    """Split `picks` (in shuffled order) so that the members of a near-duplicate group share a split.

    Units (a group's picked members, or a single picture) are dealt in the order of their first
    member: test, then val, are filled from the end of the order with the units that fit, train takes
    the rest; without groups of two or more this is exactly the ungrouped split (train, val, test in
    order), and a split's count never exceeds its share."""
    units: dict = {}
    for rec in picks:
        g = groups.get(rec.name)
        units.setdefault(("g", g) if g is not None else ("r", rec.name), []).append(rec)
    order = list(units.values())
    out = {s: [] for s in wanted}
    need = {s: sizes[s] for s in wanted if s != "train"}
    rest = []
    for unit in reversed(order):  # the ungrouped split takes val/test from the end of the order
        for split in reversed([s for s in wanted if s != "train"]):
            if len(unit) <= need[split]:
                out[split] = unit + out[split]
                need[split] -= len(unit)
                break
        else:
            rest.append(unit)
    out["train"] = [r for unit in reversed(rest) for r in unit]
    group_split = {}
    for split, recs in out.items():
        for rec in recs:
            g = groups.get(rec.name)
            if g is not None:
                group_split[g] = split
    return out, group_split
