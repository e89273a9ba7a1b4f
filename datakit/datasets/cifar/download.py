"""Fetch the official CIFAR tarball (or take a local one), verify it, extract it safely into place."""

from __future__ import annotations

import os
from pathlib import Path

from datakit import fetch as _fetch
from datakit.datasets.cifar.layout import class_names, default_dest
from datakit.datasets.cifar.binary import record_count
from datakit.datasets.cifar.spec import SPECS, Spec, spec
from datakit.errors import DatakitError
from datakit.progress import null_progress

# A download whose size nobody states (a mirror checked by the user's own checksum) stops here, so a
# never-ending body cannot fill the disk: four times the largest official archive.
SIZE_CAP = 4 * max(s.size for s in SPECS.values())


def _check_tree(s: Spec):
    """Validation run on a freshly extracted tree before it is moved into place."""

    def check(tree: Path) -> dict:
        missing = [f for f in s.required if not (tree / f).is_file()]
        if missing:
            raise DatakitError(f"{tree.name}/ in the archive lacks {', '.join(missing)}: not the {s.title} binary version")
        counts = {split: sum(record_count(tree / f, s) for f in files) for split, files in s.splits.items()}
        for mode in s.names:
            class_names(tree, mode, s.key)
        return {"dataset": s.key, "counts": counts}

    return check


def fetch(dataset: str, dest: str | os.PathLike | None = None, *, url: str | None = None, md5: str | None = None,
          sha256: str | None = None, size: int | None = None, from_archive: str | os.PathLike | None = None,
          tries: int = 5, timeout: float = 30.0, backoff: float | None = None, progress=null_progress) -> dict:
    """Make `dest` (default `default_dest(dataset)`) hold the verified, extracted binary version.

    Downloads from `url` (default: the official URL, verified against the pinned MD5 unless `md5` /
    `sha256` is given) or takes the local tarball `from_archive` (verified only when a checksum is
    given). `size` is the archive's size in bytes; the pinned official size goes with the pinned MD5
    (it applies whenever the official MD5 is the one verified); a download of no known size stops at
    `SIZE_CAP`. A transfer that passes the size is stopped and its `.part` deleted. One fetch at a time
    per destination. A complete earlier fetch is reused without network I/O.
    Returns {"dataset", "folder", "archive": {...md5, sha256}, "counts", "fetched", "download", ...}.
    """
    s = spec(dataset)
    if url is not None and from_archive is not None:
        raise DatakitError("--url and --from-archive exclude each other")
    expected = _fetch.check_digests(md5, sha256)
    if not expected and from_archive is None:
        expected = {"md5": s.md5}
    if size is not None and size < 1:
        raise DatakitError(f"size={size}: expected a positive number of bytes", param="size")
    if size is None and expected.get("md5") == s.md5:
        size = s.size  # the official archive: its size is as pinned as its checksum
    result = _fetch.install_archive(
        dest if dest is not None else default_dest(s.key), s.folder, archive_name=s.archive,
        url=None if from_archive is not None else (url or s.url), from_archive=from_archive, expected=expected,
        size=size, limit=SIZE_CAP, check=_check_tree(s), tries=tries, backoff=backoff, timeout=timeout,
        progress=progress)
    result["title"] = s.title
    result["classes"] = {mode: class_names(result["folder"], mode, s.key) for mode in s.names}
    return result
