"""Scan a UTKFace folder: parse every name, read and hash every candidate, drop duplicates.

No picture is decoded here (that happens once, when a picture is selected and written);
this pass only reads bytes, so it is cheap even on the full 23,708-file dump.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import DatakitError
from datakit.progress import null_progress
from datakit.datasets.utk.names import Labels, NameError_, looks_like_image_name, parse_name


@dataclass(frozen=True)
class Record:
    """A candidate picture: its name, labels, size in bytes and content digest."""

    name: str
    labels: Labels
    nbytes: int
    digest: str


@dataclass
class Scan:
    src: Path
    records: list[Record]  # unique, usable candidates, sorted by name
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    ignored: list[dict] = field(default_factory=list)  # stray entries {"file", "reason"}
    duplicates: dict = field(default_factory=lambda: {"identical": [], "conflicting": []})


_BATCH = 256  # files per task (thread or worker process)


def _digests(src: str, names: list[str]) -> list[tuple[int, str]]:
    out = []
    for name in names:
        with open(os.path.join(src, name), "rb", buffering=0) as f:
            data = f.readall()
        out.append((len(data), hashlib.blake2b(data, digest_size=16).hexdigest()))
    return out


def scan(src: str | os.PathLike, workers: int | None = None, progress=null_progress, executor=None) -> Scan:
    """Parse and hash every file of `src` (flat folder); see the module doc.

    Files are read and hashed on `executor` (build passes its worker processes) or, by default,
    on `workers` threads."""
    src = Path(src)
    if not src.is_dir():
        raise DatakitError(f"{src}: not a folder")
    result = Scan(src=src, records=[])
    named: list[tuple[str, Labels]] = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.is_dir():
            result.ignored.append({"file": entry.name, "reason": "subfolder (SRC must be a flat folder)"})
        elif not entry.is_file():
            result.ignored.append({"file": entry.name, "reason": "not a regular file"})
        elif not looks_like_image_name(entry.name):
            result.ignored.append({"file": entry.name, "reason": "not a picture name (.jpg/.jpeg/.png)"})
        else:
            try:
                named.append((entry.name, parse_name(entry.name)))
            except NameError_ as exc:
                result.skipped.append({"file": entry.name, "reason": f"bad name: {exc}"})
    bar = progress(desc="scan", total=len(named), unit="file")
    hashed: list[Record] = []
    # Files go in batches: one task per file costs more than the hashing (measured: 1.1 s vs
    # 0.2 s for 7,000 files on threads).
    batches = [named[i:i + _BATCH] for i in range(0, len(named), _BATCH)]
    own = executor is None
    if own:
        executor = ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1))
    try:
        sizes = executor.map(_digests, [str(src)] * len(batches), [[n for n, _ in b] for b in batches])
        for batch, batch_sizes in zip(batches, sizes):
            bar.update(len(batch))
            for (name, labels), (nbytes, digest) in zip(batch, batch_sizes):
                if nbytes == 0:
                    result.skipped.append({"file": name, "reason": "empty file"})
                else:
                    hashed.append(Record(name, labels, nbytes, digest))
    finally:
        if own:
            executor.shutdown()
    bar.close()
    result.records = _dedupe(hashed, result)
    result.skipped.sort(key=lambda s: s["file"])
    return result


def _dedupe(records: list[Record], result: Scan) -> list[Record]:
    """Identical bytes count once; copies whose names disagree on race or gender are all dropped."""
    groups: dict[str, list[Record]] = {}
    for rec in records:
        groups.setdefault(rec.digest, []).append(rec)
    keep: list[Record] = []
    for group in groups.values():
        if len(group) == 1:
            keep.append(group[0])
            continue
        group.sort(key=lambda r: r.name)
        classes = {(r.labels.race, r.labels.gender) for r in group}
        if len(classes) > 1:
            result.duplicates["conflicting"].append(
                {"files": [r.name for r in group],
                 "labels": [{"race": r.labels.race, "gender": r.labels.gender} for r in group],
                 "reason": "identical bytes under names that disagree on race or gender: no copy used"})
            for r in group:
                result.skipped.append({"file": r.name, "reason": "duplicate with conflicting labels"})
        else:
            keep.append(group[0])
            result.duplicates["identical"].append(
                {"kept": group[0].name, "dropped": [r.name for r in group[1:]], "reason": "identical bytes"})
    keep.sort(key=lambda r: r.name)
    return keep
