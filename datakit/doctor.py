"""`doctor`: the data checks to run before blaming a model that sits at chance.

One streaming pass reads every record of every split in every built format (`Dataset.items`, no
TensorFlow) and keeps per picture only what the checks compare: a content hash of the decoded
pixels, a 64-bit perceptual hash, an 8x8 thumbnail and the mean colour, plus running per-class
sums. Memory is therefore a few hundred bytes per picture, never the pixels of a split.
Each check ends as one `Check(check, status, detail)` with status ok / warning / error.
The checks are generic; what is dataset-specific (label rules, file checks, the counts to expect,
the training crop) comes from the `datakit.datasets.Dataset` itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datakit.datasets import Dataset, Item, ReadError, open_dataset
from datakit.neardup import NEAR_BITS, NEAR_THUMB, near_pairs, phash, small, standardized, thumb
from datakit.progress import null_progress

OK, WARNING, ERROR = "ok", "warning", "error"
SAME_THUMB = 3.0  # one picture in two formats: 8x8 thumbnails within this (JPEG re-encoding)
CHUNK = 32  # pictures per worker task


@dataclass
class Check:
    check: str
    status: str
    detail: str
    items: list[str] = field(default_factory=list)  # every finding (the detail names the first few)

    def as_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "detail": self.detail}


@dataclass(slots=True)
class Feat:
    """What the checks keep of one picture."""

    digest: bytes  # sha1 (first 16 bytes) of the decoded pixels and their shape
    phash: int  # 64-bit DCT hash of the grayscale picture
    thumb: np.ndarray  # (8, 8, 3) uint8, area-averaged
    mean: np.ndarray  # (3,) per-channel mean
    sq: np.ndarray  # (3,) per-channel mean of squares
    shape: tuple
    encoding: str | None


@dataclass(slots=True)
class Rec:
    label: int
    where: str
    feat: Feat | None


def pixel_digest(px: np.ndarray) -> bytes:
    """Content hash of decoded pixels and their shape (sha1: the fastest full hash here; identity, not security)."""
    h = hashlib.sha1(repr(px.shape).encode())
    h.update(px)
    return h.digest()[:16]


def measure(pixels: np.ndarray, encoding: str | None = None, digest: bytes | None = None) -> Feat:
    """The per-picture summary: exact hash, perceptual hash, thumbnail, colour moments."""
    px = np.ascontiguousarray(pixels)
    s32 = small(px)
    phash_, thumb_ = phash(s32), thumb(s32)
    mean, std = cv2.meanStdDev(px)
    mean, std = mean.ravel(), std.ravel()
    return Feat(digest or pixel_digest(px), phash_, thumb_, mean, std * std + mean * mean, px.shape, encoding)


def _ellipsis(items: list[str], n: int = 3) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def _check(name: str, errors: list[str], warnings: list[str] = (), ok: str = "", what: str = "") -> Check:
    if errors:
        return Check(name, ERROR, f"{len(errors)} {what or 'problems'}: {_ellipsis(errors)}",
                     list(errors) + list(warnings))
    if warnings:
        return Check(name, WARNING, f"{len(warnings)} {what or 'findings'}: {_ellipsis(warnings)}", list(warnings))
    return Check(name, OK, ok)


class Scan:
    """One pass over every (format, split): features per record, running class sums, problems found."""

    def __init__(self, src: Dataset, workers: int | None = None):
        self.src = src
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.recs: dict[tuple[str, str], dict[str, list[Rec]]] = {}
        self.read_errors: list[str] = []
        self.decode_errors: list[str] = []
        self.shape_errors: list[str] = []
        self.label_errors: list[str] = []
        self.counts: dict[tuple[str, str], np.ndarray] = {}
        # per (format, split): sums over pictures of mean, mean^2 (per picture) and mean of squares (pixels)
        self.sums: dict[tuple[str, str], np.ndarray] = {}
        self.folder_hashes: dict[str, str] = {}
        self.pictures = 0
        self._cache: dict[bytes, tuple[Feat | None, str | None]] = {}  # by encoded bytes
        self._pixels: dict[bytes, Feat] = {}  # by decoded pixels

    # -- measuring (worker threads) ------------------------------------------------------------
    def _measure_item(self, item: Item, fmt: str):
        """(Feat, None) or (None, reason). Identical encoded bytes, or identical decoded pixels, are
        measured once: folders and TFRecord hold the same JPEGs, and HDF5 holds the pixels they
        decode to whenever build-utk kept the source JPEG as it was."""
        key = None
        if item.data is not None:
            if fmt == "folders":
                self.folder_hashes[item.where] = hashlib.sha256(item.data).hexdigest()
            key = hashlib.blake2b(item.data, digest_size=16).digest()
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        try:
            pixels = np.ascontiguousarray(item.rgb())
            digest = pixel_digest(pixels)
            encoding = item.meta.get("encoding")
            feat = self._pixels.get(digest)
            if feat is None:
                feat = self._pixels[digest] = measure(pixels, encoding, digest)
            elif feat.encoding != encoding:
                feat = dataclasses.replace(feat, encoding=encoding)
            out = (feat, None)
        except ReadError as exc:
            out = (None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken record must not stop the other checks
            out = (None, f"{item.where}: {type(exc).__name__}: {exc}")
        if key is not None:
            self._cache[key] = out
        item.data = item.pixels = None
        return out

    def _measure_chunk(self, chunk, fmt):
        return [(item, *self._measure_item(item, fmt)) for item in chunk]

    def _chunks(self, items):
        chunk = []
        for item in items:
            chunk.append(item)
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _measured(self, pool, items, fmt):
        pending = []
        for chunk in self._chunks(items):
            pending.append(pool.submit(self._measure_chunk, chunk, fmt))
            if len(pending) >= 3 * self.workers:
                yield from pending.pop(0).result()
        for fut in pending:
            yield from fut.result()

    # -- bookkeeping (main thread) -------------------------------------------------------------
    def run(self, progress=null_progress) -> None:
        src = self.src
        n_classes = len(src.classes)
        bar = progress(desc="doctor", total=src.expected_total(), unit="img")
        with ThreadPoolExecutor(self.workers) as pool:
            for fmt in src.formats:
                for split in src.splits:
                    key = (fmt, split)
                    recs: dict[str, list[Rec]] = defaultdict(list)
                    counts = np.zeros(n_classes, np.int64)
                    sums = np.zeros((n_classes, 3, 3), np.float64)

                    def on_error(where, reason, fmt=fmt):
                        self.read_errors.append(f"{fmt}: {where}: {reason}")

                    items = src.items(split, fmt, pixels=True, on_error=on_error)
                    for item, feat, err in self._measured(pool, items, fmt):
                        bar.update(1)
                        self.pictures += 1
                        label = item.label
                        if not 0 <= label < n_classes:
                            self.label_errors.append(f"{fmt}: {item.where}: label {label} outside 0..{n_classes - 1}")
                            label = -1
                        else:
                            counts[label] += 1
                            self._check_item_labels(fmt, item)
                        if err is not None:
                            self.decode_errors.append(f"{fmt}: {err}")
                        elif feat is not None:
                            self._check_shape(fmt, item, feat)
                            if label >= 0:
                                sums[label, 0] += feat.mean
                                sums[label, 1] += feat.mean * feat.mean
                                sums[label, 2] += feat.sq
                        recs[item.filename].append(Rec(label, item.where, feat))
                    self.recs[key], self.counts[key], self.sums[key] = dict(recs), counts, sums
        bar.close()
        self._cache, self._pixels = {}, {}

    def _check_shape(self, fmt, item, feat: Feat) -> None:
        s = self.src.size
        problems = []
        if feat.shape != (s, s, 3):
            problems.append(f"{feat.shape} not ({s}, {s}, 3)")
        if feat.encoding and fmt in ("folders", "tfrecord") and feat.encoding != "JPEG RGB":
            problems.append(f"stored as {feat.encoding}, not JPEG RGB")
        for dim in ("image/height", "image/width"):
            if dim in item.meta and item.meta[dim] != s:
                problems.append(f"{dim} {item.meta[dim]} not {s}")
        if problems:
            self.shape_errors.append(f"{fmt}: {item.where}: {', '.join(problems)}")

    def _check_item_labels(self, fmt, item) -> None:
        """Labels the record carries besides `label` must agree with it: the dataset's own rules."""
        problems = self.src.label_problems(item)
        if problems:
            self.label_errors.append(f"{fmt}: {item.where}: {', '.join(problems)}")


