"""Near-identical pictures found before the split: a re-encoded copy under another name must not land
in train and val at once (doctor's near-duplicates check), and copies whose labels disagree on the
class are as doubtful as byte-identical ones.

The pictures a build takes are summarised (32x32) from their bytes, decoded in grayscale at a
reduced scale where the JPEG allows (libjpeg's DCT scaling: 1/8 of a 200 px side is the DC
coefficients alone, a fraction of a full decode). The match rule is doctor's (datakit.neardup) on
that summary, with a margin of THUMB_MARGIN on the thumbnails for the reduced gray decode
(measured on the real UTKFace: its hash is within 0.6 bits of doctor's on average, 4 bits at the
99th percentile), so that what doctor would flag in the build is grouped here first.
"""

from __future__ import annotations

import cv2
import numpy as np

from datakit.builder.images import jpeg_size
from datakit.neardup import NEAR_BITS, NEAR_THUMB, near_pairs_within, standardized, summaries

MODES = ("group", "drop", "keep")
BITS_MARGIN, THUMB_MARGIN = 0, 0.02
MAX_BITS, MAX_THUMB = NEAR_BITS + BITS_MARGIN, NEAR_THUMB + THUMB_MARGIN
_FLAGS = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
          2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 1: cv2.IMREAD_GRAYSCALE}


def small_of(data: bytes) -> np.ndarray | None:
    """The 32x32 summary picture of encoded bytes (gray, as RGB), or None when they do not decode
    or claim too many pixels (a decompression bomb is refused before OpenCV allocates it)."""
    from datakit.builder.images import MAX_PIXELS, claims_too_many

    side = jpeg_size(data)  # a JPEG's header once: for the limit and for the decode scale
    if side[0] * side[1] > MAX_PIXELS if side is not None else claims_too_many(data):
        return None
    arr = np.frombuffer(data, np.uint8)
    scale = 1
    if side is not None:
        while scale < 8 and min(side) // (scale * 2) >= 25:
            scale *= 2
    try:
        im = cv2.imdecode(arr, _FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        im = None
    if im is None:
        from datakit.builder.images import BadImage, decode

        try:  # anything OpenCV does not read (CMYK JPEG, odd PNG...): the builder's own decoder
            rgb, _ = decode(data, None)
        except BadImage:
            return None
        im = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if min(im.shape[:2]) < 1:
        return None
    small = cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA if min(im.shape[:2]) >= 32 else cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)


def summarize(datas: list[bytes]) -> list[tuple[int, bytes] | None]:
    """(phash, thumbnail bytes) per picture, None for one that does not decode (worker side)."""
    smalls = [small_of(d) for d in datas]
    ok = [s for s in smalls if s is not None]
    hashes, thumbs = summaries(np.stack(ok)) if ok else (np.zeros(0, np.uint64), np.zeros((0, 8, 8, 3), np.uint8))
    out, j = [], 0
    for s in smalls:
        if s is None:
            out.append(None)
        else:
            out.append((int(hashes[j]), thumbs[j].tobytes()))
            j += 1
    return out


def summarize_files(src: str, names: list[str]) -> list[tuple[int, bytes] | None]:
    """`summarize` of files under `src` (worker side); a file that cannot be read gets None (it is
    then reported when the build decodes it)."""
    import os

    from datakit.builder.scan import read_regular

    datas = []
    for name in names:
        try:
            datas.append(read_regular(os.path.join(src, name)))
        except OSError:
            datas.append(b"")
    return summarize(datas)


def find_groups(summ: list[tuple[int, bytes]]) -> list[list[int]]:
    """Indices of near-identical pictures, as groups of two or more (connected pairs), sorted."""
    if len(summ) < 2:
        return []
    hashes = np.array([h for h, _ in summ], dtype=np.uint64)
    thumbs = standardized([np.frombuffer(t, np.uint8) for _, t in summ])
    parent = list(range(len(summ)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = near_pairs_within(hashes, MAX_BITS)
    if len(pairs):
        close = np.abs(thumbs[pairs[:, 0]] - thumbs[pairs[:, 1]]).mean(axis=1) <= MAX_THUMB
        for i, j in pairs[close].tolist():
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(summ)):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


class Regroup:
    """The near-duplicate pass of `select` over the pictures a build takes.

    Called with every class's picks and spares once they are drawn. The picks are summarised (on
    the build's workers, `summarize(records) -> {name: summary}`) and grouped across all classes.
    A group whose members disagree on the class is dropped whole (like byte-identical conflicts);
    with mode "drop" every other group keeps its first member (by name). Dropped picks are replaced
    by the class's next spares, which are summarised and checked in turn, until no group changes.
    Returns {name: group id} for the split (mode "group"); `entry` and `skipped` are for the
    manifest. Only the pictures the build takes (and the spares that replace them) are compared:
    a near-identical copy of a pick that the build does not take cannot leak across its splits."""

    def __init__(self, mode: str, classes, summarize):
        self.mode, self.classes, self.summarize = mode, classes, summarize
        self.entry = {"mode": mode, "max_bits": MAX_BITS, "max_thumb": MAX_THUMB, "compared": 0,
                      "groups": [], "conflicting": []}
        self.skipped: list[dict] = []

    def __call__(self, picks: dict, reserves: dict) -> dict[str, int]:
        summ: dict = {}
        removed: set[str] = set()
        conflicts: dict[tuple, dict] = {}
        dropped_groups: list = []  # mode "drop": every group met, in the round it was met
        while True:
            todo = [r for chosen in picks.values() for r in chosen if r.name not in summ]
            summ.update({r.name: None for r in todo})
            summ.update(self.summarize(todo))
            current = [(label, r) for label, chosen in picks.items() for r in chosen if summ.get(r.name)]
            groups = find_groups([summ[r.name] for _, r in current])
            drop: set[str] = set()
            kept_groups = []
            for idx in groups:
                members = sorted((current[i] for i in idx), key=lambda lr: lr[1].name)
                names = [r.name for _, r in members]
                if len({label for label, _ in members}) > 1:
                    conflicts[tuple(names)] = {
                        "files": names, "labels": [{f: r.labels[f] for f in self.classes.by} for _, r in members],
                        "reason": "near-identical pictures whose labels disagree on the class: no copy used"}
                    drop.update(names)
                elif self.mode == "drop":
                    drop.update(names[1:])
                    kept_groups.append((members[0][0], names))
                else:
                    kept_groups.append((members[0][0], names))
            if self.mode == "drop":
                dropped_groups += kept_groups
            if not drop:
                break
            removed |= drop
            for label, chosen in picks.items():
                keep = [r for r in chosen if r.name not in drop]
                spares = reserves[label]
                while len(keep) < len(chosen) and spares:
                    spare = spares.pop(0)
                    if spare.name not in removed:
                        keep.append(spare)
                chosen[:] = keep
        self.entry["compared"] = len(summ)
        self.entry["conflicting"] = sorted(conflicts.values(), key=lambda c: c["files"])
        conflicted = {n for c in conflicts.values() for n in c["files"]}
        self.skipped = [{"file": n, "reason": "near-duplicate with conflicting labels"} for n in sorted(conflicted)]
        ids: dict[str, int] = {}
        final = dropped_groups if self.mode == "drop" else kept_groups
        for gid, (label, names) in enumerate(sorted(final, key=lambda g: g[1])):
            self.entry["groups"].append({"files": names, "class": self.classes.names[label]})
            if self.mode == "group":
                ids.update({n: gid for n in names})
        if self.mode == "drop":
            self.entry["dropped"] = sorted(n for _, names in final for n in names[1:])
        return ids
