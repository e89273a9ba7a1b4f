"""Near-identical pictures found before the build is final: a re-encoded copy under another name
must not land in train and val at once (doctor's near-duplicates check), and copies whose labels
disagree on the class are as doubtful as byte-identical ones.

Each picture the build takes is summarised from the pixels the write decodes anyway (on the
workers, datakit.builder.emit): a bilinear reduction to 64 px, then doctor's own 32x32 area
average, so the summary costs a fraction of a decode instead of a second decode. The match rule
is doctor's (datakit.neardup) on that summary, with a margin of THUMB_MARGIN on the thumbnails for
the faster reduction (its agreement with doctor's summary is measured in the README), so that what
doctor would flag in the build is grouped here first. `Regroup` decides what the groups change;
datakit.builder.layout moves the pictures.
"""

from __future__ import annotations

import cv2
import numpy as np

from datakit.neardup import (NEAR_BITS, NEAR_THUMB, near_pairs_between, near_pairs_within, small, sorted_unique,
                             standardized, summaries)

MODES = ("group", "drop", "keep")
BITS_MARGIN, THUMB_MARGIN = 0, 0.02
MAX_BITS, MAX_THUMB = NEAR_BITS + BITS_MARGIN, NEAR_THUMB + THUMB_MARGIN
REDUCED = 64  # side of the bilinear step before the area average (2x doctor's 32: no aliasing to speak of)


class Summaries:
    """The summaries of up to `capacity` pictures. Each picture's bilinear step runs as soon as it is
    decoded, while its pixels are still in cache, into one tall array of REDUCED-px pictures; the
    area step to 32 px (2x2 blocks that never cross two pictures), the hash and the thumbnail run
    once for the whole batch, not once a picture."""

    def __init__(self, capacity: int):
        self._mid = np.empty((capacity, REDUCED, REDUCED, 3), np.uint8)
        self._direct: dict[int, np.ndarray] = {}  # pictures no larger than REDUCED: area-averaged as they are
        self._n = 0

    def add(self, pixels: np.ndarray) -> None:
        if min(pixels.shape[:2]) > REDUCED:
            cv2.resize(pixels, (REDUCED, REDUCED), dst=self._mid[self._n], interpolation=cv2.INTER_LINEAR)
        else:
            self._direct[self._n] = small(pixels)
        self._n += 1

    def smalls(self) -> np.ndarray:
        """(N, 32, 32, 3) uint8: the 32x32 summary picture of every picture added, in order."""
        n = self._n
        if not n:
            return np.zeros((0, 32, 32, 3), np.uint8)
        tall = self._mid[:n].reshape(n * REDUCED, REDUCED, 3)
        out = cv2.resize(tall, (32, n * 32), interpolation=cv2.INTER_AREA).reshape(n, 32, 32, 3)
        for i, direct in self._direct.items():
            out[i] = direct
        return out

    def done(self) -> list[tuple[int, bytes]]:
        """(phash, thumbnail bytes) of every picture added, in order."""
        if not self._n:
            return []
        hashes, thumbs = summaries(self.smalls())
        return list(zip(hashes.tolist(), (t.tobytes() for t in thumbs)))


def summarize(pixels: list[np.ndarray]) -> list[tuple[int, bytes]]:
    """(phash, thumbnail bytes) of each decoded picture."""
    batch = Summaries(len(pixels))
    for p in pixels:
        batch.add(p)
    return batch.done()


