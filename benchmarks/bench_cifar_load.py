"""Loading all 60,000 CIFAR-10 images from the binaries: `datakit.datasets.cifar.load` vs per-record loops.

Writes a full-size synthetic set (5 x 10,000 + 10,000 records, 184 MB, official layout) to a
temporary folder (deleted at the end), reads it once to warm the page cache, then times, side by
side in the same run and on the same files:
  - datakit.datasets.cifar.load (memory-mapped, one vectorized interleave per 10,000 records, all cores),
  - the same with workers=1,
  - a per-record Python loop, the way most loaders parse these files: read the label byte and the
    3072 pixel bytes of each record, np.frombuffer/reshape/transpose it, append, np.array at the end,
  - (--tf) tf.data.FixedLengthRecordDataset + per-record decode, iterated record by record in Python.
Every method's output is checked equal to datakit's. Prints min and median seconds and the ratios.

    python benchmarks/bench_cifar_load.py [--repeats 5] [--tf] [--dir EXISTING_DEST]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from datakit.datasets import cifar
from datakit.testing import synthetic_cifar

FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def per_record_loop(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in FILES:
        with open(folder / name, "rb") as f:
            while True:
                label = f.read(1)
                if not label:
                    break
                labels.append(label[0])
                images.append(np.frombuffer(f.read(3072), dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0))
    return np.array(images), np.array(labels, dtype=np.int64)


def datakit_load(dest: Path, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    train = cifar.load(dest, "train", workers=workers)
    test = cifar.load(dest, "test", workers=workers)
    return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])


def tf_per_record(dest: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for split in ("train", "test"):
        for image, label in cifar.records(dest, split, decode=True).as_numpy_iterator():
            images.append(image)
            labels.append(label)
    return np.array(images), np.array(labels, dtype=np.int64)


def datakit_load_one_array(dest: Path, workers: int | None = None):
    """What a caller of datakit gets per split, without the concatenation the comparison adds."""
    return cifar.load(dest, "train", workers=workers), cifar.load(dest, "test", workers=workers)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        out = None
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tf", action="store_true", help="also time tf.data record-by-record decoding (slow)")
    ap.add_argument("--dir", default=None, help="use an existing destination instead of writing a synthetic set")
    args = ap.parse_args(argv)

    tmp = None
    try:
        if args.dir:
            dest = Path(args.dir)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="datakit-bench-cifar-"))
            dest = tmp
            t0 = time.perf_counter()
            synthetic_cifar.make_cifar10_dir(dest, train_per_batch=10_000, test=10_000, seed=0)
            print(f"wrote a full-size synthetic CIFAR-10 set in {time.perf_counter() - t0:.1f} s: {dest}")
        _, folder = cifar.locate(dest, "cifar10")
        size = sum((folder / f).stat().st_size for f in FILES)
        for f in FILES:  # warm the page cache so every method reads from memory
            (folder / f).read_bytes()
        print(f"{size / 1e6:.0f} MB in {len(FILES)} files, {os.cpu_count()} cores, numpy {np.__version__}")

        ref = datakit_load(dest)
        n = len(ref[1])
        methods = [
            ("datakit.datasets.cifar.load (all cores)", lambda: datakit_load_one_array(dest), args.repeats),
            ("datakit.datasets.cifar.load (workers=1)", lambda: datakit_load_one_array(dest, workers=1), args.repeats),
            ("per-record Python loop (np.frombuffer per record)", lambda: per_record_loop(folder), args.repeats),
        ]
        if args.tf:
            methods.append(("tf.data FixedLengthRecordDataset, per-record iteration", lambda: tf_per_record(dest),
                            max(1, min(2, args.repeats))))
        results = {}
        for name, fn, repeats in methods:
            times, out = timed(fn, repeats)
            if isinstance(out[0], tuple):  # datakit per split
                out = (np.concatenate([out[0][0], out[1][0]]), np.concatenate([out[0][1], out[1][1]]))
            assert out[0].shape == (n, 32, 32, 3) and np.array_equal(out[0], ref[0]), name
            assert np.array_equal(out[1], ref[1]), name
            del out
            results[name] = times
            print(f"{name:<56} min {min(times):7.3f} s  median {statistics.median(times):7.3f} s  "
                  f"({n / statistics.median(times):,.0f} images/s)")
        fast = results["datakit.datasets.cifar.load (all cores)"]
        one = results["datakit.datasets.cifar.load (workers=1)"]
        print(f"\nall {n:,} images identical across methods")
        for name, times in results.items():
            if name.startswith("datakit"):
                continue
            print(f"datakit.datasets.cifar.load is {statistics.median(times) / statistics.median(fast):5.1f}x faster "
                  f"(median; min/min {min(times) / min(fast):5.1f}x; workers=1: "
                  f"{statistics.median(times) / statistics.median(one):5.1f}x) than: {name}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
