"""build-utk (and `datakit build`) vs the classic hand-written UTKFace preparation, on the same folder.

The classic script (the way most UTKFace tutorials prepare the data): group the files into
race x gender lists from their names, take the first N of each, cv2.imread + cv2.resize each
one into a list, np.array it, and pickle (X, y). datakit: `datakit build-utk --per-class N`
writing class folders, TFRecord shards and HDF5 files; with `--tools`, also the generic builder
on the same folder (`build --labels pattern`) and on the same pictures laid out as class folders
(`build --labels folders`, hard links made once in --work).

Sources: `synthetic` (700 per race x gender cell, 5 races: 7,000 small-pattern 200x200 JPEGs, the
older figures), `utk-like` (23,708 files shaped like the real dump: datakit.testing.utk_like, made
once in --work) or a folder PATH (the real dump). Every tool builds the same races (default
0-3: 8 classes, 5,600 pictures at --per-class 700; the classic script is told the races too).

All run as separate processes with a warm page cache, in rounds (every tool once, the order
rotated from round to round), `--repeats` rounds, each run writing to a new destination (`settle` says what happens
between runs, and why). The script prints best and median wall time and the peak resident memory
of the largest process (worker processes included) for each tool, and their ratios to the classic
script; `--scale` repeats the synthetic comparison at smaller per-class counts.

    python benchmarks/bench_build_utk.py [--source synthetic|utk-like|PATH] [--tools classic,build-utk,...|all]
        [--per-class 700] [--races 0,1,2,3] [--repeats 3] [--work DIR] [--quiet-s 420] [--json]

For the near-duplicate pass's cost (`--tools near-duplicates`), `--work` on a tmpfs (/dev/shm)
takes the root file system's slow spells after deletions (`quiet`) out of the pairs: the pass is
CPU, and on this VM those spells move a disk build's wall time by more than the pass costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
races = sys.argv[5].split(",") if len(sys.argv) > 5 else None
groups = {}
for name in os.listdir(src):
    parts = name.split("_")
    if len(parts) < 4 or (races and parts[2] not in races):
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


def run_measured(cmd: list[str]) -> tuple[float, float, float, float]:
    """Wall seconds, the peak RSS (MiB) of the largest process of the command's process tree
    (worker processes included: /proc VmHWM polled every 10 ms, and wait4's ru_maxrss), and the
    CPU seconds (user + system) of the whole tree (worker processes are waited for by their parent,
    so wait4 counts them): on a shared machine, CPU time moves less than wall time; and the user
    CPU seconds alone (system time here swings with the file system's state, see `quiet`)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, user_before = kids.ru_utime + kids.ru_stime, kids.ru_utime
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
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = kids.ru_utime + kids.ru_stime - before
    return wall, max(peak, usage.ru_maxrss / 1024), cpu, kids.ru_utime - user_before


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


QUIET_US = 100  # about 0.04 ms when quiet here (at 0.2 ms, runs right after a mass deletion started slow)


def quiet(outs: Path, limit_s: float) -> float:
    """Wait (up to `limit_s`) until creating a file costs under QUIET_US; returns the last probe.

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
        if cost < QUIET_US or time.monotonic() - start > limit_s:
            break
        print(f"creating a file costs {cost:.0f} us here (recent mass deletion?); waiting", file=sys.stderr)
        time.sleep(15)
    if cost >= QUIET_US:
        print(f"warning: file creation still costs {cost:.0f} us; build-utk figures are pessimistic",
              file=sys.stderr)
    return cost


PATTERN = "{age:int}_{gender:0..1}_{race:0..4}_*"
RACE_NAMES = ("white", "black", "asian", "indian", "others")
GENDER_NAMES = ("male", "female")
TOOLS = ("classic", "build-utk", "build-utk-keep", "build-pattern", "build-folders")
PASS_ONLY = ("build-utk", "build-utk-keep")  # --tools near-duplicates


def utk_like_source(work: Path, n: int, seed: int) -> Path:
    """The UTKFace-shaped synthetic folder (datakit.testing.utk_like), made once and reused; its
    description lands next to it when complete (so the folder itself holds only pictures)."""
    src, done = work / f"utk-like-{n}-s{seed}", work / f"utk-like-{n}-s{seed}.json"
    if not done.exists():
        from datakit.testing.utk_like import make_utk_like_folder

        remove(src)
        t0 = time.perf_counter()
        info = make_utk_like_folder(src, n=n, seed=seed)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"made {n} UTKFace-shaped pictures ({info['bytes'] / 1e6:.0f} MB) in {info['seconds']} s",
              file=sys.stderr)
        done.write_text(json.dumps(info))
    return src


def class_folders(work: Path, src: Path, races: tuple[int, ...]) -> Path:
    """SRC's pictures as <race>_<gender>/<name> class folders (hard links, copies across file
    systems), made once: the input of `datakit build --labels folders`. Names whose race or
    gender field does not parse, or whose race is not in `races`, are left out."""
    dest = work / f"classdirs-{src.name}-{''.join(map(str, races))}"
    done = dest.with_suffix(".done")
    if done.exists():
        return dest
    remove(dest)
    t0, n = time.perf_counter(), 0
    for name in sorted(os.listdir(src)):
        parts = name.split("_")
        if len(parts) < 4 or not (parts[1].strip().isdigit() and parts[2].strip().isdigit()):
            continue
        race, gender = int(parts[2]), int(parts[1])
        if race not in races or gender not in (0, 1):
            continue
        folder = dest / f"{RACE_NAMES[race]}_{GENDER_NAMES[gender]}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / name, folder / name)
        except OSError:
            shutil.copyfile(src / name, folder / name)
        n += 1
    done.write_text(f"{n}\n")
    print(f"laid out {n} pictures as class folders in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return dest


def tool_command(tool: str, src: Path, classdirs: Path | None, dest: Path, per_class: int,
                 races: tuple[int, ...], size: int) -> list[str]:
    cli = [sys.executable, "-m", "datakit_cli.main"]
    if tool == "classic":
        return [sys.executable, "-c", CLASSIC, str(src), str(dest), str(per_class), str(size),
                ",".join(map(str, races))]
    if tool in ("build-utk", "build-utk-keep"):  # -keep: no near-duplicate grouping (its cost, side by side)
        return cli + ["build-utk", str(src), str(dest), "--per-class", str(per_class),
                      "--races", ",".join(map(str, races)), "--size", str(size), "--json"] + \
            (["--near-duplicates", "keep"] if tool == "build-utk-keep" else [])
    where = (f"race={races[0]}..{races[-1]}" if list(races) == list(range(races[0], races[-1] + 1))
             else "race=" + ",".join(map(str, races)))
    if tool == "build-pattern":
        return cli + ["build", str(src), str(dest), "--labels", "pattern", "--pattern", PATTERN,
                      "--class-by", "race,gender", "--where", where, "--per-class", str(per_class), "--json"]
    if tool == "build-folders":
        return cli + ["build", str(classdirs), str(dest), "--labels", "folders", "--per-class", str(per_class),
                      "--json"]
    raise SystemExit(f"--tools: unknown tool {tool!r} (among {', '.join(TOOLS)})")


def available(tool: str) -> bool:
    """build-pattern and build-folders need `datakit build`, which may not exist yet."""
    if not tool.startswith("build-") or tool.startswith("build-utk"):
        return True
    probe = subprocess.run([sys.executable, "-m", "datakit_cli.main", "build", "--help"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def compare(work: Path, src: Path, tools: list[str], per_class: int, races: tuple[int, ...], repeats: int,
            size: int, quiet_s: float) -> dict:
    """Every tool once per round, `repeats` rounds (alternating pairs), the order rotated each round."""
    warm(src)
    classdirs = class_folders(work, src, races) if "build-folders" in tools else None
    runs: dict[str, list] = {t: [] for t in tools}
    wrote: dict[str, int] = {}
    outs = Path(tempfile.mkdtemp(dir=work, prefix="outputs-"))  # removed by main, after every comparison
    probe_us = quiet(outs, quiet_s)
    for i in range(repeats):
        # the order turns each round: whichever tool runs right after the classic script pays for
        # the deletion of its 672 MB pickle (settle) in block frees; rotating spreads it over all
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            dest = outs / (f"data-{i}.pkl" if tool == "classic" else f"{tool}-{i}")
            settle(work)
            runs[tool].append(run_measured(tool_command(tool, src, classdirs, dest, per_class, races, size)))
            wrote[tool] = sum(p.stat().st_size for p in [dest, *dest.rglob("*")] if p.is_file())
            wall, peak, cpu, _ = runs[tool][-1]
            print(f"round {i + 1}/{repeats} {tool}: {wall:.2f} s, {peak:.0f} MiB, {cpu:.2f} CPU s", file=sys.stderr)
    rows = {}
    for tool, v in runs.items():
        walls = [w for w, *_ in v]
        rows[tool] = {"best_s": round(min(walls), 2), "median_s": round(statistics.median(walls), 2),
                      "cpu_median_s": round(statistics.median(c for _, _, c, _ in v), 2),
                      "user_median_s": round(statistics.median(u for *_, u in v), 2),
                      "peak_mib": round(max(m for _, m, *_ in v)), "wrote_mb": round(wrote[tool] / 1e6),
                      "runs": [[round(w, 3), round(m, 1), round(c, 2), round(u, 2)] for w, m, c, u in v]}
    base = rows.get("classic")  # absent with --tools near-duplicates: the pass's cost alone
    for tool, r in rows.items() if base else ():
        r["time_ratio"] = round(r["best_s"] / base["best_s"], 3)
        r["median_time_ratio"] = round(r["median_s"] / base["median_s"], 3)
        r["memory_ratio"] = round(r["peak_mib"] / base["peak_mib"], 3)
        r["cpu_ratio"] = round(r["cpu_median_s"] / base["cpu_median_s"], 3)
    out = {"source": str(src), "files": sum(1 for _ in os.scandir(src)), "per_class": per_class,
           "races": list(races), "size": size, "repeats": repeats, "create_us_before_runs": round(probe_us),
           "tools": rows}
    if "build-utk" in runs and "build-utk-keep" in runs:
        out["near_duplicate_cost"] = near_cost(runs["build-utk"], runs["build-utk-keep"])
    return out


def near_cost(grouped: list, keep: list) -> dict:
    """The near-duplicate pass's cost: build-utk over build-utk --near-duplicates keep, round by
    round (the two ran minutes apart at most, in the same round), and the median of those ratios."""
    keys = (("wall", 0), ("cpu", 2), ("user", 3))
    ratios = {key: [g[i] / k[i] for g, k in zip(grouped, keep)] for key, i in keys}
    diffs = {key: [g[i] - k[i] for g, k in zip(grouped, keep)] for key, i in keys}  # the pass in seconds
    return {f"{key}_ratios": [round(r, 3) for r in v] for key, v in ratios.items()} | \
        {f"median_{key}_ratio": round(statistics.median(v), 3) for key, v in ratios.items()} | \
        {f"median_{key}_diff_s": round(statistics.median(v), 3) for key, v in diffs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="synthetic",
                    help="synthetic (700-per-cell fixture, the older figures), utk-like (a folder shaped like the "
                         "real UTKFace dump, made in --work) or a folder PATH (e.g. the real dump)")
    ap.add_argument("--tools", default="classic,build-utk",
                    help=f"comma-separated among {', '.join(TOOLS)} (classic always runs; 'all' for every one; "
                         "'near-duplicates' for build-utk and build-utk-keep alone: the pass's cost, more rounds "
                         "in the same time)")
    ap.add_argument("--per-class", type=int, default=700)
    ap.add_argument("--races", default=None, help="races built by every tool (default 0,1,2,3; 0-4 for synthetic)")
    ap.add_argument("--scale", default="", help="synthetic only: also measure at these per-class counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--n", type=int, default=23708, help="utk-like: number of files")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--quiet-s", type=float, default=420.0,
                    help="at most this long, wait for file creation to be fast before the first run (see `quiet`)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    tools = TOOLS if args.tools == "all" else PASS_ONLY if args.tools == "near-duplicates" else \
        tuple(dict.fromkeys(["classic", *args.tools.split(",")]))
    for tool in tools:
        if tool not in TOOLS:
            raise SystemExit(f"--tools: unknown tool {tool!r} (among {', '.join(TOOLS)})")
    missing = [t for t in tools if not available(t)]
    if missing:
        print(f"skipping {', '.join(missing)}: `datakit build` is not available here", file=sys.stderr)
        tools = tuple(t for t in tools if t not in missing)
    default_races = "0,1,2,3,4" if args.source == "synthetic" else "0,1,2,3"
    races = tuple(int(r) for r in (args.races or default_races).split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-utk-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.source == "synthetic":
            counts = sorted({args.per_class, *(int(x) for x in args.scale.split(",") if x)})
            sources = []
            for n in counts:
                src = work / f"utk-{n}"
                if not src.exists():
                    t0 = time.perf_counter()
                    made = make_folder(src, n)
                    print(f"made {made} synthetic pictures in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                sources.append((src, n))
        elif args.source == "utk-like":
            sources = [(utk_like_source(work, args.n, 0), args.per_class)]
        else:
            sources = [(Path(args.source), args.per_class)]
        results = [compare(work, src, list(tools), n, races, args.repeats, args.size, args.quiet_s)
                   for src, n in sources]
    finally:  # deletions last: they would slow the next comparison's file creation (see `quiet`)
        for outs in work.glob("outputs-*"):
            remove(outs)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    info = {"cpus": os.cpu_count(), "results": results}
    if args.json:
        print(json.dumps(info))
        return
    for r in results:
        print(f"{r['source']}: {r['files']} files, --per-class {r['per_class']}, races {r['races']} "
              f"({os.cpu_count()} cores; {r['repeats']} rounds: best / median wall, max peak RSS)")
        print(f"{'tool':<14} {'best s':>7} {'median s':>9} {'ratio best/median':>18} {'peak MiB':>9} "
              f"{'mem ratio':>9} {'CPU s':>6} {'CPU ratio':>9} {'wrote MB':>9}")
        for tool, t in r["tools"].items():
            t = {"time_ratio": "-", "median_time_ratio": "-", "memory_ratio": "-", "cpu_ratio": "-"} | t
            print(f"{tool:<14} {t['best_s']:>7} {t['median_s']:>9} {t['time_ratio']:>9} /{t['median_time_ratio']:>6} "
                  f"{t['peak_mib']:>9} {t['memory_ratio']:>9} {t['cpu_median_s']:>6} {t['cpu_ratio']:>9} "
                  f"{t['wrote_mb']:>9}")
        if "near_duplicate_cost" in r:
            c = r["near_duplicate_cost"]
            print(f"near-duplicate pass (build-utk / build-utk-keep, per round): wall {c['wall_ratios']}, CPU "
                  f"{c['cpu_ratios']}, user CPU {c['user_ratios']}; medians {c['median_wall_ratio']} / "
                  f"{c['median_cpu_ratio']} / {c['median_user_ratio']}; median differences {c['median_wall_diff_s']:+.3f} / "
                  f"{c['median_cpu_diff_s']:+.3f} / {c['median_user_diff_s']:+.3f} s")
    print("targets: time ratio <= 0.5 (datakit writes folders + TFRecord + HDF5; the script one pickle), "
          "near-duplicate pass a few percent of build-utk-keep's wall, "
          "memory ratio <= 0.25")


if __name__ == "__main__":
    main()
