"""The reference trainers: accuracy and wall time, side by side in one run.

utk (the issue's figures; give it the real dump): the build trainer's models on a build-utk
8 x 700 output at the default 200 px (10% validation, the default split), each run a fresh
`datakit train utk ... --json` process, for every seed (--seeds):
  compact   at its default size (64 px, resized on the fly), its default epochs;
  small     at --size 100 and at the build's 200 px, each under --small-limit of training;
  seed-bad  at --size 96 (its minimum is 94 px; at 200 px one epoch takes hours on a CPU), under
            --seed-bad-limit, to show the stuck-at-chance flag.
--utk DIR builds the real dump (a flat UTKFace folder) first; --build DIR reuses a build; with
neither, a synthetic UTKFace-like folder stands in (every model then does better than on the
real faces: the figures mean little, and the script says so).

cifar10: the tutorial's network on learnable synthetic CIFAR-10 binaries (no real CIFAR here),
fed by the fast and by the reference pipeline: test precision@1, examples/s, input wait.

    python benchmarks/bench_train.py --only utk --utk ~/data/UTKFace [--seeds 0,1,2] [--runs compact,small@100,...]
    python benchmarks/bench_train.py --only cifar [--steps 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


RUNS = ("compact", "small@100", "small@200", "seed-bad@96")
KEEP = ("val_accuracy", "train_accuracy", "best_epoch", "epochs", "final_loss", "stuck_at_chance", "parameters",
        "input_shape", "examples_per_sec", "input_wait_fraction", "train_seconds", "seconds", "time_limited",
        "per_class_accuracy")


def _utk_build(tmp: Path, args) -> tuple[Path, str]:
    """(build folder, what it is): --build as given, --utk built 8 x 700 at 200 px, else synthetic."""
    from datakit.datasets import utk

    if args.build:
        return Path(args.build), f"the build at {args.build}"
    out = tmp / "utk-build"
    if args.utk:
        utk.build(Path(args.utk).expanduser(), out, per_class=700, size=200, seed=0, formats=("tfrecord",))
        return out, f"the real UTKFace dump at {args.utk}, build-utk 8 x 700 at 200 px"
    from datakit.testing import synthetic

    src = tmp / "utk-src"
    synthetic.make_utk_folder(src, per_cell=args.synthetic_per_class, seed=0, size=200)
    utk.build(src, out, per_class=args.synthetic_per_class, size=200, seed=0, formats=("tfrecord",))
    return out, (f"SYNTHETIC UTKFace-like pictures ({args.synthetic_per_class}/class): not the real faces, "
                 "every model does better here; pass --utk for the real figures")


def _run_args(run: str, args) -> list[str]:
    model, _, size = run.partition("@")
    argv = ["--model", model] + (["--size", size] if size and size != "200" else [])
    if model == "small":
        argv += ["--time-limit", str(args.small_limit)]
    elif model == "seed-bad":
        argv += ["--time-limit", str(args.seed_bad_limit)]
    return argv


def train_process(build: Path, run: str, seed: int, args, out: Path) -> dict:
    """One `datakit train utk` process (what a user runs), its --json result and its wall time."""
    argv = [sys.executable, "-m", "datakit_cli.main", "train", "utk", "--data", str(build), "--seed", str(seed),
            "--out", str(out), "--restart", *_run_args(run, args), "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench_train: {' '.join(argv[2:])} failed ({done.returncode}): "
                         f"{done.stdout.strip()[-400:] or done.stderr.strip()[-400:]}")
    r = json.loads(done.stdout)
    return {"run": run, "seed": seed, "wall_seconds": round(wall, 1), **{k: r.get(k) for k in KEEP}}


def bench_utk(tmp: Path, args) -> tuple[list[dict], str]:
    build, what = _utk_build(tmp, args)
    print(f"utk: {what}", file=sys.stderr)
    rows = []
    for seed in args.seeds:
        for run in args.runs:
            r = train_process(build, run, seed, args, tmp / f"run-{run}-{seed}")
            rows.append(r)
            print(f"utk {run:<12} seed {seed}: val {r['val_accuracy']:.3f} (best epoch {r['best_epoch']} of "
                  f"{r['epochs']}{', time limit' if r['time_limited'] else ''}), train {r['train_accuracy']:.3f}, "
                  f"stuck {r['stuck_at_chance']}, {r['examples_per_sec']:.0f} examples/s, training "
                  f"{r['train_seconds']:.0f} s, process {r['wall_seconds']:.0f} s", file=sys.stderr)
    return rows, what


def summarize(rows: list[dict], key: str, fields: tuple[str, ...]) -> dict:
    out = {}
    for row in rows:
        out.setdefault(row[key], {f: [] for f in fields})
        for f in fields:
            out[row[key]][f].append(row[f])
    return {k: {f: statistics.median(v[f]) for f in fields} for k, v in out.items()}


def _seeds(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _runs(text: str) -> list[str]:
    runs = [v.strip() for v in text.split(",") if v.strip()]
    for run in runs:
        model, _, size = run.partition("@")
        if model not in ("compact", "small", "seed-bad") or (size and not size.isdigit()):
            raise argparse.ArgumentTypeError(f"expected MODEL or MODEL@SIZE (e.g. {','.join(RUNS)}), got {run!r}")
    return runs


def _stats(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
            "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def summarize_utk(rows: list[dict]) -> dict:
    out = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        out[run] = {"seeds": [r["seed"] for r in mine],
                    "val_accuracy": _stats([r["val_accuracy"] for r in mine]),
                    "train_seconds": _stats([r["train_seconds"] for r in mine]),
                    "wall_seconds": _stats([r["wall_seconds"] for r in mine]),
                    "epochs": _stats([r["epochs"] for r in mine]),
                    "parameters": mine[0]["parameters"], "input_shape": mine[0]["input_shape"],
                    "stuck_at_chance": [r["stuck_at_chance"] for r in mine],
                    "time_limited": [r["time_limited"] for r in mine],
                    "lowest_class": _lowest(mine)}
    return out


def _lowest(rows: list[dict]) -> dict:
    """The class with the lowest mean per-class accuracy over the seeds, and that accuracy."""
    per = {}
    for r in rows:
        for k, v in (r["per_class_accuracy"] or {}).items():
            if v is not None:
                per.setdefault(k, []).append(v)
    if not per:
        return {}
    worst = min(per, key=lambda k: statistics.fmean(per[k]))
    return {"class": worst, "accuracy": round(statistics.fmean(per[worst]), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("cifar", "utk"), default=None)
    ap.add_argument("--utk", default=None, help="a flat UTKFace folder (the real dump) to build 8 x 700 at 200 px")
    ap.add_argument("--build", default=None, help="an existing build-utk output to train on instead")
    ap.add_argument("--seeds", type=_seeds, default=[0, 1, 2])
    ap.add_argument("--runs", type=_runs, default=list(RUNS), help=f"MODEL[@SIZE],... (default: {','.join(RUNS)})")
    ap.add_argument("--small-limit", default="5m", help="training time limit of each small run (default: 5m)")
    ap.add_argument("--seed-bad-limit", default="3m", help="training time limit of each seed-bad run (default: 3m)")
    ap.add_argument("--synthetic-per-class", type=int, default=200, help="without --utk/--build: pictures per class")
    ap.add_argument("--steps", type=int, default=300, help="cifar10 steps")
    ap.add_argument("--batch", type=int, default=128, help="cifar10 batch")
    ap.add_argument("--cifar-train", type=int, default=10000, help="synthetic CIFAR-10 training pictures")
    ap.add_argument("--repeats", type=int, default=2, help="cifar10 repeats")
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
            rows, what = bench_utk(tmp, args)
            result["utk"] = {"data": what, "small_limit": args.small_limit, "seed_bad_limit": args.seed_bad_limit,
                             "runs": rows, "summary": summarize_utk(rows)}
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
        print(f"\nutk: {u['data']}; seeds {','.join(map(str, args.seeds))}; small limited to {u['small_limit']}, "
              f"seed-bad to {u['seed_bad_limit']} of training")
        print(f"  {'run':<12} {'params':>10} {'input':>8} {'val acc mean [min-max]':>24} {'epochs':>6} "
              f"{'train s':>8} {'process s':>9}  stuck  lowest class")
        for run, m in u["summary"].items():
            va = m["val_accuracy"]
            low = m["lowest_class"]
            print(f"  {run:<12} {m['parameters']:>10,} {m['input_shape'][0]:>5} px {va['mean']:>8.3f} "
                  f"[{va['min']:.3f}-{va['max']:.3f}]   {m['epochs']['mean']:>6.1f} {m['train_seconds']['mean']:>8.0f} "
                  f"{m['wall_seconds']['mean']:>9.0f}  {sum(m['stuck_at_chance'])}/{len(m['stuck_at_chance'])}    "
                  f"{low.get('class', '-')} {low.get('accuracy', 0):.2f}")
    print(f"\ntotal {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