# -- the checks --------------------------------------------------------------------------------

def _files(src: Dataset, scan: Scan, file_hashes: dict[str, str | None]) -> Check:
    hashes = dict(file_hashes)
    hashes.update(scan.folder_hashes)
    report = src.check_files(hashes)
    return _check("files", report.errors, report.warnings, ok=report.ok, what="file problems")


def _balance(src: Dataset, scan: Scan) -> Check:
    errors, warnings, parts = [], [], []
    for split in src.splits:
        ref = None
        for fmt in src.formats:
            counts = scan.counts.get((fmt, split))
            if counts is None:
                continue
            got = dict(zip(src.classes, counts.tolist()))
            expected = src.expected_counts(split)
            if expected is not None:
                diff = [f"{c} {got.get(c, 0)} (manifest {n})" for c, n in expected.items() if got.get(c, 0) != n]
                if diff:
                    errors.append(f"{fmt} {split}: {', '.join(diff)}")
            ref = ref or got
        if ref is None:
            continue
        lo, hi = min(ref.values()), max(ref.values())
        if lo != hi:
            small = [c for c, n in ref.items() if n == lo]
            warnings.append(f"{split}: classes range {lo}..{hi} pictures (fewest: {', '.join(small[:3])})")
            parts.append(f"{split} {lo}..{hi}")
        else:
            parts.append(f"{split} {len(ref)} x {lo}")
    errors.extend(src.count_problems())
    return _check("balance", errors, warnings, ok=f"{', '.join(parts)} ({src.balance_basis})", what="count problems")


