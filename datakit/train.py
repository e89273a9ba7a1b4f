"""The bundled reference trainers: `train_cifar10` (the TF tutorial's net) and `train_build` (any
builder output; `train_utk` is its first name). Each trainer is a small `Hyp` plus its data and
model; one loop (`fit`) and one run (`train`: check, fit, diagnose, write) serve both.

The loop is custom (a tf.function train step) instead of `model.fit` so each step can be
split into time spent waiting in `next(iterator)` and time spent computing: the input-wait
fraction says whether the input pipeline keeps the model fed. Both end with the
stuck-at-chance diagnosis (datakit.diagnose) and write into `out`: model.keras,
metrics.json, history.csv and TensorBoard logs (tensorboard/train, tensorboard/eval).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

import numpy as np

from datakit.atomic import write_text
from datakit.diagnose import diagnose
from datakit.errors import DatakitError
from datakit.progress import null_progress

# Tutorial figures (cifar10_train.py / cifar10.py).
TUTORIAL_SGD_LR = 0.1
TUTORIAL_DECAY_FACTOR = 0.1
TUTORIAL_EPOCHS_PER_DECAY = 350.0
CHECK_TARGET = 0.95


# ----------------------------------------------------------------------------- steps and timing


def make_steps(model, optimizer, from_logits: bool, ema=None, label_smoothing: float = 0.0):
    """(train_step, eval_step) as tf.functions.

    train_step(images, labels) -> (total loss incl. weight decay, cross-entropy, correct count);
    eval_step(images, labels) -> (summed cross-entropy, correct count, batch size).
    ema: an `Ema`, updated after every step. label_smoothing: the gradient follows the cross-entropy
    against smoothed one-hot targets; the reported cross-entropy is still against the true labels,
    so the stuck-at-chance test (loss near ln K) reads the same.
    """
    import keras
    import tensorflow as tf

    mean_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    sum_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction="sum")
    smoothed = (keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
                if label_smoothing else None)

    def correct(outputs, labels):
        hits = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    @tf.function(reduce_retracing=True)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            ce = mean_ce(labels, outputs)
            fitted = ce if smoothed is None else smoothed(tf.one_hot(labels, tf.shape(outputs)[-1]), outputs)
            total = fitted + tf.add_n(model.losses) if model.losses else fitted
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        if ema is not None:
            ema.update(model.trainable_variables, optimizer.iterations)
        return total, ce, correct(outputs, labels)

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        outputs = model(images, training=False)
        return sum_ce(labels, outputs), correct(outputs, labels), tf.shape(labels)[0]

    return train_step, eval_step


def timed_steps(train_step, iterator, limit: int | None = None):
    """Run train_step on batches from `iterator`; yield one record per step.

    `wait` is the time spent in next(iterator), `seconds` the whole step (the loss is read back,
    which waits for the step to finish, so compute is inside `seconds`).
    """
    done = 0
    while limit is None or done < limit:
        t0 = time.perf_counter()
        try:
            images, labels = next(iterator)
        except StopIteration:
            return
        t1 = time.perf_counter()
        total, ce, hits = train_step(images, labels)
        total = float(total)
        t2 = time.perf_counter()
        done += 1
        n = int(labels.shape[0])
        yield {"loss": total, "cross_entropy": float(ce), "accuracy": float(hits) / n, "examples": n,
               "wait": t1 - t0, "seconds": t2 - t0}


def evaluate(eval_step, dataset) -> dict:
    """Accuracy (precision@1) and mean cross-entropy over every example of `dataset`."""
    total_ce = hits = n = 0.0
    for images, labels in dataset:
        ce, c, b = eval_step(images, labels)
        total_ce += float(ce)
        hits += float(c)
        n += int(b)
    if n == 0:
        raise DatakitError("evaluation data set is empty")
    return {"accuracy": hits / n, "loss": total_ce / n, "examples": int(n)}


def input_wait(records: list[dict], skip: int = 1) -> dict:
    """Input-wait fraction, examples/s and s/batch over the steps after the first `skip` (warm-up:
    tracing and the first fill of the shuffle buffer)."""
    steady = records[skip:] if len(records) > skip else records
    seconds = sum(r["seconds"] for r in steady)
    wait = sum(r["wait"] for r in steady)
    examples = sum(r["examples"] for r in steady)
    return {"input_wait_fraction": wait / seconds if seconds > 0 else 0.0,
            "examples_per_sec": examples / seconds if seconds > 0 else 0.0,
            "sec_per_batch": seconds / len(steady) if steady else 0.0}


def overfit_one_batch(build_model, make_optimizer, images, labels, from_logits: bool, max_steps: int = 300,
                      target: float = CHECK_TARGET, every: int = 5) -> dict:
    """--check: can a fresh copy of the model fit one batch (>= target accuracy) within max_steps?"""
    model = build_model()
    train_step, eval_step = make_steps(model, make_optimizer(), from_logits)
    accuracy, steps = 0.0, 0
    t0 = time.perf_counter()
    for steps in range(1, max_steps + 1):
        train_step(images, labels)
        if steps % every == 0 or steps == max_steps:
            _, hits, n = eval_step(images, labels)
            accuracy = float(hits) / int(n)
            if accuracy >= target:
                break
    passed = accuracy >= target
    return {"passed": passed, "accuracy": accuracy, "steps": steps, "max_steps": max_steps, "target": target,
            "batch_size": int(labels.shape[0]), "seconds": round(time.perf_counter() - t0, 2),
            "line": f"check: {'PASS' if passed else 'FAIL'}: one batch of {int(labels.shape[0])} fitted to "
                    f"{accuracy:.1%} training accuracy in {steps} steps (target {target:.0%} within {max_steps})"}


# ----------------------------------------------------------------------------- outputs


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_model(model, path: Path) -> None:
    """model.save to a temporary .keras name, then rename: no half-written model.keras."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_out(out) -> Path | None:
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatakitError(f"out={str(out)!r} exists and is not a folder", param="out")
    out.mkdir(parents=True, exist_ok=True)
    return out


class _Board:
    """TensorBoard scalars under out/tensorboard/{train,eval}; silent without `out`."""

    def __init__(self, out: Path | None):
        self.writers = {}
        if out is not None:
            import tensorflow as tf

            for name in ("train", "eval"):
                self.writers[name] = tf.summary.create_file_writer(str(out / "tensorboard" / name))

    def scalars(self, which: str, step: int, values: dict) -> None:
        if which not in self.writers:
            return
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # What tf.summary.scalar writes, without needing the tensorboard package installed
        # (tensorflow-cpu does not pull it in; it is only needed to *view* the logs).
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        with self.writers[which].as_default():
            for key, value in values.items():
                tf.summary.write(key, tf.constant(float(value), tf.float32), step=step, metadata=meta)

    def close(self) -> None:
        for w in self.writers.values():
            w.flush()
            w.close()


