"""Augmentation pipelines side by side: the tutorial's per-image reference, the fused fast path, the Keras peers.

Runs `datakit.bench.bench_aug` (what `datakit bench-aug` runs) on CIFAR-10-sized synthetic data
(50,000 CIFAR-shaped 32x32 images, or --data DIR for the real CIFAR-10 train split), batches of
128, for each --threads setting, --repeats times. Every run puts these side by side, in one
process, with alternating timed windows:

- reference:  per image in Dataset.map(num_parallel_calls=threads), the tf.image ops one by one
- fast:       index batches gathered from the in-memory array, one XLA-fused call per 8 batches
- fast-nojit: the same batch function as plain TF ops (what the XLA fusion buys)
- crop+cast:  the bound: a gather + cast to float32 of the same batches (one memory pass)
- keras-layers:  stock Keras RandomCrop, RandomFlip, RandomBrightness, RandomContrast + per-image
                 standardization, per batch in tf.data (as the Keras docs show)
- datakit-layer: datakit.layers.AugmentLayer in a model's forward pass (model(x, training=True))

for each --consumers setting (graph: batches taken in a compiled loop, as model.fit takes them;
python: next() in a Python loop; see datakit.bench).

and prints images/s, fast / reference, fast as a fraction of the bound, and fast and the datakit
layer over the Keras layers.

    python benchmarks/bench_aug.py [--threads 16,2] [--consumers graph,python] [--repeats 2] [--images 50000]
        [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="16,2", help="comma-separated thread settings")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--consumers", default="graph", help="comma-separated among graph, python")
    ap.add_argument("--repeats", type=int, default=2, help="whole comparisons per thread setting")
    ap.add_argument("--rounds", type=int, default=3, help="timed windows per implementation per comparison")
    ap.add_argument("--min-seconds", type=float, default=1.5)
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--data", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--impl", default="reference,fast,fast-nojit,crop+cast,keras-layers,datakit-layer")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from datakit import bench
    from datakit_cli.bench_aug import render

    runs = []
    settings = [(int(t), c) for c in args.consumers.split(",") for t in args.threads.split(",")]
    for threads, consumer in settings:
        for rep in range(args.repeats):
            r = bench.bench_aug(threads=threads, batch=args.batch, steps=20, data=args.data,
                                impls=args.impl.split(","), device=args.device, rounds=args.rounds,
                                min_seconds=args.min_seconds, images=args.images, seed=rep, consumer=consumer)
            runs.append(r)
            if not args.json:
                print(f"\n== threads {threads}, {r['consumer']} consumer, comparison {rep + 1}/{args.repeats}")
                print(render(r))
                sys.stdout.flush()
    summary = {}
    keys = ("fast_over_reference", "fast_of_bound", "fast_over_keras_layers", "layer_over_keras_layers")
    for r in runs:
        s = summary.setdefault(f"{r['threads']} threads, {r['consumer']} consumer", {key: [] for key in keys})
        for key in keys:
            if key in r:
                s[key].append(r[key])
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}))
        return 0
    print("\nsummary (each comparison in one process, side by side)")
    for threads, s in summary.items():
        parts = []
        if s["fast_over_reference"]:
            parts.append(f"fast / reference = {', '.join(f'{v:.1f}x' for v in s['fast_over_reference'])} "
                         f"(median {statistics.median(s['fast_over_reference']):.1f}x)")
        if s["fast_of_bound"]:
            parts.append(f"fast at {', '.join(f'{100 * v:.0f}%' for v in s['fast_of_bound'])} of the crop+cast bound")
        for key, label in (("fast_over_keras_layers", "fast / keras-layers"),
                           ("layer_over_keras_layers", "datakit-layer / keras-layers")):
            if s[key]:
                parts.append(f"{label} = {', '.join(f'{v:.1f}x' for v in s[key])} (median {statistics.median(s[key]):.1f}x)")
        print(f"  {threads}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
