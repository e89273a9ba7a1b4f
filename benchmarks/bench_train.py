"""The reference trainers on synthetic data: accuracy, examples/s and input wait, side by side.

cifar10: the tutorial's network (`datakit.train.train_cifar10`) on learnable synthetic CIFAR-10
binaries (datakit.testing.synthetic_cifar; --cifar-train pictures, 2,000 test), --steps steps of --batch,
fed by the fast pipeline and by the reference pipeline in the same process: test precision@1,
examples/s, sec/batch, input-wait fraction and the fast/reference speed ratio.

utk: `small` (`datakit.train.train_utk`) on a build-utk output of synthetic UTKFace pictures
(datakit.testing.synthetic; --utk-per-class per class at --utk-size px, 10% validation), three runs side
by side with the trainer's epoch cap and early stopping: the defaults (flip + mild crop), the plain
recipe (--no-augment), and the --shuffle-labels control; with --seed-bad also the failing network
and `small`, 3 epochs each, on a small 96 px build (seed-bad is slow on a CPU).

    python benchmarks/bench_train.py [--steps 300] [--batch 128] [--repeats 2] [--only cifar|utk] [--seed-bad] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bench_cifar(tmp: Path, args) -> list[dict]:
    from datakit.testing.synthetic_cifar import make_cifar10_dir
    from datakit.train import train_cifar10

    data = tmp / "cifar"
    make_cifar10_dir(data, train_per_batch=args.cifar_train // 5, test=2000, seed=0)
    rows = []
    for rep in range(args.repeats):
        for impl in ("fast", "reference"):
            r = train_cifar10(data, steps=args.steps, batch_size=args.batch, impl=impl, seed=rep)
            rows.append({"impl": impl, "repeat": rep, **{k: r[k] for k in (
                "test_accuracy", "examples_per_sec", "sec_per_batch", "input_wait_fraction", "final_loss",
                "stuck_at_chance", "seconds")}})
            print(f"cifar10 impl={impl:<9} rep {rep}: precision@1 {r['test_accuracy']:.4f} after {args.steps} steps, "
                  f"{r['examples_per_sec']:.0f} examples/s, {r['sec_per_batch'] * 1000:.1f} ms/batch, "
                  f"input wait {r['input_wait_fraction']:.1%}, {r['seconds']:.0f} s", file=sys.stderr)
    return rows


def _utk_build(tmp: Path, per_class: int, size: int, name: str) -> Path:
    from datakit.testing import synthetic
    from datakit.datasets import utk

    src = tmp / f"{name}-src"
    synthetic.make_utk_folder(src, per_cell=per_class, seed=0, size=size)
    out = tmp / name
    utk.build(src, out, per_class=per_class, size=size, seed=0, val_fraction=0.1, formats=("tfrecord",))
    return out


def bench_utk(tmp: Path, args) -> list[dict]:
    from datakit.train import train_utk

    build = _utk_build(tmp, args.utk_per_class, args.utk_size, "utk")
    runs = [("defaults", {}), ("plain (--no-augment)", {"augment": False}),
            ("--shuffle-labels", {"shuffle_labels": True})]
    rows = []
    for rep in range(args.repeats):
        for name, kw in runs:
            r = train_utk(build, seed=rep, **({"epochs": args.epochs} if args.epochs else {}), **kw)
            rows.append({"run": name, "repeat": rep, **{k: r[k] for k in (
                "val_accuracy", "train_accuracy", "best_epoch", "epochs", "final_loss", "stuck_at_chance",
                "examples_per_sec", "input_wait_fraction", "seconds")}})
            print(f"utk small {name:<21} rep {rep}: val {r['val_accuracy']:.3f} (best epoch {r['best_epoch']} of "
                  f"{r['epochs']}), train {r['train_accuracy']:.3f}, stuck {r['stuck_at_chance']}, "
                  f"{r['examples_per_sec']:.0f} examples/s, input wait {r['input_wait_fraction']:.1%}, "
                  f"{r['seconds']:.0f} s", file=sys.stderr)
    if args.seed_bad:
        small_build = _utk_build(tmp, 20, 96, "utk96")
        for name, model in (("seed-bad", "seed-bad"), ("small", "small")):
            r = train_utk(small_build, model_name=model, epochs=3, seed=0, patience=3)
            rows.append({"run": f"{name} @96px, 20/class", "repeat": 0, **{k: r[k] for k in (
                "val_accuracy", "train_accuracy", "best_epoch", "epochs", "final_loss", "stuck_at_chance",
                "examples_per_sec", "input_wait_fraction", "seconds")}})
            print(f"utk {name} @96px: val {r['val_accuracy']:.3f}, final loss {r['final_loss']:.3f}, "
                  f"stuck {r['stuck_at_chance']}, {r['examples_per_sec']:.1f} examples/s, {r['seconds']:.0f} s",
                  file=sys.stderr)
    return rows


def summarize(rows: list[dict], key: str, fields: tuple[str, ...]) -> dict:
    out = {}
    for row in rows:
        out.setdefault(row[key], {f: [] for f in fields})
        for f in fields:
            out[row[key]][f].append(row[f])
    return {k: {f: statistics.median(v[f]) for f in fields} for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("cifar", "utk"), default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cifar-train", type=int, default=10000, help="synthetic CIFAR-10 training pictures")
    ap.add_argument("--utk-per-class", type=int, default=100)
    ap.add_argument("--utk-size", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=None, help="utk epoch cap (default: the trainer's, 30)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed-bad", action="store_true", help="also train seed-bad (and small) on a 96 px build")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import tensorflow as tf

    result = {"machine": {"cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU")),
                          "tensorflow": tf.__version__}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        if args.only in (None, "cifar"):
            rows = bench_cifar(tmp, args)
            med = summarize(rows, "impl", ("test_accuracy", "examples_per_sec", "input_wait_fraction"))
            result["cifar10"] = {"steps": args.steps, "batch": args.batch, "train_pictures": args.cifar_train,
                                 "runs": rows, "median": med,
                                 "fast_over_reference": med["fast"]["examples_per_sec"]
                                 / med["reference"]["examples_per_sec"]}
        if args.only in (None, "utk"):
            rows = bench_utk(tmp, args)
            from datakit.train import UTK_EPOCHS

            result["utk"] = {"per_class": args.utk_per_class, "size": args.utk_size,
                             "epochs": args.epochs or UTK_EPOCHS,
                             "runs": rows, "median": summarize(rows, "run", ("val_accuracy", "train_accuracy",
                                                                             "best_epoch", "examples_per_sec"))}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"machine: {result['machine']}")
    if "cifar10" in result:
        c = result["cifar10"]
        print(f"\ncifar10 tutorial net, synthetic CIFAR-10 ({c['train_pictures']} train / 2000 test), "
              f"{c['steps']} steps of {c['batch']}, median of {args.repeats}:")
        print(f"  {'pipeline':<10} {'precision@1':>11} {'examples/s':>11} {'input wait':>10}")
        for impl, m in c["median"].items():
            print(f"  {impl:<10} {m['test_accuracy']:>11.4f} {m['examples_per_sec']:>11.0f} "
                  f"{m['input_wait_fraction']:>10.1%}")
        print(f"  training speed fast / reference: {c['fast_over_reference']:.2f}x")
    if "utk" in result:
        u = result["utk"]
        print(f"\nutk, synthetic build ({u['per_class']}/class, {u['size']} px, 10% val), up to {u['epochs']} epochs "
              f"(seed-bad/small @96px: 3), "
              f"median of {args.repeats}:")
        print(f"  {'run':<26} {'val acc':>7} {'train acc':>9} {'best ep':>7} {'examples/s':>10}")
        for name, m in u["median"].items():
            print(f"  {name:<26} {m['val_accuracy']:>7.3f} {m['train_accuracy']:>9.3f} {m['best_epoch']:>7.1f} "
                  f"{m['examples_per_sec']:>10.1f}")
    print(f"\ntotal {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