def _finish(out: Path | None, model, metrics: dict, history: list[dict], extra_files: dict) -> dict:
    if out is None:
        return {}
    files = {"model": out / "model.keras", **extra_files, "metrics": out / "metrics.json",
             "history": out / "history.csv", "tensorboard": out / "tensorboard", "checkpoints": out / CHECKPOINTS}
    save_model(model, files["model"])
    write_history(files["history"], history)
    metrics["files"] = {k: str(v) for k, v in files.items()}
    write_text(files["metrics"], json.dumps(metrics, indent=1, default=str) + "\n")
    return metrics["files"]


def _first_batch(dataset):
    """One batch (input shape, --check) without moving a datakit pipeline's position: read from its
    tf.data form, which `Pipeline.state()` does not track."""
    for images, labels in getattr(dataset, "dataset", dataset):
        return images, labels
    raise DatakitError("training data set is empty")


def _bar_note(bar, text: str) -> None:
    if hasattr(bar, "set_postfix_str"):
        bar.set_postfix_str(text, refresh=False)


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINTS = "checkpoints"   # OUT/checkpoints/ckpt-<step>/{tensors.index, tensors.data-*, sidecar.json}
KEEP_CHECKPOINTS = 2
CHECKPOINT_FORMAT = 1
SIDECAR = "sidecar.json"
TENSORS = "tensors"           # tf.train.Checkpoint prefix: model, optimizer, EMA, best weights, label RNG


@dataclass(frozen=True)
class Every:
    """How often a checkpoint is written: after `steps` steps or `seconds` seconds, whichever comes
    first (None: never by that measure). The default: 500 steps or 10 minutes."""

    steps: int | None = 500
    seconds: float | None = 600.0

    @classmethod
    def parse(cls, text) -> "Every":
        """"500" (steps), "300s", "10m", "1h" (time)."""
        if isinstance(text, Every):
            return text
        raw = str(text).strip().lower()
        unit = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:]) if raw else None
        try:
            value = float(raw[:-1]) if unit else int(raw)
        except ValueError:
            value = 0
        if not value > 0:
            raise DatakitError(f"checkpoint_every={text!r}: expected a number of steps (500) or of seconds "
                               "with a unit (300s, 10m, 1h)", param="checkpoint_every")
        return cls(None, value * unit) if unit else cls(int(value), None)

    def due(self, steps: int, seconds: float) -> bool:
        return (self.steps is not None and steps >= self.steps) or (self.seconds is not None and seconds >= self.seconds)

    def describe(self) -> str:
        parts = ([f"{self.steps} steps"] if self.steps else []) + ([f"{self.seconds:g} s"] if self.seconds else [])
        return " or ".join(parts)


class Checkpoints:
    """The last KEEP_CHECKPOINTS checkpoints of a run in OUT/checkpoints/, one folder per step.

    A checkpoint is written into a temporary folder (tensors with tf.train.Checkpoint.write, then the
    sidecar holding the SHA-256 of every tensor file) and renamed into place: a folder named
    ckpt-<step> is always complete. Reading goes newest first; one whose files are missing, cut
    or altered is skipped with a warning and the one before it is used.
    """

    def __init__(self, out: Path, log=None):
        self.root = Path(out) / CHECKPOINTS
        self.log = log

    def warn(self, line: str) -> None:
        """On the `datakit.train` logger (stderr when nothing is configured), and the run's log."""
        logging.getLogger("datakit.train").warning(line)
        if self.log:
            self.log(line)

    def folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("ckpt-")
                 and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def save(self, step: int, trackables: dict, sidecar: dict) -> Path:
        import tensorflow as tf

        from datakit.atomic import remove, sha256_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"ckpt-{step:09d}"
        tmp = self.root / f".{final.name}.tmp-{os.getpid()}"
        for stale in self.root.glob(".ckpt-*"):  # left by a killed run
            remove(stale)
        try:
            tf.train.Checkpoint(**trackables).write(str(tmp / TENSORS))
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            write_text(tmp / SIDECAR, json.dumps({**sidecar, "format": CHECKPOINT_FORMAT, "step": step,
                                                  "files": files}, default=float) + "\n")
            remove(final)  # the same step again (a stop right after a periodic checkpoint)
            os.replace(tmp, final)
        finally:
            remove(tmp)
        for old in self.folders()[:-KEEP_CHECKPOINTS]:
            remove(old)
        return final

    def candidates(self):
        """(folder, sidecar) of every intact checkpoint, newest first; broken ones are warned about."""
        from datakit.atomic import sha256_file

        for folder in reversed(self.folders()):
            try:
                sidecar = json.loads((folder / SIDECAR).read_text())
                if sidecar.get("format") != CHECKPOINT_FORMAT:
                    raise ValueError(f"format {sidecar.get('format')!r}, expected {CHECKPOINT_FORMAT}")
                bad = [name for name, digest in sidecar["files"].items()
                       if not (folder / name).is_file() or sha256_file(folder / name) != digest]
                if bad:
                    raise ValueError(f"{bad[0]} is cut or altered")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.warn(f"warning: checkpoint {folder} is unreadable ({exc}); falling back to the one before it")
                continue
            yield folder, sidecar

    def restore(self, folder: Path, trackables: dict) -> None:
        import tensorflow as tf

        tf.train.Checkpoint(**trackables).read(str(folder / TENSORS)).assert_existing_objects_matched()

    def clear(self) -> None:
        """--restart: remove datakit's checkpoint folders (and the folder when nothing else is in it)."""
        from datakit.atomic import remove

        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith("ckpt-") or p.name.startswith(".ckpt-")):
                remove(p)
        if not any(self.root.iterdir()):
            self.root.rmdir()


# What a checkpoint must match to be resumed here: (fingerprint key, how a message names it).
FINGERPRINT = (("model", "model"), ("data", "data set"), ("batch_size", "batch size"), ("seed", "seed"),
               ("optimizer", "optimizer"), ("ema", "--ema"), ("shuffle_labels", "shuffled labels"),
               ("input_shape", "input shape"), ("num_classes", "classes"))


def refuse_foreign(out: Path, made: dict, here: dict, only: tuple = ()) -> None:
    """A checkpoint of another model, data set, batch size, ... is refused, naming every difference
    (only: compare just these keys)."""
    diffs = [f"{label} {_shown(made.get(key))}, here {_shown(here.get(key))}" for key, label in FINGERPRINT
             if (not only or key in only) and made.get(key) != here.get(key)]
    if diffs:
        raise DatakitError(f"checkpoint in {out} was made with {'; '.join(diffs)}; pass --restart or another --out",
                           param="out")


def _shown(value) -> str:
    if value is None:
        return "off"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


