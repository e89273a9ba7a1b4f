"""The write phase of a build: where every picture lands, and the near-duplicate pass over it.

1. Every pick is decoded once on the workers (datakit.builder.emit) and written to its place
   (split, row) of the plan, which is the plan of `near_duplicates="keep"`: its folder copy and
   its HDF5 row in place, its framed TFRecord record appended to a staging file, and (unless
   "keep") its near-duplicate summary computed from the decoded pixels. The chunks of every split
   go to the workers as one stream; once the last ones are sent, the search for near-identical
   pairs runs on what is placed so far while the workers write those.
2. The near-duplicate pass (datakit.builder.neargroups.Regroup) groups the placed pictures. A
   removed picture (conflicting labels, or the extra members under "drop") gives its place to the
   class's next spare, decoded and written on the workers like the spare of a pick that failed
   to decode; a group held by two splits is gathered into one by swapping each member in another
   split with an ungrouped picture of the same class in the group's split (two HDF5 chunks
   exchanged on a worker, two folder files renamed, two staged records exchanged), so every
   class keeps its count in every split. Then again, until nothing changes.
3. The HDF5 label columns are written and the files handed to the workers to hash, then the
   TFRecord shards are written from the staging file in each split's order meanwhile.

Why in this order: the summary needs the pixels that the write decodes anyway (a pass before the
split decoded every pick twice), and a group changes only the few places its members hold.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from itertools import compress, islice
from pathlib import Path

from datakit.builder import emit, tfds_metadata
from datakit.atomic import sha256_file
from datakit.builder.neargroups import Regroup
from datakit.builder.select import Plan, shortage_table
from datakit.builder.writers import HDF5Writer, TFRecordWriter, features, write_features_json
from datakit.errors import DatakitError

CHUNK = 32  # pictures per task sent to a worker process
STAGING = ".records.partial"  # framed TFRecord records, in the order the pictures were written


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


class _Places:
    """Every (split, row) of the build: its class, the record it holds (None: left empty under
    allow_short), its staged TFRecord record and the near-duplicate summaries of what was decoded.
    What needs the HDF5 chunk offsets (refills, row swaps) runs on the workers, which know them."""

    def __init__(self, plan: Plan, src: Path, root: Path, o, sinks: dict, staging, submit):
        self.plan, self.src, self.root, self.o, self.sinks, self.staging = plan, src, root, o, sinks, staging
        self.submit = submit
        self.label = {s: [slot.label for slot in plan.slots[s]] for s in plan.splits}
        self.held: dict[str, list] = {s: [None] * len(plan.slots[s]) for s in plan.splits}
        self.staged: dict[str, list] = {s: [None] * len(plan.slots[s]) for s in plan.splits}
        self.summary: dict[str, tuple] = {}
        self.files: dict[str, str] = {}
        self.skipped: list[dict] = []
        self.failed = {name: 0 for name in plan.classes}
        self._last_failure: dict[str, tuple[str, str]] = {}
        self._swaps: list[tuple] = []
        self.where: dict[str, tuple[str, int]] = {}  # name -> (split, row) of every placed picture
        self.fresh: list[str] = []  # the names placed since the near-duplicate pass last asked
        self._end = 0

    def put(self, split: str, row: int, record, framed, hashes: dict, summary) -> None:
        self.held[split][row] = record
        self.where[record.name] = (split, row)
        self.fresh.append(record.name)
        self.files.update(hashes)
        if framed is not None:
            try:
                os.pwrite(self.staging, framed, self._end)
            except OSError as exc:
                raise emit.located(exc, str(self.root / STAGING)) from None
            self.staged[split][row] = (self._end, len(framed))
            self._end += len(framed)
        if summary is not None:
            self.summary[record.name] = summary

    def failed_to_decode(self, label: int, record, err: str) -> None:
        self.skipped.append({"file": record.name, "reason": err})
        name = self.plan.classes[label]
        self.failed[name] += 1
        self._last_failure[name] = (record.name, err)

    def fill(self, wanted: list[tuple[str, int]], near: bool = False) -> None:
        """Give each empty place of `wanted` (a pick that failed to decode, or one set aside as a
        near-duplicate: `near`) its class's next spare that decodes, in order, one task per class
        on the workers. A class whose spares run out is short: an error, unless allow_short or
        `near` (then `settle` reports it) leave the place empty."""
        pending: dict[int, list] = {}
        for split, row in wanted:
            pending.setdefault(self.label[split][row], []).append((split, row))
        while pending:
            futures = []
            for label, places in pending.items():
                spares = self.plan.reserves[label][:2 * len(places) + 4]  # more go in another task
                tasks = [(self.sinks[split], row, label) for split, row in places]
                futures.append((label, places, self.submit(emit.fill, str(self.src), tasks, spares)))
            pending = {}
            for label, places, future in futures:
                results, failures, used = future.result()
                reserves = self.plan.reserves[label]
                for record, err in failures:
                    self.failed_to_decode(label, record, err)
                del reserves[:used]
                left = []
                for (split, row), got in zip(places, results):
                    if got is not None:
                        self.put(split, row, *got)
                    else:
                        left.append((split, row))
                if left and reserves:
                    pending[label] = left
                elif left and not (self.o.allow_short or near):
                    name = self.plan.classes[label]
                    valid = {c: self.plan.available[c] - self.failed[c] for c in self.plan.classes}
                    last, err = self._last_failure[name]
                    raise DatakitError(
                        f"{self.src}: class {name} has fewer than {self.plan.per_class} decodable images after "
                        f"{self.failed[name]} failed to decode (last: {last}: {err}); nothing written\n"
                        + shortage_table(self.plan.classes, valid, self.plan.per_class))

    def set_aside(self, split: str, row: int, reason: str | None = None) -> None:
        """Remove the picture at (split, row) (a near-duplicate); `fill` gives its place to a spare."""
        record = self.held[split][row]
        if reason:
            self.skipped.append({"file": record.name, "reason": reason})
        rel = emit.folder_rel(self.sinks[split], self.label[split][row], record)
        if self.files.pop(rel, None) is not None:
            os.unlink(self.root / rel)
        del self.where[record.name]
        self.held[split][row] = self.staged[split][row] = None

    def swap(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        """Exchange the pictures of two places of one class (the HDF5 rows at the next `flush`)."""
        (sa, ra), (sb, rb) = a, b
        ka, kb = self.sinks[sa], self.sinks[sb]
        label = self.label[sa][ra]
        rec_a, rec_b = self.held[sa][ra], self.held[sb][rb]
        if ka.h5_paths:
            self._swaps.append((ka, ra, kb, rb))
        if ka.folders:
            moves = [(emit.folder_rel(ka, label, rec_a), emit.folder_rel(kb, label, rec_a)),
                     (emit.folder_rel(kb, label, rec_b), emit.folder_rel(ka, label, rec_b))]
            for old, new in moves:
                os.rename(self.root / old, self.root / new)
            digests = [self.files.pop(old) for old, _ in moves]
            self.files.update({new: d for (_, new), d in zip(moves, digests)})
        self.held[sa][ra], self.held[sb][rb] = rec_b, rec_a
        self.where[rec_a.name], self.where[rec_b.name] = b, a
        self.staged[sa][ra], self.staged[sb][rb] = self.staged[sb][rb], self.staged[sa][ra]

    def flush(self) -> None:
        """Exchange the HDF5 rows of the swaps so far (one task, in order)."""
        if self._swaps:
            swaps, self._swaps = self._swaps, []
            self.submit(emit.swap_all, swaps).result()

    def at(self, name: str):
        """(label, record, split, sort key of the place) of a placed picture, else None."""
        place = self.where.get(name)
        if place is None:
            return None
        split, row = place
        return self.label[split][row], self.held[split][row], split, (self.plan.splits.index(split), row)

    def take_fresh(self) -> list[tuple[str, tuple]]:
        """(name, near-duplicate summary) of the pictures placed since the last call."""
        names, self.fresh = self.fresh, []
        return [(n, self.summary[n]) for n in names]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: pictures placed}}."""
        out = {}
        for split in self.plan.splits:
            held = Counter(compress(self.label[split], (rec is not None for rec in self.held[split])))
            out[split] = {name: held[label] for label, name in enumerate(self.plan.classes)}
        return out

    def records(self, split: str):
        """The staged records of `split`, in row order."""
        for place in self.staged[split]:
            if place is not None:
                yield os.pread(self.staging, place[1], place[0])