def _formats_agree(src: Dataset, scan: Scan) -> Check:
    if len(src.formats) < 2:
        return Check("formats-agree", OK, f"one format ({src.formats[0]}): nothing to compare")
    errors = []
    ref_fmt = src.formats[0]
    for split in src.splits:
        ref = scan.recs.get((ref_fmt, split), {})
        for fmt in src.formats[1:]:
            other = scan.recs.get((fmt, split), {})
            for name in sorted(set(ref) - set(other)):
                errors.append(f"{split}/{name}: in {ref_fmt}, not in {fmt}")
            for name in sorted(set(other) - set(ref)):
                errors.append(f"{split}/{name}: in {fmt}, not in {ref_fmt}")
            for name in sorted(set(ref) & set(other)):
                a, b = ref[name], other[name]
                if len(a) != len(b):
                    errors.append(f"{split}/{name}: {len(a)} copies in {ref_fmt}, {len(b)} in {fmt}")
                    continue
                for ra, rb in zip(a, b):
                    if ra.label != rb.label:
                        la = src.classes[ra.label] if ra.label >= 0 else ra.label
                        lb = src.classes[rb.label] if rb.label >= 0 else rb.label
                        errors.append(f"{split}/{name}: label {la} in {ref_fmt}, {lb} in {fmt}")
                    elif ra.feat is not None and rb.feat is not None and ra.feat.digest != rb.feat.digest:
                        diff = np.abs(ra.feat.thumb.astype(np.float32) - rb.feat.thumb).mean()
                        if diff > SAME_THUMB or ra.feat.shape != rb.feat.shape:
                            errors.append(f"{split}/{name}: pixels differ between {ref_fmt} and {fmt} "
                                          f"(mean |diff| {diff:.0f}/255 on 8x8 thumbnails)")
    n = sum(len(v) for (f, _), v in scan.recs.items() if f == ref_fmt)
    return _check("formats-agree", errors, ok=f"{', '.join(src.formats)} hold the same {n} pictures with the same "
                                              f"labels", what="disagreements")


