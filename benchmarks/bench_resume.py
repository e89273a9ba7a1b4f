"""Resuming a CIFAR-10 input pipeline: datakit's state vs a tf.data iterator checkpoint, side by side.

    python benchmarks/bench_resume.py [--train-per-batch 10000] [--epoch 3] [--batch 100] [--repeats 3] [--json]

Data: synthetic CIFAR-10-shaped binaries (`datakit.testing.synthetic_cifar.make_cifar10_dir`; 5 x
--train-per-batch training records in the official layout), so the figures need no download.

- datakit: `pipelines.cifar10(..., seed=0, repeat=True)`; its position is `pipeline.state()` (bytes:
  the length of its JSON); a restore is `pipelines.cifar10(..., resume=state)` plus the first batch.
- tf.data: the equivalent reference pipeline written the usual way (the split in memory,
  `shuffle(10000)`, per-image tutorial augmentation keyed by a seeded `Dataset.random`, batch,
  prefetch), checkpointed with `tf.train.Checkpoint(iterator=iter(ds)).save(...)` (bytes: the files
  on disk: it holds the shuffle buffer and the prefetched batches); a restore is building the same
  pipeline, `checkpoint.restore(...)` and the first batch.
Both restores include reading the CIFAR files. The position: batch --batch of epoch --epoch (reached
once by iterating the tf.data pipeline, which is what a tf.data checkpoint needs; datakit reaches it
by `state_at`, and --verify checks that datakit's resumed batch equals its uninterrupted one).
Timings are medians of --repeats runs, in the same process; the "fresh start" rows (no resume=) show
what building a datakit pipeline costs anyway (for impl=fast: the crop statistics and the XLA compile).
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

BATCH = 128
BUFFER = 10000


def tfdata_pipeline(data_dir, seed: int = 0):
    """The tutorial-style reference pipeline, checkpointable (stateless augmentation, seeded key stream)."""
    import tensorflow as tf

    from datakit.augment import Augment, reference_random
    from datakit.datasets import cifar

    images, labels = cifar.load(data_dir, split="train")
    aug = Augment()
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    ds = ds.shuffle(BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed + 1)))
    ds = ds.map(lambda el, r: (reference_random(aug, el[0], tf.stack([r, tf.constant(3, tf.int64)])), el[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE), len(labels) // BATCH


def checkpoint_bytes(prefix: str) -> int:
    folder = Path(prefix).parent
    return sum(f.stat().st_size for f in folder.iterdir() if f.name.startswith(Path(prefix).name) or f.name == "checkpoint")


def save_tfdata(data_dir, batches: int, where: Path) -> tuple[str, int]:
    import tensorflow as tf

    ds, _ = tfdata_pipeline(data_dir)
    it = iter(ds)
    for _ in range(batches):
        next(it)
    where.mkdir(parents=True, exist_ok=True)
    prefix = tf.train.Checkpoint(iterator=it).save(str(where / "ckpt"))
    return prefix, checkpoint_bytes(prefix)


def restore_tfdata(data_dir, prefix: str) -> float:
    import tensorflow as tf

    t0 = time.perf_counter()
    ds, _ = tfdata_pipeline(data_dir)
    it = iter(ds)
    tf.train.Checkpoint(iterator=it).restore(prefix).assert_consumed()
    next(it)[0].numpy()
    return time.perf_counter() - t0


def restore_datakit(data_dir, impl: str, state: dict | None) -> float:
    """resume=state + first batch (state None: a fresh start, the same build cost without a position)."""
    from datakit import pipelines

    t0 = time.perf_counter()
    p = pipelines.cifar10(data_dir, batch_size=BATCH, impl=impl, seed=0, repeat=True, device="cpu", resume=state)
    next(iter(p))[0].numpy()
    return time.perf_counter() - t0


def verify(data_dir, impl: str, position: int, state: dict) -> bool:
    """The resumed first batch equals the uninterrupted pipeline's batch at that position."""
    import numpy as np

    from datakit import pipelines

    def make(**kw):
        return pipelines.cifar10(data_dir, batch_size=BATCH, impl=impl, seed=0, repeat=True, device="cpu", **kw)

    want = None
    for i, (x, y) in enumerate(make()):
        if i == position:
            want = (x.numpy(), y.numpy())
            break
    got = next(iter(make(resume=state)))
    return bool(np.array_equal(got[0].numpy(), want[0]) and np.array_equal(got[1].numpy(), want[1]))


