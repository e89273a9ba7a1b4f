"""`build`: scan -> classes -> select -> decode, write and summarise each pick (worker processes)
-> near-duplicate groups settled (datakit.builder.layout) -> TFRecord shards and HDF5 columns ->
manifest.

A dataset enters through a `Recipe`: its label source (what names every candidate and its label
fields), how fields make classes, and its names for files and manifest; `BuildOptions` holds the
options every build shares. UTKFace (datakit.datasets.utk) and any labelled folder
(datakit.datasets.folder) are recipes.

Safety: everything is written under OUT/.partial and moved into place only when complete;
manifest.json is written last and is the only sign of a complete build. OUT/.datakit-build marks
a folder as datakit's, so a build killed half-way is recognised and simply redone.
Hostile conditions:
- Two builds into one OUT: the second refuses at once (an flock on OUT/.datakit-lock, which the
  kernel releases when its process dies, so a killed build leaves nothing stuck).
- A write that fails (disk full, read-only or vanished destination), here or in a worker: one
  DatakitError naming the file and the reason; OUT/.partial is removed, no manifest.json appears,
  and the previous build, if any, is untouched until the new one is complete.
- --overwrite removes only what datakit wrote: the files the previous manifest lists (or, after a
  run killed while installing, the ledger OUT/.datakit-install.json), then the datakit folders
  left empty. A file of the user's anywhere in OUT stays; manifest["kept"] lists those inside
  the output folders, and one in the way of a new output stops the build before anything moves.
Memory: pictures stream through worker processes a chunk at a time; nothing holds the data set.
"""

from __future__ import annotations

import errno
import gc
import json
import multiprocessing
import os
import re
import sys
import threading
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datakit import __version__
from datakit.atomic import drop_lock, remove, take_lock, write_text
from datakit.builder import layout, neargroups
from datakit.builder.images import MAX_PIXELS
from datakit.builder.classes import Allowed, Classes, resolve
from datakit.builder.scan import scan
from datakit.builder.select import select
from datakit.builder.writers import HDF5_SHARD_BYTES, RESERVED
from datakit.errors import DatakitError
from datakit.progress import null_progress

FORMATS = ("folders", "tfrecord", "hdf5")
COMMANDS = ("build-utk", "build")
MARKER = ".datakit-build"
PARTIAL = ".partial"
MANIFEST = "manifest.json"
LOCK = ".datakit-lock"  # held (flock) while a build writes OUT
LEDGER = ".datakit-install.json"  # what datakit owns in OUT while outputs are being replaced


@dataclass(frozen=True)
class BuildOptions:
    """What every build takes, validated once (errors name the parameter)."""

    per_class: int = 700
    size: int = 200
    formats: tuple = FORMATS
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    workers: int | None = None
    allow_short: bool = False
    overwrite: bool = False
    near_duplicates: str = "group"
    hdf5_shard_bytes: int = HDF5_SHARD_BYTES
    max_pixels: int = MAX_PIXELS  # a source picture whose header claims more pixels is skipped

    def __post_init__(self):
        formats = tuple(dict.fromkeys(self.formats))
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise DatakitError(f"formats: {bad or 'nothing'} not among {', '.join(FORMATS)}", param="formats")
        object.__setattr__(self, "formats", formats)
        if not isinstance(self.per_class, int) or self.per_class < 1:
            raise DatakitError(f"per_class={self.per_class}: must be a positive integer", param="per_class")
        if not isinstance(self.size, int) or self.size < 8:
            raise DatakitError(f"size={self.size}: too small (at least 8 pixels)", param="size")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise DatakitError(f"{name}={value}: must be in [0, 1)", param=name)
        if not isinstance(self.max_pixels, int) or self.max_pixels < self.size * self.size:
            raise DatakitError(f"max_pixels={self.max_pixels}: must be an integer of at least size x size "
                               f"({self.size * self.size})", param="max_pixels")
        if self.near_duplicates not in neargroups.MODES:
            raise DatakitError(f"near_duplicates={self.near_duplicates!r}: must be one of "
                               f"{', '.join(neargroups.MODES)}", param="near_duplicates")

    def manifest(self) -> dict:
        """The options as manifest.json records them (build-utk's keys first, as before)."""
        keep = ("per_class", "size", "formats", "val_fraction", "test_fraction", "seed", "allow_short")
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keep}
        out["near_duplicates"] = self.near_duplicates
        return out


