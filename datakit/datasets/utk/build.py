"""`build`: scan -> select -> decode (worker processes) -> write folders / TFRecord / HDF5 -> manifest.

Safety: everything is written under OUT/.partial and moved into place only when complete;
manifest.json is written last and is the only sign of a complete build. OUT/.datakit-build marks
a folder as datakit's, so a build killed half-way is recognised and simply redone.
Memory: pictures stream through worker processes a chunk at a time; nothing holds the data set.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from datakit import __version__
from datakit.atomic import remove, sha256_file, write_text
from datakit.errors import DatakitError
from datakit.progress import null_progress
from datakit.datasets.utk import emit
from datakit.datasets.utk.names import DEFAULT_RACES, check_races
from datakit.datasets.utk.scan import scan
from datakit.datasets.utk.select import Plan, select, shortage_table
from datakit.datasets.utk.writers import HDF5Writer, HDF5_SHARD_BYTES, TFRecordWriter, write_features_json

FORMATS = ("folders", "tfrecord", "hdf5")
MARKER = ".datakit-build"
PARTIAL = ".partial"
MANIFEST = "manifest.json"
CHUNK = 32  # pictures per task sent to a worker process


def build(src, out, per_class: int = 700, races=DEFAULT_RACES, size: int = 200, formats=FORMATS,
          val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0, workers: int | None = None,
          allow_short: bool = False, overwrite: bool = False, progress=null_progress,
          hdf5_shard_bytes: int = HDF5_SHARD_BYTES) -> dict:
    """Build balanced race x gender outputs of the UTKFace folder `src` under `out`; returns the manifest."""
    src, out = Path(src), Path(out)
    races = check_races(races)
    formats = _check_formats(formats)
    if size < 8:
        raise DatakitError(f"--size {size}: too small (at least 8 pixels)")
    workers = max(1, workers or os.cpu_count() or 1)
    _check_out(src, out, overwrite)
    pool = _pool(workers)  # the worker processes start while this one scans
    try:
        found = scan(src, workers=1, progress=progress, executor=pool)
        plan = select(found, per_class=per_class, races=races, val_fraction=val_fraction,
                      test_fraction=test_fraction, seed=seed, allow_short=allow_short)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("datakit build-utk output folder; complete only when manifest.json exists\n")
        tmp = out / PARTIAL
        remove(tmp)
        tmp.mkdir()
        try:
            written = _write(plan, src, tmp, size, formats, pool, workers, allow_short, progress, hdf5_shard_bytes)
        except BaseException:
            remove(tmp)
            raise
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    manifest = {
        "datakit": {"version": __version__, "command": "build-utk"},
        "source": str(src.resolve()),
        "options": {"per_class": per_class, "races": list(races), "size": size, "formats": list(formats),
                    "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                    "allow_short": allow_short},
        "classes": plan.classes,
        "races": list(races),
        "size": size,
        "splits": plan.splits,
        "counts": written["counts"],
        "available": plan.available,
        "outputs": written["outputs"],
        "skipped": sorted(found.skipped + written["skipped"], key=lambda s: s["file"]),
        "ignored": found.ignored,
        "duplicates": found.duplicates,
        "files": dict(sorted(written["files"].items())),
    }
    _install(tmp, out)
    write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _check_formats(formats) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise DatakitError(f"--formats: {bad or 'nothing'} not among {', '.join(FORMATS)}")
    return formats


def is_complete_build(folder: Path) -> bool:
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("datakit", {}).get("command") == "build-utk"


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatakitError(f"{out}: exists and is not a folder")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise DatakitError(f"{out}: OUT must differ from SRC")
    if not out.exists() or not any(out.iterdir()):
        return
    if is_complete_build(out):
        if not overwrite:
            raise DatakitError(f"{out}: holds a complete datakit build; pass --overwrite to replace it")
    elif (out / MANIFEST).exists():
        raise DatakitError(f"{out}: has a manifest.json that is not a datakit build-utk manifest; refusing to write")
    elif not (out / MARKER).exists():
        raise DatakitError(f"{out}: not empty and not a datakit build; refusing to write into it")
    # else: an incomplete datakit build (a run killed half-way): it is redone from scratch.


def _install(tmp: Path, out: Path) -> None:
    """Replace the previous outputs with the new ones; the old manifest goes first."""
    (out / MANIFEST).unlink(missing_ok=True)
    for fmt in FORMATS:
        remove(out / fmt)
        if (tmp / fmt).exists():
            os.replace(tmp / fmt, out / fmt)
    remove(tmp)


class _Now:
    """A finished 'future' for work done in this process (one worker: no pool)."""

    def __init__(self, fn, *args):
        self._value = fn(*args)

    def result(self):
        return self._value


# Loaded runtimes whose native threads or fork handlers make a fork of this process risky.
_FORK_UNSAFE = ("tensorflow", "grpc", "jax", "torch")


def start_method() -> str:
    """How worker processes start: "fork" on Linux when this process runs no other Python thread
    and has loaded none of _FORK_UNSAFE (instant: the modules are already imported; the case of
    `datakit build-utk`), else "forkserver": a clean server process imports the worker modules
    once and forks the workers from itself."""
    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and not any(name in sys.modules for name in _FORK_UNSAFE)):
        return "fork"
    return "forkserver"


def _pool(workers: int):
    """Worker processes (None for one worker), started at once so that they are ready when the
    scan starts; a fork server is asked for them on a thread, as it first imports its modules."""
    if workers <= 1:
        return None
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["datakit.datasets.utk.emit"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    if method == "fork":
        pool.submit(int)  # forks every worker now, before the pool's own thread starts
    else:
        threading.Thread(target=lambda: [pool.submit(int) for _ in range(workers)], daemon=True).start()
    return pool


def _in_order(submit, chunks, window: int):
    """Results of `submit(chunk)` in chunk order, with at most `window` chunks in flight."""
    pending: deque = deque()
    for chunk in chunks:
        pending.append((chunk, submit(chunk)))
        if len(pending) >= window:
            chunk, future = pending.popleft()
            yield chunk, future.result()
    while pending:
        chunk, future = pending.popleft()
        yield chunk, future.result()


def _write(plan: Plan, src: Path, root: Path, size: int, formats, pool, workers: int, allow_short: bool,
           progress, hdf5_shard_bytes: int) -> dict:
    counts = {split: {name: 0 for name in plan.classes} for split in plan.splits}
    outputs: dict = {fmt: {} for fmt in formats}
    files: dict[str, str] = {}
    skipped: list[dict] = []
    failed = {name: 0 for name in plan.classes}
    if "folders" in formats:
        for split in plan.splits:
            outputs["folders"][split] = f"folders/{split}"
            for name in plan.classes:
                (root / "folders" / split / name).mkdir(parents=True, exist_ok=True)
    bar = progress(desc="build", total=sum(len(v) for v in plan.slots.values()), unit="img")
    submit = (lambda fn, *a: pool.submit(fn, *a)) if pool else _Now
    h5_hashes: dict = {}  # rel -> future: hashing overlaps the next split's work
    try:
        for split in plan.splits:
            slots = plan.slots[split]
            tfw = (TFRecordWriter(root, split, len(slots), sum(s.record.nbytes + 400 for s in slots))
                   if "tfrecord" in formats else None)
            h5w = (HDF5Writer(root, split, len(slots), size, plan.classes, hdf5_shard_bytes)
                   if "hdf5" in formats else None)
            sink = emit.Sink(root=str(root), split=split, size=size, classes=tuple(plan.classes),
                             folders="folders" in formats, tfrecord=tfw is not None,
                             h5_paths=tuple(h5w.paths) if h5w else (), h5_per_shard=h5w.per_shard if h5w else 1)
            tasks = [(row, slot.label, slot.record) for row, slot in enumerate(slots)]
            chunks = [tasks[i:i + CHUNK] for i in range(0, len(tasks), CHUNK)]
            columns = []
            for chunk, results in _in_order(lambda c: submit(emit.work, str(src), sink, c), chunks, 2 * workers):
                for (row, label, record), (err, framed, hashes) in zip(chunk, results):
                    bar.update(1)
                    name = plan.classes[label]
                    while err is not None:  # replace a pick that does not decode by the class's next spare
                        skipped.append({"file": record.name, "reason": err})
                        failed[name] += 1
                        spares = plan.reserves[label]
                        if not spares:
                            if allow_short:
                                record = None
                                break
                            valid = {c: plan.available[c] - failed[c] for c in plan.classes}
                            raise DatakitError(
                                f"{src}: class {name} has fewer than {plan.per_class} decodable images after "
                                f"{failed[name]} failed to decode (last: {record.name}: {err}); nothing written\n"
                                + shortage_table(plan.classes, valid, plan.per_class))
                        record = spares.pop(0)
                        pixels, jpeg, err = emit.load(src, record, size)
                        if err is None:
                            framed, hashes = emit.emit(sink, row, label, record, pixels, jpeg)
                    if record is None:
                        continue
                    files.update(hashes)
                    if tfw:
                        tfw.add(framed)
                    lab = record.labels
                    columns.append((row, label, lab.age, lab.gender, lab.race, record.name))
                    counts[split][name] += 1
            emit.release()
            if tfw:
                tfw.close()
                outputs["tfrecord"][split] = tfw.paths
                files.update(tfw.hashes)
            if h5w:
                h5w.close(columns)  # every worker's pixel writes returned before its results did
                outputs["hdf5"][split] = h5w.paths
                h5_hashes.update({rel: submit(sha256_file, root / rel) for rel in h5w.paths})
        files.update({rel: future.result() for rel, future in h5_hashes.items()})
    finally:
        bar.close()
    if "tfrecord" in formats:
        rel, digest = write_features_json(root)
        files[rel] = digest
    return {"counts": counts, "outputs": outputs, "files": files, "skipped": skipped}
