"""The per-picture work of a build: read, decode, write the folder copy and the HDF5 pixels in
place, frame the TFRecord record, and summarise the pixels for the near-duplicate pass.

It runs in worker processes (threads would share one GIL: measured at ~100% CPU on 2 cores).
Pixels never travel between processes: each worker writes them straight into the HDF5 chunk
reserved for the picture's row (`os.pwrite` at the chunk's byte offset, see writers.HDF5Writer),
and only the small framed TFRecord record goes back to the parent, which appends records in
order, so the output does not depend on scheduling.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from datakit import tfrecord
from datakit.builder.images import MAX_PIXELS, BadImage, decode
from datakit.builder.neargroups import Summaries, summarize
from datakit.builder.scan import Record, read_regular


@dataclass(frozen=True)
class Sink:
    """Where one split's pictures go (picklable: it travels to the worker processes)."""

    root: str
    split: str
    size: int
    classes: tuple[str, ...]
    folders: bool
    tfrecord: bool
    h5_paths: tuple[str, ...] = ()
    h5_per_shard: int = 1
    max_pixels: int = MAX_PIXELS
    summaries: bool = False  # near-duplicate summaries of the decoded pixels (datakit.builder.neargroups)


_h5_cache: dict[str, tuple[int, list[int]]] = {}  # path -> (fd, chunk byte offsets), per process


def _h5_target(path: str) -> tuple[int, list[int]]:
    if path not in _h5_cache:
        with h5py.File(path, "r") as f:
            dset = f["images"].id
            offsets = [0] * dset.shape[0]
            dset.chunk_iter(lambda info: offsets.__setitem__(info.chunk_offset[0], info.byte_offset))
        _h5_cache[path] = (os.open(path, os.O_RDWR), offsets)
    return _h5_cache[path]


def release() -> None:
    """Close the HDF5 files this process writes pixels into (before h5py opens them again)."""
    while _h5_cache:
        os.close(_h5_cache.popitem()[1][0])


def located(exc: OSError, path: str) -> OSError:
    """`exc` naming `path` (os.write and os.pwrite name no file), for the build's one-line error."""
    return exc if exc.filename is not None else OSError(exc.errno, exc.strerror or str(exc), path)


def _write_file(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:  # ENOSPC, EROFS...: the build stops with one line naming the file
        raise located(exc, path) from None


def load(src: str | Path, record: Record, size: int, max_pixels: int = MAX_PIXELS):
    """(pixels, jpeg, None) or (None, None, reason) for one candidate picture."""
    try:
        data = read_regular(os.path.join(src, record.name))  # never blocks on a FIFO swapped in since the scan
    except OSError as exc:
        return None, None, f"cannot read: {exc.strerror or exc}"
    try:
        pixels, jpeg = decode(data, size, max_pixels)
    except BadImage as exc:
        return None, None, str(exc)
    except MemoryError:
        return None, None, "out of memory while decoding"
    return pixels, jpeg, None


def folder_rel(sink: Sink, label: int, record: Record) -> str:
    """Where the picture's folder copy goes, relative to the build root."""
    return f"folders/{sink.split}/{sink.classes[label]}/{record.out_name}"


def _h5_place(sink: Sink, row: int) -> tuple[str, int, int]:
    """(HDF5 file, its fd in this process, byte offset of the row's chunk)."""
    shard, local = divmod(row, sink.h5_per_shard)
    path = os.path.join(sink.root, sink.h5_paths[shard])
    fd, offsets = _h5_target(path)
    return path, fd, offsets[local]


def swap_rows(a: Sink, row_a: int, b: Sink, row_b: int) -> None:
    """Exchange the pixels of two HDF5 rows (a picture moved between places)."""
    n = a.size * a.size * 3
    places = [_h5_place(a, row_a), _h5_place(b, row_b)]
    pixels = []
    for path, fd, offset in places:
        try:
            pixels.append(os.pread(fd, n, offset))
        except OSError as exc:
            raise located(exc, path) from None
    for (path, fd, offset), data in zip(places, reversed(pixels)):
        try:
            os.pwrite(fd, data, offset)
        except OSError as exc:
            raise located(exc, path) from None


def swap_all(swaps: list[tuple[Sink, int, Sink, int]]) -> None:
    """`swap_rows` for each (sink, row, sink, row), in order: one task for a round's moves, on a
    worker that already knows the chunk offsets (finding them costs more than the moves)."""
    for a, row_a, b, row_b in swaps:
        swap_rows(a, row_a, b, row_b)


def fill(src: str, places: list[tuple[Sink, int, int]], spares: list[Record]) -> tuple[list, list, int]:
    """Give each place (sink, row, label) of one class, in order, the next of `spares` that
    decodes: ([(record, framed, folder hashes, summary) or None when the spares ran out],
    [(record, reason)] of the spares that failed, how many spares were used)."""
    out, failed, used = [], [], 0
    for sink, row, label in places:
        got = None
        while got is None and used < len(spares):
            record = spares[used]
            used += 1
            pixels, jpeg, err = load(src, record, sink.size, sink.max_pixels)
            if err is not None:
                failed.append((record, err))
                continue
            framed, hashes = emit(sink, row, label, record, pixels, jpeg)
            got = (record, framed, hashes, summarize([pixels])[0] if sink.summaries else None)
        out.append(got)
    return out, failed, used


def emit(sink: Sink, row: int, label: int, record: Record, pixels: np.ndarray, jpeg: bytes):
    """Write one decoded picture; returns (framed TFRecord record or None, {folder path: sha256})."""
    name = sink.classes[label]
    hashes = {}
    if sink.folders:
        rel = folder_rel(sink, label, record)
        _write_file(os.path.join(sink.root, rel), jpeg)
        hashes[rel] = hashlib.sha256(jpeg).hexdigest()
    if sink.h5_paths:
        path, fd, offset = _h5_place(sink, row)
        try:
            os.pwrite(fd, memoryview(np.ascontiguousarray(pixels, dtype=np.uint8)).cast("B"), offset)
        except OSError as exc:
            raise located(exc, path) from None
    framed = None
    if sink.tfrecord:
        framed = tfrecord.frame(tfrecord.encode_example({
            "image/encoded": jpeg, "image/format": b"jpeg", "image/height": sink.size, "image/width": sink.size,
            "image/class/label": label, "image/class/text": name, "image/filename": record.out_name,
            **record.labels}))
    return framed, hashes


def work(src: str, sink: Sink, tasks: list[tuple[int, int, Record]]) -> list[tuple]:
    """A chunk of (row, label, record): [(error or None, framed or None, folder hashes, near-duplicate
    summary or None)] in order."""
    out, summaries, done = [], Summaries(len(tasks)) if sink.summaries else None, []
    for row, label, record in tasks:
        pixels, jpeg, err = load(src, record, sink.size, sink.max_pixels)
        if err:
            out.append((err, None, {}, None))
            continue
        if summaries is not None:  # first, while the decoded pixels are still in cache
            summaries.add(pixels)
            done.append(len(out))
        out.append((None, *emit(sink, row, label, record, pixels, jpeg), None))
    for i, summary in zip(done, summaries.done() if summaries is not None else ()):
        out[i] = out[i][:3] + (summary,)
    return out