@dataclass
class Recipe:
    """One dataset's side of a build (see the module doc)."""

    dataset: str  # registry key of the output ("utk", "folder")
    command: str  # "build-utk" or "build"
    stem: str  # file stem: tfrecord/{stem}-{split}.tfrecord-..., hdf5/{stem}-{split}.h5
    source: object  # label source: .list(src) -> scan.Listing; .fields: tuple[Field]; .declared: {field: Allowed}
    class_by: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    where: tuple[tuple[str, Allowed], ...] = ()
    class_keys: tuple[tuple, ...] | None = None  # fixed classes (UTKFace); else resolved from the scan
    feature_docs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the recipe's own options, recorded in the manifest
    extra: dict = field(default_factory=dict)  # extra top-level manifest keys (UTKFace: races)

    def check(self) -> None:
        names = [f.name for f in self.source.fields]
        for f in self.source.fields:
            if f.name == "image" or f.name.startswith("image/") or f.name in RESERVED or not f.name or "/" in f.name:
                raise DatakitError(f"label field {f.name!r}: the name is reserved or nests (image, image/..., "
                                   f"{', '.join(RESERVED)}, a '/')", param="class_by")
        missing = [f for f in self.class_by if f not in names]
        if missing or not self.class_by:
            raise DatakitError(f"class_by: {missing or 'nothing'} not among the label fields "
                               f"({', '.join(names)})", param="class_by")
        unknown = [name for name, _ in self.where if name not in names]
        if unknown:
            raise DatakitError(f"where: {unknown} not among the label fields ({', '.join(names)})", param="where")

    def classes(self, found) -> Classes:
        if self.class_keys is not None:
            names = self.class_names or tuple("_".join(map(str, k)) for k in self.class_keys)
            return Classes(self.class_by, self.class_keys, tuple(names), self.where)
        observed = {tuple(r.labels[f] for f in self.class_by) for r in found.records}
        return resolve(self.class_by, self.class_names, self.where, observed, self.source.declared)


def build(src, out, recipe: Recipe, options: BuildOptions = BuildOptions(), progress=null_progress) -> dict:
    """Build balanced outputs of the folder `src` under `out` as `recipe` says; returns the manifest."""
    with _frozen_heap() as freeze:
        return _build(Path(src), Path(out), recipe, options, progress, freeze)


def _build(src: Path, out: Path, recipe: Recipe, o: BuildOptions, progress, freeze) -> dict:
    recipe.check()
    workers = max(1, o.workers or os.cpu_count() or 1)
    _check_out(src, out, o.overwrite)  # a foreign OUT is refused before anything is written in it
    created = not out.exists()
    pool = _pool(workers)  # the worker processes start while this one scans
    tmp, lock = out / PARTIAL, None
    try:
        try:
            lock = _lock(out)  # after the workers forked: they must not inherit (and outlive) the lock
        except OSError as exc:
            raise DatakitError(_failed_write(exc, out, "nothing was written")) from None
        _check_out(src, out, o.overwrite)  # again: another build may have finished meanwhile
        found = scan(src, recipe.source, recipe.class_by, workers=1, progress=progress, executor=pool)
        classes = recipe.classes(found)
        plan = select(found, classes, per_class=o.per_class, val_fraction=o.val_fraction,
                      test_fraction=o.test_fraction, seed=o.seed, allow_short=o.allow_short)
        freeze()  # the scan's records live to the end: no garbage collection need walk them again
        regroup = neargroups.Regroup(o.near_duplicates, classes) if o.near_duplicates != "keep" else None
        try:
            (out / MARKER).write_text("datakit build output folder; complete only when manifest.json exists\n")
            remove(tmp)
            tmp.mkdir()
            submit = (lambda fn, *a: pool.submit(fn, *a)) if pool else _Now
            written = layout.write(plan, src, tmp, recipe, o, submit, workers, progress, regroup)
        except OSError as exc:  # here or in a worker (future.result() raises it again here)
            _stop(pool)  # no worker writes under tmp any more
            pool = None
            left = "the partial output was removed" if _discard(tmp) else f"remove {tmp} by hand"
            raise DatakitError(_failed_write(exc, out, f"nothing was installed ({left})")) from None
        except BrokenProcessPool:
            raise DatakitError(f"{out}: a worker process died (killed, or out of memory) during the build; "
                               "nothing was installed") from None
    except BaseException:
        _stop(pool)
        pool = None
        if lock is not None:
            _discard(tmp)
            drop_lock(lock, out / LOCK)
            if created:  # leave no empty OUT behind
                _discard(out / MARKER)
                _rmdir(out)
        raise
    finally:
        _stop(pool)
    manifest = {
        "datakit": {"version": __version__, "command": recipe.command},
        "dataset": recipe.dataset,
        "source": str(src.resolve()),
        "options": {**o.manifest(), **recipe.options},
        "classes": plan.classes,
        **recipe.extra,
        "size": o.size,
        "splits": plan.splits,
        "counts": written["counts"],
        "available": plan.available,
        "outputs": written["outputs"],
        "skipped": sorted(found.skipped + written["skipped"], key=lambda s: s["file"]),
        "ignored": found.ignored,
        "duplicates": found.duplicates,
        "near_duplicates": regroup.entry if regroup else {"mode": "keep"},
        "fields": [f.as_dict() for f in recipe.source.fields],
        **classes.as_dict(),
        "stem": recipe.stem,
        "files": dict(sorted(written["files"].items())),
    }
    try:
        kept = _install(tmp, out)
        if kept:
            manifest["kept"] = kept
        write_text(out / MANIFEST, json.dumps(manifest, indent=1))
        (out / LEDGER).unlink(missing_ok=True)
    except OSError as exc:
        _discard(tmp)
        outcome = (f"the previous build in {out} is untouched" if is_complete_build(out) else
                   f"{out} holds no complete build (no {MANIFEST}): run the build again")
        raise DatakitError(_failed_write(exc, out, outcome)) from None
    except BaseException:
        _discard(tmp)
        raise
    finally:
        drop_lock(lock, out / LOCK)
    return manifest


