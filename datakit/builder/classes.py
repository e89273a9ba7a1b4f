"""Classes of a build: which label fields make the class, the classes in label order, their names,
and a filter on field values.

A class is a tuple of field values (`by`); its label is its position in `keys`. UTKFace's preset is
by=("race", "gender") with keys (r, g) for r in the requested races for g in (0, 1), so label =
race_index * 2 + gender. A picture whose fields are not a class, or fail `where`, is not a candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from datakit.errors import DatakitError

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class Field:
    """A label field of every picture: stored in each TFRecord Example and HDF5 file under `name`."""

    name: str
    kind: str = "int"  # "int" (int64) or "str" (utf-8 bytes)

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind}


@dataclass(frozen=True)
class Allowed:
    """Allowed values of one field: an inclusive integer range and/or a set of values."""

    lo: int | None = None
    hi: int | None = None
    values: frozenset = frozenset()

    def __contains__(self, value) -> bool:
        if self.values:
            return value in self.values or str(value) in self.values
        if not isinstance(value, int):
            return False
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def enumerate(self) -> list | None:
        """Every allowed value, when the set is finite."""
        if self.values:
            return sorted(self.values, key=_order)
        if self.lo is not None and self.hi is not None and self.hi - self.lo < 10000:
            return list(range(self.lo, self.hi + 1))
        return None

    def describe(self) -> str:
        if self.values:
            return ",".join(str(v) for v in sorted(self.values, key=_order))
        return f"{'' if self.lo is None else self.lo}..{'' if self.hi is None else self.hi}"


def parse_allowed(text: str, what: str, param: str | None = None) -> Allowed:
    """`0..3`, `..10`, `5..`, `0,2,3`, `Male,Female` -> Allowed."""
    text = text.strip()
    m = re.fullmatch(r"(-?\d*)\s*\.\.\s*(-?\d*)", text)
    if m:
        lo = int(m.group(1)) if m.group(1) else None
        hi = int(m.group(2)) if m.group(2) else None
        if lo is not None and hi is not None and lo > hi:
            raise DatakitError(f"{what}: empty range {text!r}", param=param)
        return Allowed(lo, hi)
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise DatakitError(f"{what}: no allowed values in {text!r}", param=param)
    return Allowed(values=frozenset(int(v) if re.fullmatch(r"-?[0-9]+", v) else v for v in values))


def _order(value):
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def check_class_name(name: str) -> str | None:
    """Why `name` cannot name a class (a folder in every split), or None."""
    if not name or name != name.strip():
        return "empty or with leading/trailing spaces"
    if name in (".", "..") or name.startswith("."):
        return "starts with a dot"
    if _BAD_NAME.search(name):
        return "holds a slash or a control character"
    if any("\udc80" <= c <= "\udcff" for c in name):
        return "not valid UTF-8"
    if len(name.encode("utf-8")) > 200:
        return "longer than 200 bytes"
    return None


@dataclass(frozen=True)
class Classes:
    by: tuple[str, ...]
    keys: tuple[tuple, ...]
    names: tuple[str, ...]
    where: tuple[tuple[str, Allowed], ...] = ()
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if len(self.names) != len(self.keys):
            raise DatakitError(f"class_names: {len(self.names)} names for {len(self.keys)} classes "
                               f"({', '.join(default_name(k) for k in self.keys[:10])}"
                               f"{', ...' if len(self.keys) > 10 else ''})", param="class_names")
        if len(set(self.names)) != len(self.names):
            raise DatakitError(f"class_names: repeated name in {list(self.names)}", param="class_names")
        for name in self.names:
            why = check_class_name(name)
            if why:
                raise DatakitError(f"class_names: {name!r} cannot name a class folder ({why})", param="class_names")
        self._index.update({k: i for i, k in enumerate(self.keys)})

    def key(self, labels: dict) -> tuple:
        return tuple(labels[f] for f in self.by)

    def label(self, labels: dict) -> int | None:
        """The label of a picture's fields, or None when they are not a class or fail `where`."""
        for name, allowed in self.where:
            if labels.get(name) not in allowed:
                return None
        return self._index.get(tuple(labels[f] for f in self.by))

    def as_dict(self) -> dict:
        return {"class_by": list(self.by), "class_keys": [list(k) for k in self.keys],
                "where": {name: allowed.describe() for name, allowed in self.where}}


def default_name(key: tuple) -> str:
    return "_".join(str(v) for v in key)


def resolve(by, names, where, observed, declared: dict | None = None) -> Classes:
    """Classes from the observed class keys (sorted), or from the declared allowed values of every
    `by` field when all are finite (so that a class with no picture still shows, as short)."""
    by = tuple(by)
    where = tuple(where)
    declared = declared or {}
    finite = [declared[f].enumerate() if f in declared else None for f in by]
    if all(v is not None for v in finite):
        import itertools

        keys = list(itertools.product(*finite))
    else:
        keys = sorted(set(observed), key=lambda k: tuple(_order(v) for v in k))
    filters = dict(where)
    keys = [k for k in keys if all(k[i] in filters[f] for i, f in enumerate(by) if f in filters)]
    if not keys:
        raise DatakitError("no class: no picture's labels are a class (check the label source and where=)",
                           param="where")
    names = tuple(names) if names else tuple(default_name(k) for k in keys)
    return Classes(by, tuple(keys), names, where)