class Ema:
    """Moving averages of the trainable weights (the tutorial's tf.train.ExponentialMovingAverage with
    num_updates = the step: decay_t = min(decay, (1 + t) / (10 + t)), so short runs average recent
    weights rather than the initial ones). `shadow` is checkpointed; `swapped(model)` evaluates with it."""

    def __init__(self, model, decay: float):
        import tensorflow as tf

        if not 0 < decay < 1:
            raise DatakitError(f"ema={decay}: expected a decay between 0 and 1 (the tutorial's: 0.9999)", param="ema")
        self.decay = float(decay)
        self.module = tf.Module()
        self.module.shadow = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in model.trainable_variables]

    def update(self, variables, step):
        import tensorflow as tf

        t = tf.cast(step, tf.float32)
        d = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for s, v in zip(self.module.shadow, variables):
            s.assign(d * s + (1.0 - d) * tf.convert_to_tensor(v))

    def swap(self, model) -> None:
        """Exchange the model's trainable weights and the averages (twice = back as before)."""
        for s, v in zip(self.module.shadow, model.trainable_variables):
            raw = v.numpy()
            v.assign(s.numpy())
            s.assign(raw)


class _Copy:
    """A checkpointable copy of all a model's weights (the build trainer's best epoch)."""

    def __init__(self, model):
        import tensorflow as tf

        self.module = tf.Module()
        self.module.weights = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in model.weights]

    def take(self, model) -> None:
        for c, v in zip(self.module.weights, model.weights):
            c.assign(v.numpy())

    def numpy(self) -> list:
        return [c.numpy() for c in self.module.weights]