def close_pairs(summ: list[tuple[int, bytes]], seen: int = 0) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of near-identical pictures among `summ`, leaving out the pairs among its
    first `seen` (known from an earlier round)."""
    if len(summ) - seen < 1 or len(summ) < 2:
        return []
    hashes = np.array([h for h, _ in summ], dtype=np.uint64)
    pairs = near_pairs_within(hashes[seen:], MAX_BITS) + seen
    if seen:
        across = near_pairs_between(hashes[seen:], hashes[:seen], MAX_BITS)  # the table on the larger side
        pairs = np.concatenate([across[:, ::-1] + np.array([0, seen]), pairs])
    if not len(pairs):
        return []
    rows = sorted_unique(pairs)
    thumbs = standardized([np.frombuffer(summ[i][1], np.uint8) for i in rows.tolist()])
    a, b = np.searchsorted(rows, pairs[:, 0]), np.searchsorted(rows, pairs[:, 1])
    close = np.abs(thumbs[a] - thumbs[b]).mean(axis=1) <= MAX_THUMB
    return [tuple(p) for p in pairs[close].tolist()]


def groups_of(pairs) -> list[list]:
    """Connected pairs (of any sortable keys), as groups of two or more (each sorted), in order of
    their first member."""
    parent: dict = {}

    def root(i):
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict = {}
    for i in sorted(parent):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


class Regroup:
    """What near-duplicate groups change in a build, round by round, and their manifest entry.

    `round(new, at)` compares the pictures placed since the last round, `new` as (name, summary),
    with every picture compared before (the pairs among those are known); `at(name)` says where a
    picture is now: (label, record, split, sort key of its place), or None once it left. It groups
    the near-identical pictures placed now, across all classes. A group whose members disagree on
    the class is removed whole (like byte-identical conflicts); with mode "drop" every other group
    keeps its first member (by name) and the others are removed; with mode "group" a group held by
    more than one split is to be gathered into one. It returns (names to remove, groups to gather:
    lists of names, in the order of their first place); the caller gives a removed picture's place
    to the class's next spare and asks again with the spares, until nothing changes. Only the
    pictures the build takes (and the spares that replace them) are compared: a near-identical
    copy of a pick that the build does not take cannot leak across its splits."""

    def __init__(self, mode: str, classes):
        self.mode, self.classes = mode, classes
        self.entry = {"mode": mode, "max_bits": MAX_BITS, "max_thumb": MAX_THUMB, "compared": 0,
                      "groups": [], "conflicting": []}
        self.skipped: list[dict] = []
        self._conflicts: dict[tuple, dict] = {}
        self._met: dict[tuple, int] = {}  # mode "drop": every group met, in any round
        self._last: list[tuple[int, list[str]]] = []  # mode "group": the groups of the last round
        self.grouped: set[str] = set()  # the names in a group of the last round
        self._names: list[str] = []  # every picture compared so far
        self._summ: list[tuple] = []  # and its summary
        self._seen: set[str] = set()  # the same names, to look up
        self._close: set[tuple[str, str]] = set()  # and the near-identical pairs among them

    def compare(self, new: list[tuple[str, tuple]]) -> None:
        """Find the near-identical pairs that involve `new` (name, summary) and no picture compared
        before: the search part of `round`, which a build runs early on what it has placed so far."""
        seen = len(self._names)
        for name, summary in new:
            if name not in self._seen:
                self._seen.add(name)
                self._names.append(name)
                self._summ.append(summary)
        self.entry["compared"] = len(self._names)
        pairs = close_pairs(self._summ, seen)
        self._close.update((self._names[i], self._names[j]) for i, j in pairs)

    def round(self, new: list[tuple[str, tuple]], at) -> tuple[list[str], list[list[str]]]:
        remove: list[str] = []
        gather: list[list[str]] = []
        self._last = []
        self.grouped = set()
        self.compare(new)
        where = {n: at(n) for pair in self._close for n in pair}
        current = [pair for pair in self._close if where[pair[0]] and where[pair[1]]]
        for files in sorted(groups_of(current), key=lambda g: min(where[n][3] for n in g)):
            members = [where[n] for n in files]  # groups_of sorts each group: by name
            self.grouped.update(files)
            labels = {m[0] for m in members}
            if len(labels) > 1:
                self._conflicts[tuple(files)] = {
                    "files": files, "labels": [{f: m[1].labels[f] for f in self.classes.by} for m in members],
                    "reason": "near-identical pictures whose labels disagree on the class: no copy used"}
                remove += files
            elif self.mode == "drop":
                self._met[tuple(files)] = members[0][0]
                remove += files[1:]
            else:
                self._last.append((members[0][0], files))
                if len({m[2] for m in members}) > 1:
                    gather.append(files)
        return remove, gather

    def finish(self, split_of) -> None:
        """Fill the manifest entry; `split_of(name)` is the split of a placed picture."""
        self.entry["conflicting"] = sorted(self._conflicts.values(), key=lambda c: c["files"])
        conflicted = {n for c in self._conflicts.values() for n in c["files"]}
        self.skipped = [{"file": n, "reason": "near-duplicate with conflicting labels"} for n in sorted(conflicted)]
        final = sorted(self._met.items(), key=lambda g: g[0]) if self.mode == "drop" else \
            sorted(((tuple(names), label) for label, names in self._last), key=lambda g: g[0])
        for names, label in final:
            group = {"files": list(names), "class": self.classes.names[label]}
            if self.mode == "group":
                group["split"] = split_of(names[0])
            self.entry["groups"].append(group)
        if self.mode == "drop":
            self.entry["dropped"] = sorted(n for names, _ in final for n in names[1:])
