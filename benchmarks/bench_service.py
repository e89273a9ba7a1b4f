"""bench-aug locally vs through the tf.data service with 1 and 2 local workers, side by side in one run.

    python benchmarks/bench_service.py [--images 10000] [--repeats 2] [--impls reference,fast]

Data: synthetic CIFAR-10 binaries (the service's workers read files). "local" is `datakit bench-aug`
as a trainer runs it without the service (the split loaded into memory, augmented in-process).
"local, from files" is the pipeline each worker runs (read the .bin files in chunks, decode, shuffle,
augment), run in this process without the service: the gap to the service rows is the transfer.
"service, N worker(s)" starts `datakit serve dispatcher` and N `datakit serve worker` processes on
127.0.0.1 (as tests/test_service.py does) and runs bench-aug --service against them: the figure is
the rate at which the trainer receives augmented batches. Each configuration gets a fresh cluster;
the sequence is repeated --repeats times (the machine is shared: noisy) and the median is reported.

On one machine the workers share the trainer's cores, so these figures only show the service's
overhead (serialization, gRPC transfer of float32 batches, a second process): scaling out pays off
when the workers run on other machines' CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from service_procs import Cluster  # noqa: E402


def files_rate(impl: str, data: str, kw: dict) -> float:
    """The workers' pipeline (CIFAR files -> decode -> augment) run in this process, timed like bench-aug."""
    import dataclasses

    from datakit import bench, pipelines
    from datakit.datasets.cifar.dataset import CifarDataset

    streamed = dataclasses.replace(CifarDataset(data).tf_source("train"), load=None)  # read as the workers do
    p = pipelines.from_source(streamed, "train", batch_size=kw["batch"], impl=impl, seed=0, repeat=True,
                              device="cpu", threads=kw["threads"])
    it = iter(p)
    for _ in range(10):
        next(it)
    rates = []
    for _ in range(kw["rounds"]):
        n, seconds = bench._window(it, kw["steps"], kw["min_seconds"])
        rates.append(n * kw["batch"] / seconds)
    return round(statistics.median(rates), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--impls", default="reference,fast")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    args = ap.parse_args()
    impls = tuple(x for x in args.impls.split(",") if x)

    from datakit import bench
    from datakit.testing import synthetic_cifar

    scratch = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data = scratch / "cifar10"
    synthetic_cifar.make_cifar10_dir(data, train_per_batch=args.images // 5, test=10, seed=0)
    kw = dict(threads=args.threads, batch=args.batch, steps=20, impls=impls, device="cpu", rounds=args.rounds,
              min_seconds=args.min_seconds, data=str(data))
    configs = [("local", 0), ("local, from files", -1), ("service, 1 worker", 1), ("service, 2 workers", 2)]
    rates: dict[tuple[str, str], list[float]] = {}
    print(f"bench_service: {args.images} synthetic CIFAR-10 images, batch {args.batch}, threads {args.threads}, "
          f"{bench.cores()} cores, {args.repeats} repeat(s)", flush=True)
    for rep in range(args.repeats):
        for name, workers in configs:
            t0 = time.perf_counter()
            if workers == 0:
                result = bench.bench_aug(**kw)
            elif workers < 0:  # what each worker runs, without the service
                result = {"results": [{"impl": impl, "images_per_sec": files_rate(impl, str(data), kw)}
                                      for impl in impls]}
            else:
                cluster = Cluster(scratch / f"logs-{rep}-{workers}", workers=workers)
                try:
                    result = bench.bench_aug(service=cluster.address, processing_mode="parallel_epochs", **kw)
                finally:
                    cluster.stop()
            for r in result["results"]:
                rates.setdefault((name, r["impl"]), []).append(r["images_per_sec"])
            figures = ", ".join(f"{r['impl']} {r['images_per_sec']:,.0f}" for r in result["results"])
            print(f"  run {rep + 1}: {name:<19} {figures} images/s ({time.perf_counter() - t0:.0f} s)", flush=True)

    print()
    print(f"{'configuration':<20}" + "".join(f"{impl + ' images/s':>22}{'vs local':>10}" for impl in impls))
    for name, _ in configs:
        row = f"{name:<20}"
        for impl in impls:
            med = statistics.median(rates[(name, impl)])
            base = statistics.median(rates[("local", impl)])
            row += f"{med:>22,.0f}{med / base:>9.2f}x"
        print(row)
    print(f"\n(medians of {args.repeats} run(s); each run's figure is bench-aug's median window. "
          f"Workers on this {bench.cores()}-core machine share its CPUs: the service rows show overhead, not scaling.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