def _by_digest(scan: Scan, fmt: str, split: str) -> dict[bytes, list[str]]:
    out = defaultdict(list)
    for name, recs in scan.recs.get((fmt, split), {}).items():
        for r in recs:
            if r.feat is not None:
                out[r.feat.digest].append(name)
    return out


def _duplicates(src: Dataset, scan: Scan) -> tuple[Check, Check]:
    within, across = {}, {}
    for fmt in src.formats:
        groups = {split: _by_digest(scan, fmt, split) for split in src.splits}
        for split, g in groups.items():
            for names in g.values():
                if len(names) > 1:
                    within.setdefault((split, tuple(sorted(names))), []).append(fmt)
        for i, a in enumerate(src.splits):
            for b in src.splits[i + 1:]:
                for digest in groups[a].keys() & groups[b].keys():
                    key = (f"{a}/{groups[a][digest][0]}", f"{b}/{groups[b][digest][0]}")
                    across.setdefault(key, []).append(fmt)
    within_list = [f"{split}: {' = '.join(names)} ({', '.join(fmts)})"
                   for (split, names), fmts in sorted(within.items())]
    across_list = [f"{a} = {b} ({', '.join(fmts)})" for (a, b), fmts in sorted(across.items())]
    return (_check("duplicates", [], within_list, ok="no picture appears twice within a split",
                   what="identical pictures within a split"),
            _check("leakage", across_list, ok=f"no picture in two splits ({', '.join(src.splits)})",
                   what="identical pictures in two splits"))


def _near_duplicates(src: Dataset, scan: Scan) -> Check:
    fmt = src.formats[0]
    flat = {}
    for split in src.splits:
        names, feats = [], []
        for name, recs in scan.recs.get((fmt, split), {}).items():
            for r in recs:
                if r.feat is not None:
                    names.append(name)
                    feats.append(r.feat)
        flat[split] = (names, feats)
    warnings = []
    for i, a in enumerate(src.splits):
        for b in src.splits[i + 1:]:
            (na, fa), (nb, fb) = flat[a], flat[b]
            if not fa or not fb:
                continue
            pairs = near_pairs([f.phash for f in fa], [f.phash for f in fb])
            if not pairs:
                continue
            tb = standardized([f.thumb for f in fb])
            for ia, js in pairs:
                ta = standardized([fa[ia].thumb])[0]
                diff = np.abs(tb[js] - ta).mean(axis=1)
                same = np.array([fb[j].digest == fa[ia].digest for j in js])
                ok = (diff <= NEAR_THUMB) & ~same
                if ok.any():
                    j = js[np.argmin(np.where(ok, diff, np.inf))]
                    bits = bin(fa[ia].phash ^ fb[j].phash).count("1")
                    warnings.append(f"{a}/{na[ia]} ~ {b}/{nb[j]} ({bits} bits apart)")
    return _check("near-duplicates", [], warnings,
                  ok=f"no near-identical pictures across splits (perceptual hash within {NEAR_BITS} bits and "
                     f"standardized 8x8 thumbnails within {NEAR_THUMB})",
                  what="near-identical pictures in two splits")


