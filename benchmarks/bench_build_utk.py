"""build-utk vs the classic hand-written UTKFace preparation, side by side on the same folder.

The classic script (the way most UTKFace tutorials prepare the data): group the files into
race x gender lists from their names, take the first N of each, cv2.imread + cv2.resize each
one into a list, np.array it, and pickle (X, y). datakit: `datakit build-utk --per-class N`
writing class folders, TFRecord shards and HDF5 files.

Both run as separate processes on the same synthetic folder (700 per race x gender cell, 5 races:
7,000 200x200 JPEGs), with a warm page cache, alternating, `--repeats` times each, each run
writing to a new destination (`settle` says what happens between runs, and why). The script
prints wall time and the peak resident memory of the largest process (worker processes
included) for both, and their ratios; `--scale` repeats the comparison at smaller per-class
counts to show how memory grows with the data set.

    python benchmarks/bench_build_utk.py [--per-class 700] [--repeats 2] [--scale 350,700] [--work DIR]
        [--quiet-s 420] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSIC = r'''
import os, pickle, sys
import cv2, numpy as np
src, out, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
groups = {}
for name in os.listdir(src):
    parts = name.split("_")
    if len(parts) < 4:
        continue
    groups.setdefault((parts[2], parts[1]), []).append(name)
X, y = [], []
for label, key in enumerate(sorted(groups)):
    for name in groups[key][:n]:
        img = cv2.imread(os.path.join(src, name))
        if img is None:
            continue
        X.append(cv2.resize(img, (size, size)))
        y.append(label)
X = np.array(X)
y = np.array(y)
with open(out, "wb") as f:
    pickle.dump((X, y), f)
'''


def _descendants(root: int) -> list[int]:
    """root and its descendants, from /proc/PID/task/TID/children: a few small reads, so polling
    every 10 ms costs ~0.1 ms of CPU (scanning all of /proc cost ~2 ms, taken from the tools)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


