"""What the near-duplicate pass costs in CPU, counted inside the build: a steadier figure than the
wall-time ratio of bench_build_utk.py, whose group/keep pairs move by +-10% on a noisy 2-core VM.

    python benchmarks/bench_neardup_pass.py [--source utk-like|PATH] [--rounds 5] [--workers 1] [--work DIR] [--json]

Builds the folder (the real dump, or the UTKFace-shaped synthetic one) with build-utk's defaults
(8 classes x 700, all three formats), by default in this process with one worker, so that every
piece runs here and is timed with the thread's CPU clock, in rounds of `near_duplicates="keep"`
and `"group"` (the order alternating). With `--workers N` (N > 1) the build runs as users run it,
N forked worker processes: the timers are inherited by the workers, each writes its totals to the
work folder after every chunk's summaries, and the build's CPU is that of every process (this
one's and its reaped children's). It reports, for each mode, the median CPU of the whole build,
and, for "group", the CPU spent in the pass's own code (the summaries of the decoded pixels, the
search and the rounds, the spares that replace set-aside pictures): its share of the build and
its cost per picture, each function's part; next to it the paired difference of whole-build CPU (group - keep), which
includes what the timers miss and the noise. Builds go to a tmpfs (/dev/shm) when there is one:
the figure is CPU, and the root file system's slow spells after mass deletions are not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build_utk import utk_like_source  # noqa: E402


PASS_FUNCTIONS = (  # (owner, function, what it does), every one timed
    ("Summaries", "add", "reduce each decoded picture (Summaries.add)"),
    ("Summaries", "done", "hash and thumbnail a chunk (Summaries.done)"),
    ("emit", "summarize", "a spare's summary (emit.fill)"),
    ("Regroup", "compare", "early search (Regroup.compare)"),
    ("layout", "settle", "rounds, moves and spares (layout.settle)"),
)


class PassTimers:
    """Thread-CPU timers around the pass's functions (one worker: they all run in this thread)."""

    def __init__(self, dump_dir: Path | None = None):
        from datakit.builder import emit, layout, neargroups

        self.dump_dir, self._pid = dump_dir, os.getpid()  # a forked worker writes its totals there
        self.total = 0.0
        self.by: dict[str, float] = {}  # the same CPU, by outermost function
        self._depth = 0  # settle calls compare, fill calls summarize: each CPU second counted once
        self._undo = []
        owners = {"Summaries": neargroups.Summaries, "Regroup": neargroups.Regroup, "layout": layout, "emit": emit}
        for owner, attr, _ in PASS_FUNCTIONS:
            self._wrap(owners[owner], attr)

    def _wrap(self, owner, attr):
        original = getattr(owner, attr)

        def timed(*a, **k):
            if self._depth:
                return original(*a, **k)
            self._depth += 1
            t = time.thread_time()
            try:
                return original(*a, **k)
            finally:
                spent = time.thread_time() - t
                self.total += spent
                self.by[attr] = self.by.get(attr, 0.0) + spent
                self._depth -= 1
                if attr in ("done", "summarize") and self.dump_dir and os.getpid() != self._pid:
                    (self.dump_dir / f"{os.getpid()}.json").write_text(json.dumps([self.total, self.by]))

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def reset(self) -> None:
        self.total, self.by = 0.0, {}
        for f in self.dump_dir.glob("*.json") if self.dump_dir else ():
            f.unlink()

    def collect(self) -> tuple[float, dict[str, float]]:
        """This process's totals plus those the workers wrote."""
        total, by = self.total, dict(self.by)
        for f in self.dump_dir.glob("*.json") if self.dump_dir else ():
            t, b = json.loads(f.read_text())
            total += t
            for k, v in b.items():
                by[k] = by.get(k, 0.0) + v
        return total, by

    def remove(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def summaries_cpu_per_wall() -> dict[int, float]:
    """CPU / wall of `neardup.summaries` in a loop, by batch size: above 1 means OpenBLAS woke its
    threads for the DCT products (they spin on cores the other worker processes need)."""
    import numpy as np

    from datakit.neardup import summaries

    out = {}
    time.sleep(1.0)  # OpenBLAS's threads spin for a while after numpy's import: not this figure
    for n in (1, 8, 32):
        batch = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(4000 // n):
            summaries(batch)
        out[n] = round((time.process_time() - c0) / (time.perf_counter() - w0), 2)
    return out


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the build's worker processes)."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def one_build(src: Path, dest: Path, mode: str, timers: PassTimers, workers: int) -> dict:
    from datakit.datasets import utk

    timers.reset()
    t0, c0 = time.perf_counter(), _cpu()
    m = utk.build(src, dest, per_class=700, workers=workers, near_duplicates=mode)
    cpu, wall = _cpu() - c0, time.perf_counter() - t0
    pictures = sum(sum(c.values()) for c in m["counts"].values())
    shutil.rmtree(dest)
    total, by = timers.collect()
    if workers > 1 and mode != "keep" and not by.get("done"):
        sys.exit("the workers' timers did not come back (workers not forked from this process?)")
    return {"wall_s": wall, "cpu_s": cpu, "pass_s": total, "pass_by": by, "pictures": pictures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="utk-like", help="utk-like (made in --work) or a folder PATH (e.g. the real dump)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="1: in this process; N > 1: N worker processes")
    ap.add_argument("--n", type=int, default=23708, help="utk-like: number of files")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one on /dev/shm, removed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shm = Path("/dev/shm")
    work = args.work or Path(tempfile.mkdtemp(prefix="dk-pass-", dir=shm if shm.is_dir() else None))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = utk_like_source(work, args.n, 0) if args.source == "utk-like" else Path(args.source)
        dumps = work / "timers"
        dumps.mkdir(exist_ok=True)
        timers = PassTimers(dumps if args.workers > 1 else None)
        runs: dict[str, list[dict]] = {"keep": [], "group": []}
        one_build(src, work / "warm", "group", timers, args.workers)  # imports, page cache
        for r in range(args.rounds):
            for mode in (("keep", "group") if r % 2 == 0 else ("group", "keep")):
                runs[mode].append(one_build(src, work / f"out-{mode}-{r}", mode, timers, args.workers))
                print(f"round {r + 1}/{args.rounds} {mode}: {runs[mode][-1]['cpu_s']:.2f} CPU s, "
                      f"pass {runs[mode][-1]['pass_s']:.3f} s", file=sys.stderr, flush=True)
        timers.remove()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    med = lambda mode, key: statistics.median(r[key] for r in runs[mode])  # noqa: E731
    pass_s, group_cpu = med("group", "pass_s"), med("group", "cpu_s")
    pictures = runs["group"][0]["pictures"]
    diffs = [g["cpu_s"] - k["cpu_s"] for g, k in zip(runs["group"], runs["keep"])]
    result = {
        "source": str(src), "rounds": args.rounds, "workers": args.workers, "pictures": pictures,
        "keep_cpu_median_s": round(med("keep", "cpu_s"), 3), "group_cpu_median_s": round(group_cpu, 3),
        "pass_cpu_median_s": round(pass_s, 3), "pass_share_of_group_build": round(pass_s / group_cpu, 4),
        "pass_us_per_picture": round(pass_s / pictures * 1e6, 1),
        "pass_by_function_median_s": {f: round(statistics.median(r["pass_by"].get(f, 0.0) for r in runs["group"]), 4)
                                      for _, f, _ in PASS_FUNCTIONS},
        "paired_cpu_diff_s": [round(d, 3) for d in diffs], "paired_cpu_diff_median_s": round(statistics.median(diffs), 3),
        "summaries_cpu_per_wall_by_batch": summaries_cpu_per_wall(),
        "keep_wall_median_s": round(med("keep", "wall_s"), 3), "group_wall_median_s": round(med("group", "wall_s"), 3),
    }
    if args.json:
        print(json.dumps(result))
        return
    how = "one worker (in this process)" if args.workers == 1 else f"{args.workers} worker processes"
    print(f"{src}: {pictures} pictures, {args.rounds} rounds, {how}")
    every = " (every process)" if args.workers > 1 else ""
    print(f"  build CPU{every}, median: keep {result['keep_cpu_median_s']:.2f} s, group {group_cpu:.2f} s")
    print(f"  the pass's own code (timed): {pass_s:.3f} s = {result['pass_share_of_group_build']:.1%} of the group "
          f"build, {result['pass_us_per_picture']:.1f} us a picture")
    for _, f, what in PASS_FUNCTIONS:
        print(f"    {what:45s} {result['pass_by_function_median_s'][f] * 1000:7.1f} ms")
    print(f"  paired CPU difference group - keep: median {result['paired_cpu_diff_median_s']:+.3f} s "
          f"({', '.join(f'{d:+.2f}' for d in diffs)})")
    print("  CPU / wall of the summaries by batch size (1 = no BLAS threads woken): "
          + ", ".join(f"{n}: {r}" for n, r in result["summaries_cpu_per_wall_by_batch"].items()))


if __name__ == "__main__":
    main()