def colour_table(src: Dataset, scan: Scan) -> dict:
    """{split: {class: {"n", "mean": [r, g, b], "std": [r, g, b], "image_mean_std": [r, g, b]}}} (first format)."""
    fmt = src.formats[0]
    out = {}
    for split in src.splits:
        sums, counts = scan.sums.get((fmt, split)), scan.counts.get((fmt, split))
        if sums is None:
            continue
        rows = {}
        for k, name in enumerate(src.classes):
            n = int(counts[k])
            if n == 0:
                continue
            mean = sums[k, 0] / n
            pix_std = np.sqrt(np.maximum(sums[k, 2] / n - mean * mean, 0))
            img_std = np.sqrt(np.maximum(sums[k, 1] / n - mean * mean, 0))
            rows[name] = {"n": n, "mean": np.round(mean, 1).tolist(), "std": np.round(pix_std, 1).tolist(),
                          "image_mean_std": np.round(img_std, 1).tolist()}
        out[split] = rows
    return out


MIN_CLASS_N = 20  # class colour moments from fewer pictures are too noisy to call a class suspect


def _colour_stats(src: Dataset, scan: Scan, table: dict) -> Check:
    """A class whose colour moments sit far outside those of all other classes (all splits pooled),
    or differ between splits beyond sampling error, is suspect (a channel swap, a mislabelled class)."""
    warnings = []
    fmt = src.formats[0]
    sums = sum(v for (f, _), v in scan.sums.items() if f == fmt)
    counts = sum(v for (f, _), v in scan.counts.items() if f == fmt)
    keep = [k for k in range(len(src.classes)) if counts[k] >= MIN_CLASS_N]
    if len(keep) >= 3:
        n = counts[keep][:, None]
        mean = sums[keep, 0] / n
        std = np.sqrt(np.maximum(sums[keep, 2] / n - mean * mean, 0))
        for stat, values in (("mean", mean), ("std", std)):
            for i, k in enumerate(keep):
                others = np.delete(values, i, axis=0)
                lo, hi = others.min(axis=0), others.max(axis=0)
                margin = np.maximum(10.0, 0.5 * (hi - lo))
                out = (values[i] < lo - margin) | (values[i] > hi + margin)
                if out.any():
                    c = int(np.argmax(out))
                    warnings.append(f"{src.classes[k]}: {stat} {'RGB'[c]} {values[i][c]:.0f} far outside the other "
                                    f"classes ({lo[c]:.0f}..{hi[c]:.0f})")
    first = src.splits[0]
    for split in src.splits[1:]:
        for name, row in table.get(split, {}).items():
            ref = table.get(first, {}).get(name)
            if ref is None or row["n"] < 10 or ref["n"] < 10:
                continue
            sd = np.maximum(np.array(ref["image_mean_std"]), np.array(row["image_mean_std"]))
            se = sd * np.sqrt(1 / ref["n"] + 1 / row["n"])
            gap = np.abs(np.array(row["mean"]) - np.array(ref["mean"]))
            bad = gap > np.maximum(5.0, 5 * se)
            if bad.any():
                c = int(np.argmax(gap - np.maximum(5.0, 5 * se)))
                warnings.append(f"{name}: mean {'RGB'[c]} {ref['mean'][c]:.0f} in {first} but {row['mean'][c]:.0f} "
                                f"in {split} (beyond 5 standard errors)")
    return _check("colour-stats", [], warnings,
                  ok=f"per-class RGB mean/std of {len(src.classes)} classes: none far outside the others; splits agree",
                  what="suspect classes")