def write(plan: Plan, src: Path, root: Path, recipe, o, submit, workers: int, progress,
          regroup: Regroup | None = None) -> dict:
    """Write the build's outputs under `root` (the module doc); returns counts, outputs, files, skipped."""
    formats = o.formats
    outputs: dict = {fmt: {} for fmt in formats}
    if "folders" in formats:
        for split in plan.splits:
            outputs["folders"][split] = f"folders/{split}"
            for name in plan.classes:
                (root / "folders" / split / name).mkdir(parents=True, exist_ok=True)
    h5 = {split: HDF5Writer(root, split, len(plan.slots[split]), o.size, plan.classes, recipe.source.fields,
                            recipe.stem, o.hdf5_shard_bytes) for split in plan.splits} if "hdf5" in formats else {}
    sinks = {split: emit.Sink(root=str(root), split=split, size=o.size, classes=tuple(plan.classes),
                              folders="folders" in formats, tfrecord="tfrecord" in formats,
                              h5_paths=tuple(h5[split].paths) if h5 else (),
                              h5_per_shard=h5[split].per_shard if h5 else 1, max_pixels=o.max_pixels,
                              summaries=regroup is not None) for split in plan.splits}
    staging = os.open(root / STAGING, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        places = _Places(plan, src, root, o, sinks, staging, submit)
        bar = progress(desc="build", total=sum(len(v) for v in plan.slots.values()), unit="img")
        try:
            failed = []
            jobs = []  # one stream over every split: no worker waits at a split's end
            for split in plan.splits:
                tasks = [(row, slot.label, slot.record) for row, slot in enumerate(plan.slots[split])]
                jobs += [(split, tasks[i:i + CHUNK]) for i in range(0, len(tasks), CHUNK)]
            work = lambda job: submit(emit.work, str(src), sinks[job[0]], job[1])  # noqa: E731
            for k, ((split, chunk), results) in enumerate(_in_order(work, jobs, 2 * workers), 1):
                for (row, label, record), (err, framed, hashes, summary) in zip(chunk, results):
                    bar.update(1)
                    if err is None:
                        places.put(split, row, record, framed, hashes, summary)
                    else:  # a pick that does not decode: the class's next spare takes its place
                        places.failed_to_decode(label, record, err)
                        failed.append((split, row))
                if regroup is not None and k == len(jobs) - 2 * workers + 1:  # the last chunk was just sent
                    # the near-duplicate search, on what is placed so far, while the workers write
                    # the last chunks: the build's serial end keeps only the search for those
                    regroup.compare(places.take_fresh())
            places.fill(failed)
        finally:
            bar.close()
        if regroup is not None:
            settle(places, regroup)
        emit.release()  # this process's HDF5 writes (spares, swaps) are done: h5py opens the files next
        files = places.files
        h5_hashes: dict = {}
        for split in h5:  # first, so that the workers hash the large HDF5 files while this process writes the shards
            h5[split].close([(row, places.label[split][row], rec.labels, rec.out_name)
                             for row, rec in enumerate(places.held[split]) if rec is not None])
            outputs["hdf5"][split] = h5[split].paths
            h5_hashes.update({rel: submit(sha256_file, root / rel) for rel in h5[split].paths})
        for split in plan.splits:
            if "tfrecord" in formats:
                tfw = TFRecordWriter(root, split, len(plan.slots[split]),
                                     sum(s.record.nbytes + 400 for s in plan.slots[split]), recipe.stem)
                for framed in places.records(split):
                    try:
                        tfw.add(framed)
                    except OSError as exc:
                        raise emit.located(exc, str(root / tfw.paths[-1] if tfw.paths else tfw.dir)) from None
                tfw.close()
                outputs["tfrecord"][split] = tfw.paths
                files.update(tfw.hashes)
        files.update({rel: future.result() for rel, future in h5_hashes.items()})
    finally:
        emit.release()
        os.close(staging)
        (root / STAGING).unlink(missing_ok=True)
    if "tfrecord" in formats:
        table = features(recipe.source.fields, recipe.feature_docs)
        rel, digest = write_features_json(root, table)
        files[rel] = digest
        files.update(tfds_metadata.write(root, recipe.stem, table, plan.classes, o.size, outputs["tfrecord"]))
    skipped = places.skipped + (regroup.skipped if regroup else [])
    return {"counts": places.counts(), "outputs": outputs, "files": files, "skipped": skipped}


def settle(places: _Places, regroup: Regroup) -> None:
    """The near-duplicate pass over the placed pictures (the module doc, step 2)."""
    splits = places.plan.splits
    while True:
        remove, gather = regroup.round(places.take_fresh(), places.at)
        if not remove and not gather:
            break
        grouped = regroup.grouped  # never a partner of a swap: it would leave its own group
        aside = {places.where[n]: None for n in remove}
        for names in gather:
            aside.update({p: "near-duplicate of a picture in another split, which has no room to take it"
                          for p in _gather(places, [places.where[n] for n in names], grouped)})
        places.flush()
        ordered = sorted(aside, key=lambda p: (splits.index(p[0]), p[1]))
        for place in ordered:
            places.set_aside(*place, reason=aside[place])
        places.fill(ordered, near=True)
        if not aside:
            break  # only moves: the same pictures, hence the same groups, now each in one split
    short = []
    if any(rec is None for s in splits for rec in places.held[s]):  # else every class has all its places
        counts = places.counts()
        after = {c: sum(counts[s][c] for s in splits) for c in places.plan.classes}
        short = [c for c in places.plan.classes if after[c] < places.plan.per_class]
    if short and not places.o.allow_short:
        raise DatakitError(
            f"{places.src}: {len(short)} class(es) have fewer than per_class {places.plan.per_class} images once "
            f"near-identical copies are set aside ({', '.join(short)}); nothing written (use allow_short to take "
            "what there is, or near_duplicates='keep')\n" + shortage_table(places.plan.classes, after, places.plan.per_class),
            param=("per_class", "allow_short", "near_duplicates"))
    regroup.finish(lambda name: places.where[name][0])


def _gather(places: _Places, members: list[tuple[str, int]], grouped: set[str]) -> list[tuple[str, int]]:
    """Move a group's members into one split: the split holding most of them (the earlier split on
    a tie) if it has enough ungrouped pictures of the class to swap with, else the next one.
    Returns the members to set aside when no split has room (only in tiny splits)."""
    splits = places.plan.splits
    label = places.label[members[0][0]][members[0][1]]
    held = {s: sum(1 for m in members if m[0] == s) for s in splits}
    order = sorted((s for s in splits if held[s]), key=lambda s: (-held[s], splits.index(s)))
    for target in order:
        away = [m for m in members if m[0] != target]
        partners = list(islice(((target, r) for r, rec in enumerate(places.held[target])
                                if rec is not None and places.label[target][r] == label and rec.name not in grouped),
                               len(away)))
        if len(partners) == len(away):
            for m, p in zip(away, partners):
                places.swap(m, p)
            return []
    return [m for m in members if m[0] != order[0]]
