"""Near-identical pictures found before the split: a re-encoded copy under another name must not land
in train and val at once (doctor's near-duplicates check), and copies whose labels disagree on the
class are as doubtful as byte-identical ones.

Each candidate's 32x32 summary comes from its bytes, read once by the scan, decoded in grayscale at
a reduced scale where the JPEG allows (libjpeg's DCT scaling: 1/8 of a 200 px side is the DC
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
    """The 32x32 summary picture of encoded bytes (gray, as RGB), or None when they do not decode."""
    arr = np.frombuffer(data, np.uint8)
    side = jpeg_size(data)
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


def apply(mode: str, records: list, near: dict, classes) -> tuple[list, dict[str, int], dict, list[dict]]:
    """Group the candidates: (records kept, name -> group id for the split, manifest entry, skipped).

    Only candidates that are a class are compared. Groups whose members disagree on the class are
    dropped whole (like byte-identical conflicts); "drop" keeps the first member (by name) of every
    other group; "group" keeps them all and hands their group ids to the split."""
    entry = {"mode": mode, "max_bits": MAX_BITS, "max_thumb": MAX_THUMB, "groups": [], "conflicting": []}
    if mode == "keep":
        return records, {}, {"mode": "keep"}, []
    cands = [r for r in records if r.name in near and classes.label(r.labels) is not None]
    groups = find_groups([near[r.name] for r in cands])
    drop: set[str] = set()
    skipped: list[dict] = []
    ids: dict[str, int] = {}
    for gid, idx in enumerate(groups):
        members = sorted((cands[i] for i in idx), key=lambda r: r.name)
        names = [r.name for r in members]
        keys = {classes.key(r.labels) for r in members}
        if len(keys) > 1:
            entry["conflicting"].append({"files": names, "labels": [{f: r.labels[f] for f in classes.by}
                                                                    for r in members],
                                         "reason": "near-identical pictures whose labels disagree on the class: "
                                                   "no copy used"})
            drop.update(names)
            skipped += [{"file": n, "reason": "near-duplicate with conflicting labels"} for n in names]
            continue
        entry["groups"].append({"files": names, "class": classes.names[classes.label(members[0].labels)]})
        if mode == "drop":
            drop.update(names[1:])
        else:
            ids.update({n: gid for n in names})
    if mode == "drop":
        entry["dropped"] = sum(len(g["files"]) - 1 for g in entry["groups"])
    kept = [r for r in records if r.name not in drop]
    return kept, ids, entry, skipped