def is_complete_build(folder: Path) -> bool:
    try:
        meta = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("datakit"), dict) and meta["datakit"].get("command") in COMMANDS


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatakitError(f"{out}: exists and is not a folder")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise DatakitError(f"{out}: OUT must differ from SRC")
    if not out.exists() or not any(entry.name != LOCK for entry in out.iterdir()):
        return
    if is_complete_build(out):
        if not overwrite:
            raise DatakitError(f"{out}: holds a complete datakit build; pass --overwrite to replace it")
    elif (out / MANIFEST).exists():
        raise DatakitError(f"{out}: has a manifest.json that is not a datakit build manifest; refusing to write")
    elif not (out / MARKER).exists():
        raise DatakitError(f"{out}: not empty and not a datakit build; refusing to write into it")
    # else: an incomplete datakit build (a run killed half-way): it is redone from scratch.


def _lock(out: Path) -> int:
    """Hold OUT/.datakit-lock for this build (datakit.atomic.take_lock); DatakitError when another
    build holds it."""
    out.mkdir(parents=True, exist_ok=True)
    return take_lock(out / LOCK, lambda pid: f"{out}: being written by another datakit build (pid {pid}); wait for "
                                             "it to finish, or stop it")


def _stop(pool) -> None:
    if pool:
        pool.shutdown(cancel_futures=True)


def _discard(path: Path) -> bool:
    """Remove `path` if it can be; False when some of it stays (a read-only destination)."""
    try:
        remove(path)
    except OSError:
        return False
    return True


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EFBIG: "file too large", errno.EIO: "input/output error"}


def _failed_write(exc: OSError, out: Path, outcome: str) -> str:
    """One line for a write that failed: the reason, the file, and what became of OUT."""
    code = exc.errno
    if code is None:  # h5py names the errno only in its message
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    reason = _REASONS.get(code) or (os.strerror(code).lower() if code else str(exc).splitlines()[0])
    where = exc.filename if exc.filename is not None else out
    return f"{reason} while writing {os.fsdecode(where)}; {outcome}"