def _hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MiB) of the largest process of the command's process tree
    (worker processes included: /proc VmHWM polled every 10 ms, and wait4's ru_maxrss)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max([peak] + [_hwm_mib(p) for p in _descendants(proc.pid)])
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, max(peak, usage.ru_maxrss / 1024)


def make_folder(dest: Path, per_cell: int) -> int:
    from datakit.testing import synthetic

    synthetic.make_utk_folder(dest, per_cell=per_cell, races=(0, 1, 2, 3, 4), seed=0, size=200)
    return sum(1 for _ in dest.iterdir())


def warm(folder: Path) -> None:
    for p in folder.iterdir():
        p.read_bytes()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def settle(work: Path) -> None:
    """Before each run: delete the earlier runs' large files and write back dirty pages.

    Why: on this VM, memory the guest has never used costs ~15 us per 4 KiB page on first touch
    (measured: 200-330 MB/s vs 2-4 GB/s for recycled pages), far more than on a normal machine;
    freeing the earlier outputs lets every run, of either tool, write into recycled memory.
    The small class-folder files are kept (see `quiet`). `sync` keeps one run's write-back out
    of the next."""
    for path in (p for outs in work.glob("outputs-*") for p in outs.rglob("*")):
        if path.is_file() and path.stat().st_size >= 1 << 20:
            path.unlink()
    os.sync()


def create_us(folder: Path, n: int = 300) -> float:
    """Microseconds to create (and write 7 kB to) one new file in `folder`; the files are kept."""
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    for i in range(n):
        (folder / f"{i}_0_0_20170109150557335.jpg.chip.jpg").write_bytes(b"x" * 7000)
    return (time.perf_counter() - t0) / n * 1e6


def quiet(outs: Path, limit_s: float) -> float:
    """Wait (up to `limit_s`) until creating a file costs under 0.2 ms; returns the last probe.

    Why: ext4 without a journal (this VM's root file system) skips every inode freed in the last
    60 s (360 s while its inode table block is dirty, which new files keep it) when it allocates
    a new one, one by one. Right after thousands of files were deleted (an earlier benchmark's
    cleanup, say) each new file costs ~0.8 ms instead of ~0.04 ms (measured), which would
    measure the deletion, not the tool that creates 7,000 files."""
    os.sync()
    start, probe = time.monotonic(), 0
    while True:
        cost = create_us(outs / f"probe-{probe}")
        probe += 1
        if cost < 200 or time.monotonic() - start > limit_s:
            break
        print(f"creating a file costs {cost:.0f} us here (recent mass deletion?); waiting", file=sys.stderr)
        time.sleep(15)
    if cost >= 200:
        print(f"warning: file creation still costs {cost:.0f} us; build-utk figures are pessimistic",
              file=sys.stderr)
    return cost


def compare(work: Path, per_class: int, repeats: int, size: int, quiet_s: float) -> dict:
    src = work / f"utk-{per_class}"
    if not src.exists():
        t0 = time.perf_counter()
        n = make_folder(src, per_class)
        print(f"made {n} synthetic pictures in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    warm(src)
    runs = {"classic": [], "datakit": []}
    wrote = {}
    outs = Path(tempfile.mkdtemp(dir=work, prefix="outputs-"))  # removed by main, after every comparison
    probe_us = quiet(outs, quiet_s)
    for i in range(repeats):
        pkl, build = outs / f"data-{i}.pkl", outs / f"build-{i}"
        classic = [sys.executable, "-c", CLASSIC, str(src), str(pkl), str(per_class), str(size)]
        datakit = [sys.executable, "-m", "datakit_cli.main", "build-utk", str(src), str(build),
                   "--per-class", str(per_class), "--races", "0,1,2,3,4", "--size", str(size), "--json"]
        for name, cmd, dest in (("classic", classic, pkl), ("datakit", datakit, build)):
            settle(work)
            runs[name].append(run_measured(cmd))
            wrote[name] = sum(p.stat().st_size for p in [dest, *dest.rglob("*")] if p.is_file())
    best = {k: min(w for w, _ in v) for k, v in runs.items()}
    median = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    peak = {k: max(m for _, m in v) for k, v in runs.items()}
    return {
        "per_class": per_class, "images": per_class * 10, "size": size,
        "classic_s": round(best["classic"], 2), "datakit_s": round(best["datakit"], 2),
        "time_ratio": round(best["datakit"] / best["classic"], 3),
        "classic_median_s": round(median["classic"], 2), "datakit_median_s": round(median["datakit"], 2),
        "median_time_ratio": round(median["datakit"] / median["classic"], 3),
        "classic_peak_mib": round(peak["classic"]), "datakit_peak_mib": round(peak["datakit"]),
        "memory_ratio": round(peak["datakit"] / peak["classic"], 3),
        "classic_wrote_mb": round(wrote["classic"] / 1e6), "datakit_wrote_mb": round(wrote["datakit"] / 1e6),
        "create_us_before_runs": round(probe_us), "all_runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=700)
    ap.add_argument("--scale", default="", help="also measure at these per-class counts (memory growth)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--quiet-s", type=float, default=420.0,
                    help="at most this long, wait for file creation to be fast before the first run (see `quiet`)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-utk-"))
    work.mkdir(parents=True, exist_ok=True)
    counts = sorted({args.per_class, *(int(x) for x in args.scale.split(",") if x)})
    try:
        results = [compare(work, n, args.repeats, args.size, args.quiet_s) for n in counts]
    finally:  # deletions last: they would slow the next comparison's file creation (see `quiet`)
        for outs in work.glob("outputs-*"):
            remove(outs)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    info = {"cpus": os.cpu_count(), "results": results}
    if args.json:
        print(json.dumps(info))
        return
    print(f"build-utk vs classic script ({os.cpu_count()} cores; {args.repeats} runs each: best and median "
          f"wall, max peak RSS)")
    print(f"{'images':>7} {'classic s':>14} {'datakit s':>14} {'ratio':>12} {'classic MiB':>12} "
          f"{'datakit MiB':>12} {'ratio':>6}")
    for r in results:
        print(f"{r['images']:>7} {r['classic_s']:>6} /{r['classic_median_s']:>6} {r['datakit_s']:>6} /"
              f"{r['datakit_median_s']:>6} {r['time_ratio']:>5} /{r['median_time_ratio']:>5} "
              f"{r['classic_peak_mib']:>12} {r['datakit_peak_mib']:>12} {r['memory_ratio']:>6}")
    print("targets: time ratio <= 0.5 (datakit writes folders + TFRecord + HDF5; the script one pickle), "
          "memory ratio <= 0.25, datakit memory flat as the data set grows")


if __name__ == "__main__":
    main()