class _Stop:
    """SIGINT / SIGTERM while training: remember it; the loop writes a checkpoint and ends the run.
    A second SIGINT interrupts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signal = None
        self.saved = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False

    def __bool__(self) -> bool:
        return self.signal is not None


class Stopped(Exception):
    """Raised out of `fit` after the checkpoint a SIGINT / SIGTERM asked for is written."""


# ----------------------------------------------------------------------------- the one training loop


@dataclass(frozen=True)
class Hyp:
    """One trainer's hyperparameters and shape of run (like airbench's `hyp`), read by `fit` and `train`.

    Either `steps` (a step budget over endless batches, evaluated once at the end: cifar10) or
    `epochs` (passes over the train split, validated after each, early stopping: build).
    """

    target: str                   # "cifar10", "build" (or its alias "utk"): names the run and its files
    model: str                    # models.py builder: "cifar10_tutorial", "small", "seed-bad"
    batch_size: int
    steps: int | None = None      # step budget (one evaluation at the end)
    epochs: int | None = None     # epoch cap (validation every epoch)
    patience: int | None = None   # epochs without a better eval accuracy before stopping (None: never)
    lr_patience: int | None = None  # epochs without improvement before multiplying the learning rate by lr_factor
    lr_factor: float = 0.5
    from_logits: bool = False
    eval_name: str = "validation"  # what the held-out split is called in the diagnosis ("test" for cifar10)
    label_smoothing: float = 0.0  # of the training targets (the reported cross-entropy is against the true labels)
    time_limit: float | None = None  # epoch mode: seconds of training (with validation) after which the run
    #                                  ends: the epoch in progress stops at its next batch and is validated
    log_every: int = 10           # step mode: bar figures every N steps, a log line every 10 N


def _epoch_sums() -> dict:
    return {"examples": 0, "cross_entropy": 0.0, "hits": 0.0, "wait": 0.0, "seconds": 0.0}


@dataclass
class FitState:
    """Where a fit stands, besides its tensors: what a checkpoint's sidecar holds.

    step: optimizer steps done; epoch: the pass over the train split in progress (1-based; step mode
    has one endless pass); batch: its batches done; sums: that epoch's running totals; best: the
    best evaluation so far (its weights are a `_Copy`); flat: epochs since it; finished: early stop
    or budget reached; history: the rows of history.csv; cross_entropy: every step's (the final loss).
    """

    step: int = 0
    epoch: int = 1
    batch: int = 0
    sums: dict = field(default_factory=_epoch_sums)
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "epoch": 0})
    flat: int = 0
    finished: bool = False
    history: list = field(default_factory=list)
    cross_entropy: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FitState":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _batches(train_ds, state: FitState, replay: bool):
    """The train batches from where `state` stands.

    replay: the pipeline was built fresh, so get it there by starting (one batch each) the passes
    before this epoch, which moves its per-pass shuffle on, then skipping the batches done (exact for
    seeded pipelines; costs the skipped batches' reading and augmentation). Without replay the
    pipeline was built at that position (pipeline.state() / resume=)."""
    if replay:
        for _ in range(state.epoch - 1):
            for _batch in train_ds:
                break
    it = iter(train_ds)
    if replay:
        for _ in range(state.batch):
            if next(it, None) is None:
                break
    return it


def fit(model, optimizer, train_ds, eval_ds, hyp: Hyp, relabel=None, board=None, progress=null_progress,
        log=None, ema: Ema | None = None, best_copy: _Copy | None = None, state: FitState | None = None,
        save=None, every: Every | None = None, stop=None, replay: bool = True) -> dict:
    """Train and evaluate `model` as `hyp` says; returns {"history", "records", "best", "last_weights", "state"}.

    One period = `hyp.steps` steps of an endless `train_ds` (step mode) or one pass over it (epoch
    mode). After each period the eval split is measured; in epoch mode the best weights
    (eval accuracy) are kept and restored at the end, the learning rate is multiplied by lr_factor
    after `lr_patience` flat epochs and training stops after `patience` flat epochs.
    History: one row per step (step mode) or per epoch (epoch mode).

    Checkpoints: `save(state)` writes one (tensors and `state`) when `every` says so, and at a
    `stop` (a SIGINT/SIGTERM flag), after which `Stopped` is raised. `state` resumes a fit.
    """
    train_step, eval_step = make_steps(model, optimizer, hyp.from_logits, ema, hyp.label_smoothing)
    by_step = hyp.steps is not None
    s = state or FitState()
    if not by_step and best_copy is None:
        best_copy = _Copy(model)
    records = []
    bar = progress(desc=f"train {hyp.target}", total=hyp.steps if by_step else hyp.epochs,
                   unit="step" if by_step else "epoch")
    bar.update(s.step if by_step else s.epoch - 1)
    last_save = {"step": s.step, "time": time.monotonic()}

    def checkpoint(force: bool = False) -> None:
        if save is None:
            return
        if force or (every is not None and every.due(s.step - last_save["step"], time.monotonic() - last_save["time"])):
            save(s)
            last_save.update(step=s.step, time=time.monotonic())

    try:
        while not s.finished and (s.epoch <= (1 if by_step else hyp.epochs)):
            t0 = time.perf_counter() - s.sums["seconds"]
            it = _batches(train_ds, s, replay)
            replay = False  # later epochs: the next pass of the same pipeline
            spent = 0.0 if by_step else sum(row.get("seconds", 0.0) for row in s.history)
            out_of_time = False
            if relabel is not None:
                it = ((images, relabel(labels)) for images, labels in it)
            for rec in timed_steps(train_step, it, hyp.steps - s.step if by_step else None):
                records.append(rec)
                s.step += 1
                s.batch += 1
                if not math.isfinite(rec["loss"]):
                    raise DatakitError(f"train {hyp.target}: loss became {rec['loss']} at step {s.step} "
                                       "(learning rate too high?)")
                sums = s.sums
                sums["examples"] += rec["examples"]
                sums["cross_entropy"] += rec["cross_entropy"] * rec["examples"]
                sums["hits"] += rec["accuracy"] * rec["examples"]
                sums["wait"] += rec["wait"]
                s.cross_entropy.append(round(rec["cross_entropy"], 7))
                if by_step:
                    _step_row(s.step, rec, optimizer, hyp, s.history, board, bar, log)
                s.sums["seconds"] = time.perf_counter() - t0
                if stop:
                    checkpoint(force=True)
                    raise Stopped(stop.signal, s)
                checkpoint()
                if not by_step and hyp.time_limit is not None and spent + s.sums["seconds"] >= hyp.time_limit:
                    out_of_time = True
                    break
            if not s.sums["examples"]:
                raise DatakitError("training data set is empty")
            result = evaluate(eval_step, eval_ds)
            n = s.sums["examples"]
            train_loss, train_acc = s.sums["cross_entropy"] / n, s.sums["hits"] / n
            lr = float(optimizer.learning_rate)
            if board is not None:
                board.scalars("eval", s.step if by_step else s.epoch,
                              {"precision_at_1": result["accuracy"], "loss": result["loss"]} if by_step
                              else {"loss": result["loss"], "accuracy": result["accuracy"]})
            if by_step:
                s.best = {"accuracy": result["accuracy"], "loss": result["loss"], "epoch": 1,
                          "examples": result["examples"], "train_accuracy": train_acc, "train_loss": train_loss}
                s.finished = True
                break
            epoch = s.epoch
            s.history.append({"epoch": epoch, "loss": round(train_loss, 6), "accuracy": round(train_acc, 6),
                              "val_loss": round(result["loss"], 6), "val_accuracy": round(result["accuracy"], 6),
                              "learning_rate": round(lr, 9), "seconds": round(time.perf_counter() - t0, 3),
                              "input_wait_sec": round(s.sums["wait"], 4), "examples": s.sums["examples"]})
            pace = epoch_pace(s.history, hyp.epochs)
            s.epoch, s.batch, s.sums = epoch + 1, 0, _epoch_sums()
            if board is not None:
                board.scalars("train", epoch, {"loss": train_loss, "accuracy": train_acc, "learning_rate": lr})
            line = (f"epoch {epoch}/{hyp.epochs}: loss {train_loss:.4f} accuracy {train_acc:.4f} - val_loss "
                    f"{result['loss']:.4f} val_accuracy {result['accuracy']:.4f} - {pace}")
            bar.update(1)
            _bar_note(bar, line.split(": ", 1)[1].rsplit(" - ", 1)[0])
            if log:
                log(line)
            if out_of_time:
                s.finished = True
                if log:
                    log(f"time limit: {hyp.time_limit:g} s of training reached in epoch {epoch} "
                        f"(after {s.history[-1]['examples']} of its pictures)")
            if result["accuracy"] > s.best["accuracy"]:
                s.best = {"accuracy": result["accuracy"], "loss": result["loss"], "epoch": epoch,
                          "train_accuracy": train_acc, "train_loss": train_loss}
                best_copy.take(model)
                s.flat = 0
            else:
                s.flat += 1
                if hyp.patience is not None and s.flat >= hyp.patience:
                    if log:
                        log(f"early stop: val_accuracy has not improved for {hyp.patience} epochs "
                            f"(best {s.best['accuracy']:.4f} at epoch {s.best['epoch']})")
                    s.finished = True
                elif hyp.lr_patience and s.flat % hyp.lr_patience == 0:
                    optimizer.learning_rate = lr * hyp.lr_factor
            checkpoint()
    finally:
        bar.close()
    checkpoint(force=True)
    last = model.get_weights()
    if not by_step and s.best["epoch"]:
        model.set_weights(best_copy.numpy())
    return {"history": s.history, "records": records, "best": dict(s.best), "last_weights": last, "state": s}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def epoch_pace(history: list[dict], epochs: int) -> str:
    """'31.2 s/epoch, about 5 min 12 s left': the last epoch's time and the mean of the epochs so far
    times those left (an upper bound when early stopping may end the run sooner)."""
    done = len(history)
    mean = sum(row["seconds"] for row in history) / max(1, done)
    left = max(0, epochs - done) * mean
    return f"{history[-1]['seconds']:.1f} s/epoch, " + (f"about {_duration(left)} left" if left else "done")


def _step_row(i: int, rec: dict, optimizer, hyp: Hyp, history: list, board, bar, log) -> None:
    eps = rec["examples"] / rec["seconds"]
    history.append({"step": i, "loss": round(rec["loss"], 6), "cross_entropy": round(rec["cross_entropy"], 6),
                    "batch_accuracy": round(rec["accuracy"], 6),
                    "learning_rate": round(float(optimizer.learning_rate), 9),
                    "examples_per_sec": round(eps, 2), "sec_per_batch": round(rec["seconds"], 6),
                    "input_wait_sec": round(rec["wait"], 6)})
    bar.update(1)
    if i % hyp.log_every == 0 or i == hyp.steps:
        figures = f"loss = {rec['loss']:.2f} ({eps:.1f} examples/sec; {rec['seconds']:.3f} sec/batch)"
        _bar_note(bar, figures)
        if board is not None:
            board.scalars("train", i, {"loss": rec["loss"], "cross_entropy": rec["cross_entropy"],
                                       "batch_accuracy": rec["accuracy"], "examples_per_sec": eps,
                                       "learning_rate": history[-1]["learning_rate"]})
        if log and i % (hyp.log_every * 10) == 0:
            log(f"{datetime.now():%Y-%m-%d %H:%M:%S}: step {i}, {figures}")


@dataclass
class Data:
    """What a trainer trains on: batches, the held-out split, and the dataset's facts the run needs."""

    train: object
    eval: object
    num_classes: int
    class_counts: list[int]       # train pictures per class (the --shuffle-labels prior)
    train_count: int              # train pictures (one epoch), from the dataset itself
    rescale: float | None = None  # the model's input scaling (build: 1/255), None for none
    name: str | None = None       # the data set as a checkpoint names it ("cifar10, 50000 train images")
    resumed: bool = False         # `train` was built at a checkpoint's position (resume=pipeline state)
    classes: list | None = None   # class names in label order (the confusion matrix); None: "0", "1", ...


def latest_checkpoint(out, restart: bool = False, log=None):
    """(folder, sidecar) of the newest intact checkpoint in `out` (None: none, or `restart`, which
    removes them). Checkpoints that exist but none of which is intact are an error, not a fresh start."""
    if out is None:
        return None
    store = Checkpoints(Path(out), log)
    if restart:
        store.clear()
        return None
    for found in store.candidates():
        return found
    if store.folders():
        raise DatakitError(f"no intact checkpoint in {store.root} (every one is cut or altered); "
                           "pass --restart or another --out", param="out")
    return None


def pipeline_state(pipeline):
    """The pipeline's position for a checkpoint (pipeline.state()), or None for pipelines without one."""
    state = getattr(pipeline, "state", None)
    return state() if callable(state) else None


def _catch_up(pipeline, saved: dict) -> None:
    """A pipeline handed in at its start (`datasets=`) brought to a checkpoint's position by taking the
    batches before it (exact; costs their reading and augmentation)."""
    def at(state):
        return state["epoch"], state["batch"]

    while at(pipeline.state()) < at(saved):
        for _batch in pipeline:
            if at(pipeline.state()) >= at(saved):
                break


def resume_options(resume, config: dict) -> dict:
    """Refuse a checkpoint made with another model, batch size, seed, ... (what is known before the data is
    opened), and the pipeline keywords that continue from its position: {"resume": state} or {}."""
    if resume is None:
        return {}
    folder, sidecar = resume
    refuse_foreign(folder.parent.parent, sidecar["config"], config, only=tuple(config))
    return {"resume": sidecar["pipeline"]} if sidecar.get("pipeline") else {}


def _resumed_data(out, make):
    """make() builds the pipelines at a checkpoint's position; a state the pipelines refuse names its checkpoint."""
    try:
        return make()
    except DatakitError as exc:
        if exc.param != "resume":
            raise
        raise DatakitError(f"checkpoint in {out} does not fit this data ({exc}); pass --restart or another --out",
                           param="out") from None


def train(hyp: Hyp, data: Data, build_model, make_optimizer, opt_info: dict, out=None, check: bool = False,
          shuffle_labels: bool = False, seed: int = 0, log=None, progress=null_progress, resume=None,
          checkpoint_every=None, ema: float | None = None) -> "Run":
    """The shared run: first batch -> model (refusals before anything is written) -> --check ->
    restore the checkpoint `resume` = (folder, sidecar) -> `fit` (checkpoints every `checkpoint_every`,
    at SIGINT/SIGTERM and at the end) -> diagnosis -> model.keras, metrics.json, history.csv,
    tensorboard/ in `out`.

    build_model(input_shape, num_classes, rescale) -> a fresh model; make_optimizer() -> a fresh optimizer.
    Returns a `Run`: the metrics shared by every trainer (each trainer adds its own keys), the fit."""
    import keras

    t_start = time.perf_counter()
    first_images, first_labels = _first_batch(data.train)
    input_shape = tuple(int(d) for d in first_images.shape[1:])

    def build():
        return build_model(input_shape, data.num_classes, data.rescale)

    model = build()  # refuses, e.g., images too small for the network before any output exists
    config = {"model": hyp.model, "data": data.name or f"{data.train_count} train images",
              "batch_size": hyp.batch_size, "seed": seed, "optimizer": opt_info, "ema": ema,
              "shuffle_labels": shuffle_labels, "input_shape": list(input_shape), "num_classes": data.num_classes}
    out = _prepare_out(out)
    if resume is not None:
        refuse_foreign(out, resume[1]["config"], config)
    check_result = None
    if check and resume is None:
        check_result = overfit_one_batch(build, make_optimizer, first_images, first_labels, hyp.from_logits)
        if log:
            log(check_result["line"])
        keras.utils.set_random_seed(seed)
        model = build()
    optimizer = make_optimizer()
    optimizer.build(model.trainable_variables)
    averages = Ema(model, ema) if ema else None
    best_copy = None if hyp.steps is not None else _Copy(model)
    relabel = shuffled_labels_fn(data.class_counts, seed) if shuffle_labels else None
    trackables = {"model": model, "optimizer": optimizer}
    for name, holder in (("ema", averages), ("best", best_copy), ("labels", relabel)):
        if holder is not None:
            trackables[name] = holder.module if name != "labels" else holder.generator
    state = None
    if resume is not None:
        folder, sidecar = resume
        try:
            Checkpoints(out).restore(folder, trackables)
        except (AssertionError, ValueError) as exc:
            raise DatakitError(f"checkpoint {folder} does not fit this run ({str(exc).splitlines()[0]}); "
                               "pass --restart or another --out", param="out") from None
        state = FitState.from_json(sidecar["fit"])
        check_result = sidecar.get("check")
        if hyp.steps is not None and state.step < hyp.steps:
            state.finished = False  # a longer --steps continues a finished run
        if log:
            log(f"resuming from {folder} (step {state.step})")
    replay = False  # a datakit pipeline is at its position (built with resume=, or caught up here)
    if resume is not None and not data.resumed:
        if resume[1].get("pipeline") and callable(getattr(data.train, "state", None)):
            _catch_up(data.train, resume[1]["pipeline"])
        else:
            replay = True  # any other iterable: skip the batches done (exact when it is seeded)
    store = Checkpoints(out) if out is not None else None
    written = {"path": None if resume is None else str(resume[0])}

    def save(s: FitState) -> None:
        written["path"] = str(store.save(s.step, trackables, {
            "config": config, "fit": s.to_json(), "pipeline": pipeline_state(data.train), "check": check_result}))

    board = _Board(out)
    interrupted = None
    try:
        with _Stop() as stop:
            result = fit(model, optimizer, data.train, data.eval, hyp, relabel=relabel, board=board,
                         progress=progress, log=log, ema=averages, best_copy=best_copy, state=state,
                         save=save if store is not None else None,
                         every=Every.parse(checkpoint_every) if checkpoint_every is not None else Every(),
                         stop=stop, replay=replay)
    except Stopped as exc:
        interrupted, stopped_at = exc.args
        result = {"state": stopped_at, "history": stopped_at.history}
    finally:
        board.close()
    resumed_from = None if resume is None else int(resume[1]["step"])
    common = {"target": hyp.target, "model": hyp.model, "batch_size": hyp.batch_size, "seed": seed,
              "resumed_from_step": resumed_from, "checkpoint": written["path"], "ema_decay": ema}
    if interrupted is not None:
        return Run(common, result, model, out, t_start, interrupted=interrupted)
    records, best, s = result["records"], result["best"], result["state"]
    tail = s.cross_entropy[-max(10, len(s.cross_entropy) // 10):]
    final_ce = float(np.mean(tail))
    diag = diagnose(best["accuracy"], final_ce, data.num_classes, what=hyp.eval_name)
    service = getattr(data.train, "service", None)
    metrics = {
        **common, "num_classes": data.num_classes,
        **input_wait(records), "final_loss": final_ce, "stuck_at_chance": diag["stuck_at_chance"],
        "chance": diag["chance"], "ln_k": diag["ln_k"], "diagnosis": diag["lines"], "check": check_result,
        "shuffle_labels": shuffle_labels, **opt_info, "input_shape": list(input_shape),
        "parameters": int(model.count_params()), "train_examples": data.train_count,
        "service": service, "processing_mode": getattr(data.train, "processing_mode", None) if service else None,
        "checkpoint_every": (Every.parse(checkpoint_every) if checkpoint_every is not None else Every()).describe(),
    }
    run = Run(metrics, result, model, out, t_start)
    _confusion(run, data, hyp)
    if averages is not None:  # evaluate (and save) the moving averages of the last weights
        weights = model.get_weights()
        model.set_weights(result["last_weights"])
        averages.swap(model)
        run.ema = evaluate(make_steps(model, optimizer, hyp.from_logits)[1], data.eval)
        if out is not None:
            save_model(model, out / "model_ema.keras")
            run.extra_files["model_ema"] = out / "model_ema.keras"
        averages.swap(model)
        model.set_weights(weights)
    return run


def _confusion(run: "Run", data: Data, hyp: Hyp) -> None:
    """The held-out confusion matrix and per-class accuracy of the weights the run keeps (metrics
    "confusion", and confusion.png in `out`)."""
    from datakit import confusion

    classes = data.classes or [str(i) for i in range(data.num_classes)]
    counts = confusion.confusion_matrix(run.model, data.eval, data.num_classes)
    run.metrics["confusion"] = confusion.report(counts, classes)
    run.metrics["per_class_accuracy"] = run.metrics["confusion"]["per_class_accuracy"]
    if run.out is not None:
        title = f"{hyp.model} on {hyp.eval_name}"
        run.extra_files["confusion"] = confusion.write_png(counts, classes, run.out / "confusion.png", title)


@dataclass
class Run:
    """What `train` hands back to the trainer: the shared metrics, the fit result, the model, the folder
    (interrupted: the signal's name when a SIGINT/SIGTERM ended the run at a checkpoint)."""

    metrics: dict
    fit: dict
    model: object
    out: Path | None
    t_start: float
    interrupted: str | None = None
    ema: dict | None = None
    extra_files: dict = field(default_factory=dict)


def _write(metrics: dict, model, out: Path | None, history: list[dict], t_start: float, extra_files=None) -> dict:
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    metrics["files"] = _finish(out, model, metrics, history, extra_files or {})
    metrics["out"] = None if out is None else str(out)
    return metrics


def _stopped(run: Run) -> dict:
    """The result of a run a SIGINT/SIGTERM ended: where its checkpoint is (the same command resumes)."""
    s = run.fit["state"]
    if run.out is not None:
        write_history(run.out / "history.csv", s.history)
    return {**run.metrics, "interrupted": run.interrupted, "steps": s.step, "epochs": s.epoch - 1,
            "seconds": round(time.perf_counter() - run.t_start, 2), "out": None if run.out is None else str(run.out)}


# ----------------------------------------------------------------------------- cifar10: the tutorial's net


def cifar_optimizer_factory(schedule: str, lr: float | None, batch_size: int, train_examples: int):
    """Adam at lr (default 1e-3), or the tutorial's SGD: 0.1, x0.1 every 350 epochs (staircase)."""
    import keras

    if schedule == "constant":
        rate = 1e-3 if lr is None else lr
        return (lambda: keras.optimizers.Adam(rate)), {"optimizer": "adam", "learning_rate": rate}
    if schedule == "decay":
        rate = TUTORIAL_SGD_LR if lr is None else lr
        decay_steps = max(1, int(train_examples / batch_size * TUTORIAL_EPOCHS_PER_DECAY))

        def make():
            sched = keras.optimizers.schedules.ExponentialDecay(rate, decay_steps, TUTORIAL_DECAY_FACTOR,
                                                                staircase=True)
            return keras.optimizers.SGD(sched)

        return make, {"optimizer": "sgd", "learning_rate": rate, "decay_steps": decay_steps,
                      "decay_factor": TUTORIAL_DECAY_FACTOR}
    raise DatakitError(f"schedule={schedule!r}: expected constant or decay", param="schedule")


def cifar10_hyp(steps: int = 3000, batch_size: int = 128, log_every: int = 10) -> Hyp:
    return Hyp(target="cifar10", model="cifar10_tutorial", batch_size=batch_size, steps=steps, from_logits=True,
               eval_name="test", log_every=log_every)


def cifar10_data(data_dir, batch_size: int, seed: int, impl: str, service: str | None = None,
                 processing_mode: str | None = None, resume: dict | None = None) -> Data:
    """Endless augmented train batches and one pass over the test split (the pipeline's defaults are the
    tutorial's: random 24x24 crop, flip, brightness, contrast, standardization; test: centre crop)."""
    from datakit import pipelines
    from datakit.datasets.cifar.dataset import CifarDataset

    if data_dir is None:
        raise DatakitError("train cifar10: data_dir is required (a folder holding cifar-10-batches-bin/)",
                           param="data")
    dataset = CifarDataset(Path(data_dir).expanduser())
    served = {"service": service, "processing_mode": processing_mode or "parallel_epochs"} if service else {}
    at = {"resume": resume} if resume else {}
    train = pipelines.dataset_pipeline(dataset, "train", batch_size=batch_size, impl=impl, seed=seed, repeat=True,
                                       **served, **at)
    test = pipelines.dataset_pipeline(dataset, "test", batch_size=batch_size, impl=impl)
    return Data(train, test, len(dataset.classes), [1] * len(dataset.classes), dataset.count("train"),
                name=f"{dataset.key}, {dataset.count('train')} train images", resumed=bool(resume),
                classes=list(dataset.classes))


def train_cifar10(data_dir, steps: int = 3000, batch_size: int = 128, lr: float | None = None,
                  schedule: str = "constant", out=None, check: bool = False, shuffle_labels: bool = False,
                  seed: int = 0, impl: str = "fast", log_every: int = 10, log=None, progress=null_progress,
                  datasets=None, service: str | None = None, processing_mode: str | None = None,
                  checkpoint_every=None, restart: bool = False, ema: float | None = None,
                  deterministic: bool = False) -> dict:
    """Train the tutorial's network for `steps` steps, then measure precision@1 on the whole test split.

    `datasets` = (train, test) overrides the pipelines (tests); train must yield batches forever.
    service="grpc://HOST:PORT": the train batches come from tf.data service workers (default mode
    parallel_epochs); the test split is still read here.
    Checkpoints in `out` (see `train`): a run resumes from the newest unless `restart`.
    ema=DECAY: also report the test accuracy of the weights' moving averages (`test_accuracy_ema`).
    """
    from datakit import models

    if steps < 1:
        raise DatakitError(f"steps={steps}: expected at least 1", param="steps")
    _seed_everything(seed, deterministic)
    resume = latest_checkpoint(out, restart, log)
    known = {"model": "cifar10_tutorial", "batch_size": batch_size, "seed": seed, "ema": ema,
             "shuffle_labels": shuffle_labels}
    if datasets is None:
        at = resume_options(resume, known)
        data = _resumed_data(out, lambda: cifar10_data(data_dir, batch_size, seed, impl, service, processing_mode,
                                                       **at))
    else:  # CIFAR-10's classes are balanced: the prior is uniform
        resume_options(resume, known)
        train_ds, test_ds = datasets
        data = Data(train_ds, test_ds, 10, [1] * 10, getattr(train_ds, "count", None) or 0)
    # The decay schedule counts epochs of the dataset's own train split.
    train_examples = data.train_count or getattr(data.train, "steps_per_epoch", 1) * batch_size
    make_optimizer, opt_info = cifar_optimizer_factory(schedule, lr, batch_size, train_examples)
    hyp = cifar10_hyp(steps, batch_size, log_every)
    run = train(hyp, data, lambda shape, k, _: models.cifar10_tutorial(shape, k, seed=seed), make_optimizer,
                opt_info, out=out, check=check, shuffle_labels=shuffle_labels, seed=seed, log=log, progress=progress,
                resume=resume, checkpoint_every=checkpoint_every, ema=ema)
    run.metrics.update({"schedule": schedule, "impl": impl, "data": None if data_dir is None else str(data_dir)})
    if run.interrupted:
        return _stopped(run)
    test = run.fit["best"]
    run.metrics.update({"test_accuracy": test["accuracy"], "precision_at_1": test["accuracy"],
                        "test_loss": test["loss"], "test_examples": test["examples"],
                        "steps": run.fit["state"].step, "steps_this_run": len(run.fit["records"])})
    if run.ema is not None:
        run.metrics.update({"test_accuracy_ema": run.ema["accuracy"], "test_loss_ema": run.ema["loss"]})
    return _write(run.metrics, run.model, run.out, run.fit["history"], run.t_start, run.extra_files)


def _seed_everything(seed: int, deterministic: bool) -> None:
    """keras.utils.set_random_seed; deterministic: also TensorFlow's op determinism (slower; with it an
    interrupted and resumed run on the CPU ends with the uninterrupted run's weights)."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# ----------------------------------------------------------------------------- build: any builder output

BUILD_MODEL = "compact"   # the default model (datakit.recipes holds each model's defaults)
IN_MEMORY_LIMIT = 1 << 30  # decoded bytes of a split up to which the trainer decodes it once and keeps it


def duration_seconds(text) -> float:
    """A time budget: seconds as a number, or text with a unit ("600", "600s", "10m", "1h")."""
    raw = str(text).strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(raw[-1:], None) if raw else None
    try:
        value = float(raw[:-1] if unit else raw) * (unit or 1)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise DatakitError(f"time_limit={text!r}: expected seconds (600) or a duration with a unit (600s, 10m, 1h)",
                           param="time_limit")
    return value


def build_hyp(model_name: str = BUILD_MODEL, epochs: int | None = None, batch_size: int | None = None,
              patience: int | None = None, target: str = "build", time_limit=None) -> Hyp:
    """The build trainer's Hyp: the model's recipe, with any of epochs / batch size / patience given."""
    from datakit.recipes import recipe

    r = recipe(model_name)
    return Hyp(target=target, model=model_name, batch_size=batch_size or r.batch_size, epochs=epochs or r.epochs,
               patience=r.patience if patience is None else patience, lr_patience=r.lr_patience,
               lr_factor=r.lr_factor, from_logits=False, label_smoothing=r.label_smoothing,
               time_limit=None if time_limit is None else duration_seconds(time_limit))


def open_build(build_dir):
    """The builder output at `build_dir` as a dataset, refused when it has no val split."""
    from datakit.datasets.registry import open_dataset

    dataset = open_dataset(Path(build_dir).expanduser())
    if "val" not in dataset.splits:
        raise DatakitError(f"{Path(build_dir) / 'manifest.json'}: the build has no val split "
                           "(rebuild with --val-fraction > 0)")
    return dataset


def build_augment(model_name: str, augment: bool, crop=None):
    """(train Augment, val Augment, rescale) for a build's pipelines.

    compact / small: flip + a mild random crop (the recipe's crop, else the dataset's default, 0.88 of
    the side) for training, the centre crop of the same size for validation; pixels stay 0..255
    (standardize off: per-image standardization would erase how light or dark a face is, a real
    cue for race) and the model's Rescaling(1/255) puts them in [0, 1]. No hue or saturation
    jitter, which would change skin tone. seed-bad: raw 0..255 pixels, no crop, no flip, no
    scaling, as the network that guessed at random was trained.
    """
    from datakit.augment import Augment
    from datakit.datasets.built import TRAIN_CROP
    from datakit.recipes import recipe

    r = recipe(model_name)
    plain = Augment(crop=None, flip=False, brightness=None, contrast=None, standardize=False)
    if r.raw:
        return plain, plain, None
    if not augment:
        return plain, plain, 1 / 255.0
    train_aug = Augment(crop=r.crop or (TRAIN_CROP if crop is None else crop), flip=True, brightness=r.brightness,
                        contrast=r.contrast, standardize=False)
    return train_aug, train_aug.for_eval(), 1 / 255.0


utk_augment = build_augment


def train_size(model_name: str, dataset, size: int | None) -> int | None:
    """The side the pipeline resizes to: `size`, else the recipe's (never upsampling a smaller build),
    else the build's own (None)."""
    from datakit.recipes import recipe

    if size is not None:
        return size
    r = recipe(model_name).size
    return r if r is not None and r < int(dataset.size) else None


def _kept(src):
    """A small split decoded once and kept (the fused in-memory path), instead of decoding every JPEG
    again every epoch; a large one streams."""
    from datakit.datasets.tfdata import decoded

    h, w, c = src.image_shape
    return decoded(src) if src.load is None and src.count * h * w * c <= IN_MEMORY_LIMIT else src


def build_data(build_dir, format: str, batch_size: int, augment: bool, seed: int, model_name: str,
               service: str | None = None, processing_mode: str | None = None, resume: dict | None = None,
               size: int | None = None) -> Data:
    """Train and val pipelines over a build's splits, resized to `train_size` (with `service`, the train
    batches are made on the tf.data service's workers, distributed_epoch by default so an epoch is
    still one pass)."""
    from datakit import pipelines

    dataset = open_build(build_dir)
    side = train_size(model_name, dataset, size)
    train_aug, val_aug, rescale = build_augment(model_name, augment, dataset.default_crop)
    served = {"service": service, "processing_mode": processing_mode or "distributed_epoch"} if service else {}
    at = {"resume": resume} if resume else {}
    train_src = dataset.tf_source("train", format, side)
    val_src = dataset.tf_source("val", format, side)
    if not service:
        train_src = _kept(train_src)
    train_ds = pipelines.from_source(train_src, "train", batch_size=batch_size, augment=train_aug, shuffle=True,
                                     seed=seed, drop_remainder=False, crop=dataset.default_crop, **served, **at)
    val_ds = pipelines.from_source(_kept(val_src), "val", batch_size=max(batch_size, 64), augment=val_aug,
                                   shuffle=False, seed=seed, drop_remainder=False, crop=dataset.default_crop)
    counts = dataset.expected_counts("train") or {}
    return Data(train_ds, val_ds, len(dataset.classes), [counts.get(c, 0) for c in dataset.classes],
                dataset.count("train"), rescale, name=f"{dataset.key} {format}, {dataset.count('train')} train images",
                resumed=bool(resume), classes=list(dataset.classes))


def train_build(build_dir, format: str = "tfrecord", model_name: str = BUILD_MODEL, epochs: int | None = None,
                batch_size: int | None = None, shuffle_labels: bool = False, check: bool = False,
                lr: float | None = None, augment: bool = True, patience: int | None = None, seed: int = 0, out=None,
                log=None, progress=null_progress, datasets=None, service: str | None = None,
                processing_mode: str | None = None, target: str = "build", checkpoint_every=None,
                restart: bool = False, ema: float | None = None, deterministic: bool = False,
                size: int | None = None, time_limit=None) -> dict:
    """Train `compact` (default), `small` or `seed-bad` on any builder output (build-utk, `datakit
    build`); validate on its val split each epoch, keep the best weights. Unset epochs, batch_size,
    lr, patience and size come from the model's recipe (datakit.recipes).

    size: resize to size x size in the pipeline (a 200 px build trains at 64 px without a rebuild).
    time_limit: seconds (or "10m") of training after which the run ends, validating the epoch in
    progress where it stands (`time_limited` in the result).
    `datasets` = (train, val, num_classes, rescale) overrides the pipelines (tests).
    service="grpc://HOST:PORT": the train batches come from tf.data service workers (default mode
    distributed_epoch, so an epoch is still one pass over the split); validation is read here.
    Checkpoints in `out` (see `train`): a run resumes from the newest unless `restart`.
    ema=DECAY: also report the val accuracy of the last weights' moving averages (`val_accuracy_ema`).
    """
    from datakit import models
    from datakit.recipes import optimizer_factory, recipe

    r = recipe(model_name)
    hyp = build_hyp(model_name, epochs, batch_size, patience, target, time_limit)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience), ("size", size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DatakitError(f"{name}={value!r}: expected a positive integer", param=name)
    lr = r.lr if lr is None else lr
    if not lr > 0:
        raise DatakitError(f"lr={lr!r}: expected a positive learning rate", param="lr")
    _seed_everything(seed, deterministic)
    resume = latest_checkpoint(out, restart, log)
    known = {"model": model_name, "batch_size": hyp.batch_size, "seed": seed, "ema": ema,
             "shuffle_labels": shuffle_labels}
    if datasets is None:
        at = resume_options(resume, known)
        data = _resumed_data(out, lambda: build_data(build_dir, format, hyp.batch_size, augment, seed, model_name,
                                                     service, processing_mode, size=size, **at))
    else:
        resume_options(resume, known)
        train_ds, val_ds, num_classes, rescale = datasets
        data = Data(train_ds, val_ds, num_classes, [1] * num_classes, getattr(train_ds, "count", None) or 0, rescale)
    steps_per_epoch = getattr(data.train, "steps_per_epoch", None) or max(1, -(-data.train_count // hyp.batch_size))
    make_optimizer, opt_info = optimizer_factory(r, lr, steps_per_epoch, hyp.epochs)
    run = train(hyp, data, lambda shape, k, rescale: models.build_utk_model(model_name, shape, k, rescale=rescale),
                make_optimizer, opt_info, out=out, check=check, shuffle_labels=shuffle_labels, seed=seed, log=log,
                progress=progress, resume=resume, checkpoint_every=checkpoint_every, ema=ema)
    run.metrics.update({"format": format, "augment": augment, "max_epochs": hyp.epochs,
                        "label_smoothing": hyp.label_smoothing,
                        "data": None if build_dir is None else str(build_dir)})
    if run.interrupted:
        return _stopped(run)
    best, history = run.fit["best"], run.fit["history"]
    trained = round(sum(row["seconds"] for row in history), 2)
    run.metrics.update({
        "val_accuracy": best["accuracy"], "val_loss": best["loss"],
        "train_accuracy": best["train_accuracy"], "best_epoch": best["epoch"], "epochs": len(history),
        "final_train_accuracy": history[-1]["accuracy"], "final_val_accuracy": history[-1]["val_accuracy"],
        "still_improving": best["epoch"] == len(history) == hyp.epochs and hyp.patience is not None,
        "steps": run.fit["state"].step, "train_seconds": trained, "time_limit": hyp.time_limit,
        "time_limited": bool(hyp.time_limit) and trained >= hyp.time_limit})
    if run.ema is not None:
        run.metrics.update({"val_accuracy_ema": run.ema["accuracy"], "val_loss_ema": run.ema["loss"]})
    return _write(run.metrics, run.model, run.out, history, run.t_start, run.extra_files)


def train_utk(build_dir, **kw) -> dict:
    """`train_build` under its first name (`datakit train utk`): the same trainer, target "utk"."""
    return train_build(build_dir, **{"target": "utk", **kw})


def shuffled_labels_fn(class_counts, seed: int):
    """--shuffle-labels: replace every training label by one drawn at random from the split's class
    frequencies, fresh at every step.

    The labels keep the class balance of the real ones but carry no information about the
    pictures, so nothing but the class prior can be learned and held-out accuracy must stay at
    chance. (Permuting labels *within* a batch would not do: a picture would get its own class
    back with probability n_c / B, above 1/K for small batches, and a model can learn that.)
    """
    import tensorflow as tf

    counts = np.asarray(class_counts, dtype=np.float64)
    logits = tf.constant(np.log(np.maximum(counts, 1e-12) / counts.sum())[None, :], tf.float32)
    generator = tf.random.Generator.from_seed(seed + 7919)

    def relabel(labels):
        n = tf.shape(labels)[0]
        draw = tf.random.stateless_categorical(tf.tile(logits, [n, 1]), 1, seed=generator.make_seeds(1)[:, 0])
        return tf.cast(draw[:, 0], labels.dtype)

    relabel.generator = generator  # its state goes into checkpoints
    return relabel