def _owned(out: Path) -> tuple[set[str], set[str]]:
    """(files, folders), as paths under OUT, that datakit wrote: those of the complete build's
    manifest, else those of the ledger an install cut short left; only paths inside the output
    folders count, whatever the manifest says."""
    try:
        meta = json.loads((out / MANIFEST).read_text())
        files = [*meta.get("files", {})]
        for fmt in ("tfrecord", "hdf5"):
            for paths in (meta.get("outputs", {}).get(fmt) or {}).values():
                files += paths
        splits = [*(meta.get("outputs", {}).get("folders") or {}).values()]
        folders = splits + [f"{split}/{name}" for split in splits for name in meta.get("classes", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        try:
            ledger = json.loads((out / LEDGER).read_text())
            files, folders = ledger["files"], ledger["folders"]
        except (OSError, ValueError, KeyError, TypeError):
            files, folders = [], []

    def inside(paths) -> set[str]:
        ok = set()
        for rel in paths if isinstance(paths, list) else []:
            parts = rel.split("/") if isinstance(rel, str) else []
            if parts and parts[0] in FORMATS and all(p not in ("", ".", "..") for p in parts):
                ok.add(rel)
        return ok

    return {rel for rel in inside(files) if "/" in rel}, inside(folders)


def _tree(root: Path, fmt: str) -> tuple[list[str], list[str]]:
    """(files, folders) under root/fmt as paths relative to root, folders top-down."""
    files, folders = [], []
    for here, dirs, names in os.walk(root / fmt):
        rel = Path(here).relative_to(root).as_posix()
        folders.append(rel)
        files += [f"{rel}/{n}" for n in names]
        for d in list(dirs):
            if (Path(here) / d).is_symlink():  # not followed: listed as a file
                dirs.remove(d)
                files.append(f"{rel}/{d}")
    return files, folders


def _install(tmp: Path, out: Path) -> list[str]:
    """Replace the previous outputs with the new ones; returns the user's files kept inside the
    output folders. Only what datakit wrote goes (module doc): a ledger of it is written first,
    then the old manifest goes, then datakit's old files and the folders they leave empty."""
    old, old_dirs = _owned(out)
    new_files, new_dirs = [], []
    for fmt in FORMATS:
        files, folders = _tree(tmp, fmt) if (tmp / fmt).is_dir() else ([], [])
        new_files += files
        new_dirs += folders
    in_way = [rel for rel in new_files if rel not in old and os.path.lexists(out / rel)]
    in_way += [rel for rel in new_dirs if rel not in old and os.path.lexists(out / rel)
               and (not (out / rel).is_dir() or (out / rel).is_symlink())]
    if in_way:
        more = f" (and {len(in_way) - 1} more)" if len(in_way) > 1 else ""
        raise DatakitError(f"{out / in_way[0]}{more}: not written by datakit (not in the previous manifest) and in "
                           "the way of this build's output; move it away and run again; nothing was installed")
    write_text(out / LEDGER, json.dumps({"files": sorted(old | set(new_files)),
                                         "folders": sorted(old_dirs | set(new_dirs))}))
    (out / MANIFEST).unlink(missing_ok=True)
    parents = {Path(rel) for rel in old_dirs}
    for rel in old:
        target = out / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
        parents.update(p for p in Path(rel).parents if p != Path("."))
    for folder in [*parents]:
        parents.update(p for p in folder.parents if p != Path("."))
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        _rmdir(out / folder)  # only when empty: a user's file keeps its folder
    for fmt in FORMATS:
        if not (tmp / fmt).is_dir():
            continue
        if not os.path.lexists(out / fmt):
            os.replace(tmp / fmt, out / fmt)
            continue
        for rel in new_dirs:  # a user's file survived in out/fmt: move the new files in one by one
            if rel.split("/")[0] == fmt:
                (out / rel).mkdir(exist_ok=True)
        for rel in new_files:
            if rel.split("/")[0] == fmt:
                os.replace(tmp / rel, out / rel)
    remove(tmp)
    new = set(new_files)
    kept = []
    for fmt in FORMATS:
        if (out / fmt).is_dir() and not (out / fmt).is_symlink():
            kept += [rel for rel in _tree(out, fmt)[0] if rel not in new]
    return sorted(kept)


@contextmanager
def _frozen_heap():
    """Objects that live through the build (the imported modules; the scan's records, some
    20,000 for a UTKFace dump) kept out of the garbage collector's full passes, which walk every
    tracked object and otherwise run a few times in this process while its workers wait; frozen
    before the workers fork, they are not touched (copied) by the workers' collections either.
    Yields `freeze`, to freeze what exists now; a no-op where the caller froze objects itself."""
    if gc.get_freeze_count():
        yield lambda: None
        return
    gc.freeze()
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


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
        ctx.set_forkserver_preload(["datakit.builder.emit", "datakit.builder.scan"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    if method == "fork":
        pool.submit(int)  # forks every worker now, before the pool's own thread starts
    else:
        threading.Thread(target=_ask_for_workers, args=(pool, workers), daemon=True).start()
    return pool


def _ask_for_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the fork server's workers (one task each) ahead of the scan. A build that fails at
    once (a short class, say) shuts the pool down meanwhile: then there is nothing left to start,
    and no thread traceback may reach the user's stderr."""
    try:
        for _ in range(workers):
            pool.submit(int)
    except RuntimeError:  # shut down, or broken (BrokenProcessPool): the build's own calls report that
        pass