def run(args) -> dict:
    from datakit import pipelines
    from datakit.testing import synthetic_cifar

    tmp = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    synthetic_cifar.make_cifar10_dir(tmp / "data", train_per_batch=args.train_per_batch, test=10, seed=0)
    data = tmp / "data"
    steps = pipelines.cifar10(data, batch_size=BATCH, seed=0, device="cpu").steps_per_epoch
    position = args.epoch * steps + args.batch
    out = {"data": f"synthetic CIFAR-10-shaped binaries, {5 * args.train_per_batch} train images",
           "batch_size": BATCH, "shuffle_buffer": BUFFER, "steps_per_epoch": steps,
           "position": {"epoch": args.epoch, "batch": args.batch, "batches": position}}

    # sizes: a few batches in, and at the restore position
    few = 20
    p = pipelines.cifar10(data, batch_size=BATCH, seed=0, repeat=True, device="cpu")
    for _ in p.take(few):
        pass
    state_few = p.state()
    state_at = p.state_at(args.epoch, args.batch)
    _, ckpt_few = save_tfdata(data, few, tmp / "ckpt-few")
    t0 = time.perf_counter()
    prefix, ckpt_at = save_tfdata(data, position, tmp / "ckpt-at")
    reach = time.perf_counter() - t0
    out["bytes"] = {"datakit_state": {"after_20": len(json.dumps(state_few)), "at_position": len(json.dumps(state_at))},
                    "tfdata_checkpoint": {"after_20": ckpt_few, "at_position": ckpt_at}}
    out["bytes"]["ratio_at_position"] = ckpt_at / len(json.dumps(state_at))
    out["tfdata_seconds_to_reach_position_once"] = reach

    times = {"datakit_fast": [], "datakit_reference": [], "tfdata": [], "datakit_fast_fresh_start": [],
             "datakit_reference_fresh_start": []}
    for _ in range(args.repeats):
        times["datakit_fast_fresh_start"].append(restore_datakit(data, "fast", None))
        times["datakit_reference_fresh_start"].append(restore_datakit(data, "reference", None))
        times["tfdata"].append(restore_tfdata(data, prefix))
        times["datakit_fast"].append(restore_datakit(data, "fast", state_at))
        times["datakit_reference"].append(restore_datakit(data, "reference", state_at | {
            "options": {**state_at["options"], "impl": "reference"}}))
    med = {k: statistics.median(v) for k, v in times.items()}
    out["restore_seconds"] = {**med, "all": times}
    out["restore_ratio"] = {"tfdata_over_datakit_fast": med["tfdata"] / med["datakit_fast"],
                            "tfdata_over_datakit_reference": med["tfdata"] / med["datakit_reference"]}
    if args.verify:
        out["verified"] = {impl: verify(data, impl, position, state_at | {
            "options": {**state_at["options"], "impl": impl}}) for impl in ("fast", "reference")}
    return out


def render(r: dict) -> str:
    b, t = r["bytes"], r["restore_seconds"]
    lines = [f"{r['data']}; batch {r['batch_size']}, {r['steps_per_epoch']} batches/epoch; "
             f"position: epoch {r['position']['epoch']} batch {r['position']['batch']}",
             "",
             f"{'':34}{'after 20 batches':>18}{'at the position':>18}",
             f"{'datakit state (JSON)':34}{b['datakit_state']['after_20']:>16} B{b['datakit_state']['at_position']:>16} B",
             f"{'tf.data iterator checkpoint':34}{b['tfdata_checkpoint']['after_20']:>16} B"
             f"{b['tfdata_checkpoint']['at_position']:>16} B",
             f"{'ratio':34}{b['tfdata_checkpoint']['after_20'] / b['datakit_state']['after_20']:>17.0f}x"
             f"{b['ratio_at_position']:>17.0f}x",
             "",
             "restore at the position (build + restore + first batch, median):",
             f"  datakit fast (resume=)         {t['datakit_fast']:8.2f} s",
             f"  datakit reference (resume=)    {t['datakit_reference']:8.2f} s",
             f"  datakit fast, fresh start      {t['datakit_fast_fresh_start']:8.2f} s   (the build cost: crop statistics, XLA)",
             f"  datakit reference, fresh start {t['datakit_reference_fresh_start']:8.2f} s",
             f"  tf.data checkpoint restore     {t['tfdata']:8.2f} s   "
             f"({r['restore_ratio']['tfdata_over_datakit_fast']:.1f}x datakit fast, "
             f"{r['restore_ratio']['tfdata_over_datakit_reference']:.1f}x datakit reference)",
             f"  (reaching the position once to save the tf.data checkpoint: "
             f"{r['tfdata_seconds_to_reach_position_once']:.1f} s)"]
    if "verified" in r:
        lines.append(f"datakit resumed batch == uninterrupted batch: {r['verified']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-batch", type=int, default=10000, help="records per data_batch_N.bin (10000: full size)")
    ap.add_argument("--epoch", type=int, default=3)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-verify", dest="verify", action="store_false")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = run(args)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
