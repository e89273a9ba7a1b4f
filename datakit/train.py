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
import math
import os
import time
from dataclasses import dataclass
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


def make_steps(model, optimizer, from_logits: bool):
    """(train_step, eval_step) as tf.functions.

    train_step(images, labels) -> (total loss incl. weight decay, cross-entropy, correct count);
    eval_step(images, labels) -> (summed cross-entropy, correct count, batch size).
    """
    import keras
    import tensorflow as tf

    mean_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    sum_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction="sum")

    def correct(outputs, labels):
        hits = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    @tf.function(reduce_retracing=True)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            ce = mean_ce(labels, outputs)
            total = ce + tf.add_n(model.losses) if model.losses else ce
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
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


def _finish(out: Path | None, model, metrics: dict, history: list[dict]) -> dict:
    if out is None:
        return {}
    files = {"model": out / "model.keras", "metrics": out / "metrics.json", "history": out / "history.csv",
             "tensorboard": out / "tensorboard"}
    save_model(model, files["model"])
    write_history(files["history"], history)
    metrics["files"] = {k: str(v) for k, v in files.items()}
    write_text(files["metrics"], json.dumps(metrics, indent=1, default=str) + "\n")
    return metrics["files"]


def _first_batch(dataset):
    for images, labels in dataset:
        return images, labels
    raise DatakitError("training data set is empty")


def _bar_note(bar, text: str) -> None:
    if hasattr(bar, "set_postfix_str"):
        bar.set_postfix_str(text, refresh=False)


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
    log_every: int = 10           # step mode: bar figures every N steps, a log line every 10 N


def fit(model, optimizer, train_ds, eval_ds, hyp: Hyp, relabel=None, board=None, progress=null_progress,
        log=None) -> dict:
    """Train and evaluate `model` as `hyp` says; returns {"history", "records", "best", "last_weights", "eval"}.

    One period = `hyp.steps` steps of an endless `train_ds` (step mode) or one pass over it (epoch
    mode). After each period the eval split is measured; in epoch mode the best weights
    (eval accuracy) are kept and restored at the end, the learning rate is multiplied by lr_factor
    after `lr_patience` flat epochs and training stops after `patience` flat epochs.
    History: one row per step (step mode) or per epoch (epoch mode).
    """
    train_step, eval_step = make_steps(model, optimizer, hyp.from_logits)
    by_step = hyp.steps is not None
    periods = 1 if by_step else hyp.epochs
    best = {"accuracy": -1.0, "epoch": 0, "weights": None}
    history, records = [], []
    flat = 0
    bar = progress(desc=f"train {hyp.target}", total=hyp.steps if by_step else periods,
                   unit="step" if by_step else "epoch")
    endless = iter(train_ds) if by_step else None
    try:
        for period in range(1, periods + 1):
            t0 = time.perf_counter()
            it = endless if by_step else iter(train_ds)
            if relabel is not None:
                it = ((images, relabel(labels)) for images, labels in it)
            done = []
            for rec in timed_steps(train_step, it, hyp.steps):
                done.append(rec)
                if not math.isfinite(rec["loss"]):
                    raise DatakitError(f"train {hyp.target}: loss became {rec['loss']} at step "
                                       f"{len(records) + len(done)} (learning rate too high?)")
                if by_step:
                    _step_row(len(done), rec, optimizer, hyp, history, board, bar, log)
            if not done:
                raise DatakitError("training data set is empty")
            records += done
            result = evaluate(eval_step, eval_ds)
            n = sum(r["examples"] for r in done)
            train_loss = sum(r["cross_entropy"] * r["examples"] for r in done) / n
            train_acc = sum(r["accuracy"] * r["examples"] for r in done) / n
            lr = float(optimizer.learning_rate)
            if board is not None:
                board.scalars("eval", len(records) if by_step else period,
                              {"precision_at_1": result["accuracy"], "loss": result["loss"]} if by_step
                              else {"loss": result["loss"], "accuracy": result["accuracy"]})
            if by_step:
                best = {"accuracy": result["accuracy"], "loss": result["loss"], "epoch": 1,
                        "examples": result["examples"],
                        "train_accuracy": train_acc, "train_loss": train_loss, "weights": None}
                break
            history.append({"epoch": period, "loss": round(train_loss, 6), "accuracy": round(train_acc, 6),
                            "val_loss": round(result["loss"], 6), "val_accuracy": round(result["accuracy"], 6),
                            "learning_rate": round(lr, 9), "seconds": round(time.perf_counter() - t0, 3),
                            "input_wait_sec": round(sum(r["wait"] for r in done), 4)})
            if board is not None:
                board.scalars("train", period, {"loss": train_loss, "accuracy": train_acc, "learning_rate": lr})
            line = (f"epoch {period}: loss {train_loss:.4f} accuracy {train_acc:.4f} - val_loss {result['loss']:.4f} "
                    f"val_accuracy {result['accuracy']:.4f}")
            bar.update(1)
            _bar_note(bar, line.split(": ", 1)[1])
            if log:
                log(line)
            if result["accuracy"] > best["accuracy"]:
                best = {"accuracy": result["accuracy"], "loss": result["loss"], "epoch": period,
                        "train_accuracy": train_acc, "train_loss": train_loss, "weights": model.get_weights()}
                flat = 0
                continue
            flat += 1
            if hyp.patience is not None and flat >= hyp.patience:
                if log:
                    log(f"early stop: val_accuracy has not improved for {hyp.patience} epochs "
                        f"(best {best['accuracy']:.4f} at epoch {best['epoch']})")
                break
            if hyp.lr_patience and flat % hyp.lr_patience == 0:
                optimizer.learning_rate = lr * hyp.lr_factor
    finally:
        bar.close()
    last = model.get_weights()
    weights = best.pop("weights")
    if weights is not None:
        model.set_weights(weights)
    return {"history": history, "records": records, "best": best, "last_weights": last}


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