def _colour_outliers(src: Dataset, scan: Scan) -> Check:
    """Pictures whose mean colour is far from their own class and typical of another one: a swapped
    label shows here when classes differ in colour (it cannot when they differ only in shape)."""
    fmt = src.formats[0]
    warnings = []
    for split in src.splits:
        labels, means, where = [], [], []
        for recs in scan.recs.get((fmt, split), {}).values():
            for r in recs:
                if r.feat is not None and r.label >= 0:
                    labels.append(r.label)
                    means.append(r.feat.mean)
                    where.append(r.where)
        if not labels:
            continue
        labels, means = np.array(labels), np.array(means)
        centre, spread, present = {}, {}, []
        for k in np.unique(labels):
            m = means[labels == k]
            if len(m) < 5:
                continue
            med = np.median(m, axis=0)
            centre[k] = med
            spread[k] = np.maximum(1.4826 * np.median(np.abs(m - med), axis=0), 4.0)
            present.append(k)
        if len(present) < 2:
            continue
        dist = np.stack([np.sqrt((((means - centre[k]) / spread[k]) ** 2).mean(axis=1)) for k in present], axis=1)
        col = {k: i for i, k in enumerate(present)}
        for i, lab in enumerate(labels):
            if lab not in col:
                continue
            own = dist[i, col[lab]]
            others = dist[i].copy()
            others[col[lab]] = np.inf
            j = int(np.argmin(others))
            if own > 6 and others[j] < 3 and 2 * others[j] < own:
                warnings.append(f"{where[i]}: labelled {src.classes[lab]}, colours of {src.classes[present[j]]}")
    return _check("colour-outliers", [], warnings,
                  ok="no picture has the colours of another class rather than its own",
                  what="pictures that look like another class")


def training_augment(src: Dataset):
    """The training augmentation config the pipelines apply to this dataset (its own training crop)."""
    from datakit.augment import Augment

    return Augment(crop=src.default_crop)


def augment_check(aug) -> Check:
    """Random brightness adds one constant to every pixel; per-image standardization subtracts the
    picture's mean right after (no clipping in between), so the brightness change is undone exactly."""
    chain = aug.describe()
    if aug.brightness and aug.standardize:
        return Check("augment", WARNING,
                     f"training augmentation ({chain}): random brightness is followed by per-image "
                     f"standardization, which subtracts the added constant again: brightness has no effect there")
    return Check("augment", OK, f"training augmentation ({chain})")


def doctor(path, label_mode: str | None = None, workers: int | None = None, progress=null_progress) -> dict:
    """Run every check on a dataset folder (datakit.datasets: any build output, a CIFAR folder);
    returns the checks and the figures."""
    t0 = time.perf_counter()
    src = open_dataset(path, label_mode)
    scan = Scan(src, workers)
    file_hashes: dict[str, str | None] = {}
    hasher = None
    listed = src.hashed_files()
    if listed:
        hasher = threading.Thread(target=_hash_files, args=(src.root, listed, file_hashes), daemon=True)
        hasher.start()
    scan.run(progress)
    if hasher is not None:
        hasher.join()
    checks = [_files(src, scan, file_hashes)]
    checks.append(_check("decode", scan.read_errors + scan.decode_errors,
                         ok=f"all {scan.pictures} records of {', '.join(src.formats)} read and decode",
                         what="unreadable records"))
    checks.append(_check("shapes", scan.shape_errors, ok=f"every picture {src.size} x {src.size} x 3 RGB",
                         what="pictures of the wrong shape"))
    checks.append(_check("labels", scan.label_errors, ok="labels in range" + src.label_rules, what="label problems"))
    checks.append(_balance(src, scan))
    checks.append(_formats_agree(src, scan))
    checks.extend(_duplicates(src, scan))
    checks.append(_near_duplicates(src, scan))
    table = colour_table(src, scan)
    checks.append(_colour_stats(src, scan, table))
    checks.append(_colour_outliers(src, scan))
    checks.append(augment_check(training_augment(src)))
    errors = sum(c.status == ERROR for c in checks)
    warnings = sum(c.status == WARNING for c in checks)
    return {"path": str(src.root), "kind": src.key, "classes": src.classes, "splits": src.splits,
            "formats": src.formats, "pictures_read": scan.pictures, "checks": [c.as_dict() for c in checks],
            "findings": {c.check: c.items for c in checks if c.items},
            "errors": errors, "warnings": warnings, "colour": table,
            "seconds": round(time.perf_counter() - t0, 2)}


def _hash_files(root: Path, rels: list[str], out: dict) -> None:
    from datakit.atomic import sha256_file

    for rel in rels:
        try:
            out[rel] = sha256_file(root / rel)
        except OSError:
            out[rel] = None
