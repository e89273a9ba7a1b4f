"""How fast is `datakit doctor` on a full 8 x 700 build-utk output at 200 px, and how much memory?

    python benchmarks/bench_doctor.py [--work DIR] [--repeat 2]

Makes a synthetic UTKFace folder (700 pictures per race x gender cell, 200 px), builds it with
build-utk (all three formats: 5600 pictures each, about 730 MB on disk), then runs `doctor` in fresh
subprocesses, alternating 1 thread and all cores, and reports wall seconds and peak RSS (from
wait4) next to the same figures for a process that only imports the modules (the baseline), the
build time and the output size. It also times the near-duplicate search (`neardup.near_pairs`:
bands with lookup tables) against the brute-force all-pairs popcount on the same hashes. --work
keeps and reuses the build.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOCTOR = "from datakit import doctor; r = doctor.doctor({path!r}, workers={workers}); print(r['errors'], r['warnings'])"
IMPORTS = "import datakit.doctor, datakit.datasets.built, h5py, cv2, PIL.Image; print(0, 0)"


def run_child(code: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of `python -c code` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode().strip()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {code}")
    return wall, usage.ru_maxrss / 1024, out


def make_build(work: Path) -> tuple[Path, float | None]:
    from datakit.testing import synthetic
    from datakit.datasets import utk

    out = work / "build"
    if utk.is_complete_build(out):
        return out, None
    src = work / "src"
    if not src.exists():
        print("making 5600 synthetic 200 px UTKFace pictures ...", file=sys.stderr)
        synthetic.make_utk_folder(src, per_cell=700, seed=1, size=200)
    print("build-utk --per-class 700 --size 200 ...", file=sys.stderr)
    t0 = time.perf_counter()
    utk.build(src, out, per_class=700, size=200, seed=1, overwrite=True)
    return out, time.perf_counter() - t0


def near_dup_timing(build: Path) -> list[str]:
    from datakit import doctor, neardup
    from datakit.datasets import open_dataset

    src = open_dataset(build)
    hashes = {s: np.array([doctor.measure(it.rgb()).phash for it in src.items(s, "hdf5")], dtype=np.uint64)
              for s in src.splits}
    rng = np.random.default_rng(0)
    cases = [("8 x 700 build: val vs train", hashes["val"], hashes["train"]),
             ("random hashes, CIFAR-sized: 10000 vs 50000",
              rng.integers(0, 2**63, 10000, dtype=np.int64).astype(np.uint64) << np.uint64(1),
              rng.integers(0, 2**63, 50000, dtype=np.int64).astype(np.uint64) << np.uint64(1))]
    lines = []
    for what, a, b in cases:
        t0 = time.perf_counter()
        fast = neardup.near_pairs(a, b, neardup.NEAR_BITS)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        brute = 0
        for start in range(0, len(a), 256):  # all pairs, vectorized, in blocks
            brute += int((np.bitwise_count(a[start:start + 256, None] ^ b[None, :]) <= neardup.NEAR_BITS).sum())
        t_brute = time.perf_counter() - t0
        found = sum(len(js) for _, js in fast)
        assert found == brute, (found, brute)
        lines.append(f"  {what}: banded search {t_fast * 1000:.0f} ms, brute force {t_brute * 1000:.0f} ms "
                     f"(x{t_brute / t_fast:.1f}); {found} pairs within {neardup.NEAR_BITS} bits, same in both")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="folder for the synthetic source and build (kept, reused)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per setting")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-doctor-"))
    work.mkdir(parents=True, exist_ok=True)
    build, build_s = make_build(work)
    size = sum(p.stat().st_size for p in build.rglob("*") if p.is_file())
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores; build: {build} ({size / 1e6:.0f} MB: 5600 pictures x 3 formats)")
    if build_s is not None:
        print(f"build-utk of the 8 x 700 set at 200 px: {build_s:.1f} s")
    base = [run_child(IMPORTS) for _ in range(2)]
    base_rss = min(r[1] for r in base)
    print(f"baseline (python + imports only): {min(r[0] for r in base):.2f} s, peak RSS {base_rss:.0f} MiB")
    runs: dict[int, list[tuple[float, float, str]]] = {1: [], cores: []}
    for _ in range(args.repeat):
        for workers in runs:  # alternate settings so a noisy neighbour hits both alike
            runs[workers].append(run_child(DOCTOR.format(path=str(build), workers=workers)))
    for workers, rs in runs.items():
        walls = sorted(r[0] for r in rs)
        rss = max(r[1] for r in rs)
        errors, warnings = rs[0][2].split()
        print(f"doctor, {workers} thread(s): best {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s of "
              f"{len(walls)} runs ({', '.join(f'{w:.2f}' for w in walls)}), peak RSS {rss:.0f} MiB "
              f"(+{rss - base_rss:.0f} over the baseline, {size / 1e6 / max(rss - base_rss, 1):.0f}x less than "
              f"the data read); result {errors} errors, {warnings} warnings; "
              f"{3 * 5600 / walls[0]:.0f} records/s at best")
    if build_s is not None:
        best = min(r[0] for rs in runs.values() for r in rs)
        print(f"doctor / build-utk time: {best / build_s:.2f}")
    print("near-duplicate search (hashes within NEAR_BITS):")
    for line in near_dup_timing(build):
        print(line)


if __name__ == "__main__":
    main()