def train(hyp: Hyp, data: Data, build_model, make_optimizer, opt_info: dict, out=None, check: bool = False,
          shuffle_labels: bool = False, seed: int = 0, log=None, progress=null_progress) -> dict:
    """The shared run: first batch -> model (refusals before anything is written) -> --check ->
    `fit` -> diagnosis -> model.keras, metrics.json, history.csv, tensorboard/ in `out`.

    build_model(input_shape, num_classes, rescale) -> a fresh model; make_optimizer() -> a fresh optimizer.
    Returns a `Run`: the metrics shared by every trainer (each trainer adds its own keys), the fit."""
    import keras

    t_start = time.perf_counter()
    first_images, first_labels = _first_batch(data.train)
    input_shape = tuple(int(d) for d in first_images.shape[1:])

    def build():
        return build_model(input_shape, data.num_classes, data.rescale)

    model = build()  # refuses, e.g., images too small for the network before any output exists
    out = _prepare_out(out)
    check_result = None
    if check:
        check_result = overfit_one_batch(build, make_optimizer, first_images, first_labels, hyp.from_logits)
        if log:
            log(check_result["line"])
        keras.utils.set_random_seed(seed)
        model = build()
    board = _Board(out)
    relabel = shuffled_labels_fn(data.class_counts, seed) if shuffle_labels else None
    try:
        result = fit(model, make_optimizer(), data.train, data.eval, hyp, relabel=relabel, board=board,
                     progress=progress, log=log)
    finally:
        board.close()
    records, best = result["records"], result["best"]
    tail = records[-max(10, len(records) // 10):]
    final_ce = float(np.mean([r["cross_entropy"] for r in tail]))
    diag = diagnose(best["accuracy"], final_ce, data.num_classes, what=hyp.eval_name)
    service = getattr(data.train, "service", None)
    metrics = {
        "target": hyp.target, "model": hyp.model, "batch_size": hyp.batch_size, "num_classes": data.num_classes,
        **input_wait(records), "final_loss": final_ce, "stuck_at_chance": diag["stuck_at_chance"],
        "chance": diag["chance"], "ln_k": diag["ln_k"], "diagnosis": diag["lines"], "check": check_result,
        "shuffle_labels": shuffle_labels, **opt_info, "input_shape": list(input_shape),
        "parameters": int(model.count_params()), "seed": seed, "train_examples": data.train_count,
        "service": service, "processing_mode": getattr(data.train, "processing_mode", None) if service else None,
    }
    return Run(metrics, result, model, out, t_start)


@dataclass
class Run:
    """What `train` hands back to the trainer: the shared metrics, the fit result, the model, the folder."""

    metrics: dict
    fit: dict
    model: object
    out: Path | None
    t_start: float


def _write(metrics: dict, model, out: Path | None, history: list[dict], t_start: float) -> dict:
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    metrics["files"] = _finish(out, model, metrics, history)
    metrics["out"] = None if out is None else str(out)
    return metrics


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
                 processing_mode: str | None = None) -> Data:
    """Endless augmented train batches and one pass over the test split (the pipeline's defaults are the
    tutorial's: random 24x24 crop, flip, brightness, contrast, standardization; test: centre crop)."""
    from datakit import pipelines
    from datakit.datasets.cifar.dataset import CifarDataset

    if data_dir is None:
        raise DatakitError("train cifar10: data_dir is required (a folder holding cifar-10-batches-bin/)",
                           param="data")
    dataset = CifarDataset(Path(data_dir).expanduser())
    served = {"service": service, "processing_mode": processing_mode or "parallel_epochs"} if service else {}
    train = pipelines.dataset_pipeline(dataset, "train", batch_size=batch_size, impl=impl, seed=seed, repeat=True,
                                       **served)
    test = pipelines.dataset_pipeline(dataset, "test", batch_size=batch_size, impl=impl)
    return Data(train, test, len(dataset.classes), [1] * len(dataset.classes), dataset.count("train"))


def train_cifar10(data_dir, steps: int = 3000, batch_size: int = 128, lr: float | None = None,
                  schedule: str = "constant", out=None, check: bool = False, shuffle_labels: bool = False,
                  seed: int = 0, impl: str = "fast", log_every: int = 10, log=None, progress=null_progress,
                  datasets=None, service: str | None = None, processing_mode: str | None = None) -> dict:
    """Train the tutorial's network for `steps` steps, then measure precision@1 on the whole test split.

    `datasets` = (train, test) overrides the pipelines (tests); train must yield batches forever.
    service="grpc://HOST:PORT": the train batches come from tf.data service workers (default mode
    parallel_epochs); the test split is still read here.
    """
    import keras

    from datakit import models

    if steps < 1:
        raise DatakitError(f"steps={steps}: expected at least 1", param="steps")
    keras.utils.set_random_seed(seed)
    if datasets is None:
        data = cifar10_data(data_dir, batch_size, seed, impl, service, processing_mode)
    else:  # CIFAR-10's classes are balanced: the prior is uniform
        train_ds, test_ds = datasets
        data = Data(train_ds, test_ds, 10, [1] * 10, getattr(train_ds, "count", None) or 0)
    # The decay schedule counts epochs of the dataset's own train split.
    train_examples = data.train_count or getattr(data.train, "steps_per_epoch", 1) * batch_size
    make_optimizer, opt_info = cifar_optimizer_factory(schedule, lr, batch_size, train_examples)
    hyp = cifar10_hyp(steps, batch_size, log_every)
    run = train(hyp, data, lambda shape, k, _: models.cifar10_tutorial(shape, k, seed=seed), make_optimizer,
                opt_info, out=out, check=check, shuffle_labels=shuffle_labels, seed=seed, log=log, progress=progress)
    test = run.fit["best"]
    run.metrics.update({"test_accuracy": test["accuracy"], "precision_at_1": test["accuracy"],
                        "test_loss": test["loss"], "test_examples": test["examples"],
                        "steps": len(run.fit["records"]), "schedule": schedule, "impl": impl,
                        "data": None if data_dir is None else str(data_dir)})
    return _write(run.metrics, run.model, run.out, run.fit["history"], run.t_start)


# ----------------------------------------------------------------------------- build: any builder output

BUILD_EPOCHS = 30         # a cap: early stopping usually ends the run first
BUILD_PATIENCE = 5        # epochs without a better val_accuracy before stopping
BUILD_LR_PATIENCE = 2     # epochs without improvement before halving the learning rate
BUILD_LR_FACTOR = 0.5
UTK_EPOCHS, UTK_PATIENCE, UTK_LR_PATIENCE, UTK_LR_FACTOR = BUILD_EPOCHS, BUILD_PATIENCE, BUILD_LR_PATIENCE, BUILD_LR_FACTOR


def build_hyp(model_name: str = "small", epochs: int = BUILD_EPOCHS, batch_size: int = 16,
              patience: int = BUILD_PATIENCE, target: str = "build") -> Hyp:
    return Hyp(target=target, model=model_name, batch_size=batch_size, epochs=epochs, patience=patience,
               lr_patience=BUILD_LR_PATIENCE, lr_factor=BUILD_LR_FACTOR, from_logits=False)


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

    small: flip + a mild random crop (the dataset's default crop, 0.88 of the side) for training, the
    centre crop of the same size for validation; pixels stay 0..255 (standardize off) and the
    model's Rescaling(1/255) puts them in [0, 1], the classic fix. seed-bad: raw 0..255 pixels, no
    crop, no flip, no scaling, as the network that guessed at random was trained.
    """
    from datakit.augment import Augment
    from datakit.datasets.built import TRAIN_CROP

    plain = Augment(crop=None, flip=False, brightness=None, contrast=None, standardize=False)
    if model_name == "seed-bad":
        return plain, plain, None
    if not augment:
        return plain, plain, 1 / 255.0
    train_aug = Augment(crop=TRAIN_CROP if crop is None else crop, flip=True, brightness=None, contrast=None,
                        standardize=False)
    return train_aug, train_aug.for_eval(), 1 / 255.0


utk_augment = build_augment


def build_data(build_dir, format: str, batch_size: int, augment: bool, seed: int, model_name: str,
               service: str | None = None, processing_mode: str | None = None) -> Data:
    """Train and val pipelines over a build's splits (with `service`, the train batches are made on the
    tf.data service's workers, distributed_epoch by default so an epoch is still one pass)."""
    from datakit import pipelines

    dataset = open_build(build_dir)
    train_aug, val_aug, rescale = build_augment(model_name, augment, dataset.default_crop)
    served = {"service": service, "processing_mode": processing_mode or "distributed_epoch"} if service else {}
    train_ds = pipelines.dataset_pipeline(dataset, "train", format, batch_size=batch_size, augment=train_aug,
                                          shuffle=True, seed=seed, drop_remainder=False, **served)
    val_ds = pipelines.dataset_pipeline(dataset, "val", format, batch_size=max(batch_size, 64), augment=val_aug,
                                        shuffle=False, seed=seed, drop_remainder=False)
    counts = dataset.expected_counts("train") or {}
    return Data(train_ds, val_ds, len(dataset.classes), [counts.get(c, 0) for c in dataset.classes],
                dataset.count("train"), rescale)


def train_build(build_dir, format: str = "tfrecord", model_name: str = "small", epochs: int = BUILD_EPOCHS,
                batch_size: int = 16, shuffle_labels: bool = False, check: bool = False, lr: float = 1e-3,
                augment: bool = True, patience: int = BUILD_PATIENCE, seed: int = 0, out=None, log=None,
                progress=null_progress, datasets=None, service: str | None = None,
                processing_mode: str | None = None, target: str = "build") -> dict:
    """Train `small` (or `seed-bad`) on any builder output (build-utk, `datakit build`); validate on its
    val split each epoch, keep the best weights.

    `datasets` = (train, val, num_classes, rescale) overrides the pipelines (tests).
    service="grpc://HOST:PORT": the train batches come from tf.data service workers (default mode
    distributed_epoch, so an epoch is still one pass over the split); validation is read here.
    """
    import keras

    from datakit import models

    if epochs < 1:
        raise DatakitError(f"epochs={epochs}: expected at least 1", param="epochs")
    keras.utils.set_random_seed(seed)
    if datasets is None:
        data = build_data(build_dir, format, batch_size, augment, seed, model_name, service, processing_mode)
    else:
        train_ds, val_ds, num_classes, rescale = datasets
        data = Data(train_ds, val_ds, num_classes, [1] * num_classes, getattr(train_ds, "count", None) or 0, rescale)
    hyp = build_hyp(model_name, epochs, batch_size, patience, target)
    run = train(hyp, data, lambda shape, k, rescale: models.build_utk_model(model_name, shape, k, rescale=rescale),
                lambda: keras.optimizers.Adam(lr), {"learning_rate": lr}, out=out, check=check,
                shuffle_labels=shuffle_labels, seed=seed, log=log, progress=progress)
    best, history = run.fit["best"], run.fit["history"]
    run.metrics.update({
        "format": format, "val_accuracy": best["accuracy"], "val_loss": best["loss"],
        "train_accuracy": best["train_accuracy"], "best_epoch": best["epoch"], "epochs": len(history),
        "max_epochs": epochs, "final_train_accuracy": history[-1]["accuracy"],
        "final_val_accuracy": history[-1]["val_accuracy"],
        "still_improving": best["epoch"] == len(history) == epochs, "augment": augment,
        "data": None if build_dir is None else str(build_dir)})
    return _write(run.metrics, run.model, run.out, history, run.t_start)


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

    return relabel
