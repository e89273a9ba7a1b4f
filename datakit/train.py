"""The bundled reference trainers: `train_cifar10` (the TF tutorial's net) and `train_utk`.

Both run a custom loop (a tf.function train step) instead of `model.fit` so each step can be
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
        raise DatakitError(f"{out}: --out exists and is not a folder")
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


# ----------------------------------------------------------------------------- cifar10


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
    raise DatakitError(f"--schedule {schedule!r}: expected constant or decay")


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
        raise DatakitError(f"--steps {steps}: expected at least 1")
    t_start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    if datasets is None:
        train_ds, test_ds = cifar10_datasets(data_dir, batch_size, seed, impl, service, processing_mode)
    else:
        train_ds, test_ds = datasets
    # The decay schedule counts epochs: batches per epoch from the pipeline (CIFAR-10: 50000 / batch).
    train_examples = getattr(train_ds, "steps_per_epoch", 50000 // batch_size) * batch_size
    out = _prepare_out(out)
    make_optimizer, opt_info = cifar_optimizer_factory(schedule, lr, batch_size, train_examples)
    first_images, first_labels = _first_batch(train_ds)
    input_shape = tuple(int(d) for d in first_images.shape[1:])
    num_classes = 10

    def build():
        return models.cifar10_tutorial(input_shape, num_classes, seed=seed)

    check_result = None
    if check:
        check_result = overfit_one_batch(build, make_optimizer, first_images, first_labels, from_logits=True)
        if log:
            log(check_result["line"])

    model = build()
    optimizer = make_optimizer()
    train_step, eval_step = make_steps(model, optimizer, from_logits=True)
    board = _Board(out)
    records, history = [], []
    bar = progress(desc="train cifar10", total=steps, unit="step")
    iterator = iter(train_ds)
    if shuffle_labels:  # CIFAR-10's classes are balanced: draw uniformly
        relabel = shuffled_labels_fn([1] * num_classes, seed)
        iterator = ((images, relabel(labels)) for images, labels in iterator)
    try:
        for i, rec in enumerate(timed_steps(train_step, iterator, steps), 1):
            records.append(rec)
            if not math.isfinite(rec["loss"]):
                raise DatakitError(f"train cifar10: loss became {rec['loss']} at step {i} (learning rate "
                                   f"{opt_info['learning_rate']} too high?)")
            eps = rec["examples"] / rec["seconds"]
            history.append({"step": i, "loss": round(rec["loss"], 6), "cross_entropy": round(rec["cross_entropy"], 6),
                            "batch_accuracy": round(rec["accuracy"], 6),
                            "learning_rate": round(float(optimizer.learning_rate), 9),
                            "examples_per_sec": round(eps, 2), "sec_per_batch": round(rec["seconds"], 6),
                            "input_wait_sec": round(rec["wait"], 6)})
            bar.update(1)
            if i % log_every == 0 or i == steps:
                line = (f"{datetime.now():%Y-%m-%d %H:%M:%S}: step {i}, loss = {rec['loss']:.2f} "
                        f"({eps:.1f} examples/sec; {rec['seconds']:.3f} sec/batch)")
                _bar_note(bar, f"loss = {rec['loss']:.2f} ({eps:.1f} examples/sec; {rec['seconds']:.3f} sec/batch)")
                board.scalars("train", i, {"loss": rec["loss"], "cross_entropy": rec["cross_entropy"],
                                           "batch_accuracy": rec["accuracy"], "examples_per_sec": eps,
                                           "learning_rate": history[-1]["learning_rate"]})
                if log and log_every and i % (log_every * 10) == 0:
                    log(line)
    finally:
        bar.close()
    test = evaluate(eval_step, test_ds)
    board.scalars("eval", len(records), {"precision_at_1": test["accuracy"], "loss": test["loss"]})
    board.close()
    tail = records[-max(10, len(records) // 10):]
    final_ce = float(np.mean([r["cross_entropy"] for r in tail]))
    diag = diagnose(test["accuracy"], final_ce, num_classes, what="test")
    speed = input_wait(records)
    metrics = {
        "target": "cifar10", "test_accuracy": test["accuracy"], "precision_at_1": test["accuracy"],
        "test_loss": test["loss"], "test_examples": test["examples"], "steps": len(records),
        "batch_size": batch_size,
        **speed, "final_loss": final_ce, "stuck_at_chance": diag["stuck_at_chance"], "chance": diag["chance"],
        "ln_k": diag["ln_k"], "diagnosis": diag["lines"], "check": check_result, "shuffle_labels": shuffle_labels,
        "schedule": schedule, **opt_info,
        "input_shape": list(input_shape), "parameters": int(model.count_params()), "seed": seed, "impl": impl,
        "data": None if data_dir is None else str(data_dir),
        "service": getattr(train_ds, "source", "").partition(" via tf.data service ")[2] or None,
    }
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    metrics["files"] = _finish(out, model, metrics, history)
    metrics["out"] = None if out is None else str(out)
    return metrics


def cifar10_datasets(data_dir, batch_size: int, seed: int, impl: str, service: str | None = None,
                     processing_mode: str | None = None):
    """(endless augmented train batches, one pass over the test split) from datakit.pipelines;
    with `service`, the train batches are made on the tf.data service's workers."""
    from datakit import pipelines

    if data_dir is None:
        raise DatakitError("train cifar10: --data DIR is required (a folder holding cifar-10-batches-bin/)")
    # Defaults of the pipeline are the tutorial's: train = random 24x24 crop, flip, brightness,
    # contrast, standardization (shuffled, full batches); test = centre crop + standardization.
    served = {"service": service, "processing_mode": processing_mode or "parallel_epochs"} if service else {}
    train = pipelines.cifar10(data_dir, split="train", batch_size=batch_size, impl=impl, seed=seed, repeat=True,
                              **served)
    test = pipelines.cifar10(data_dir, split="test", batch_size=batch_size, impl=impl)
    return train, test


# ----------------------------------------------------------------------------- utk

UTK_EPOCHS = 30           # a cap: early stopping usually ends the run first
UTK_PATIENCE = 5          # epochs without a better val_accuracy before stopping
UTK_LR_PATIENCE = 2       # epochs without improvement before halving the learning rate
UTK_LR_FACTOR = 0.5


def read_build(build_dir) -> dict:
    """manifest.json of a complete build-utk output that has a val split (clear error otherwise)."""
    from datakit import pipelines

    manifest = pipelines.read_manifest(build_dir)
    if "val" not in manifest["splits"]:
        raise DatakitError(f"{Path(build_dir) / 'manifest.json'}: the build has no val split "
                           "(rebuild with --val-fraction > 0)")
    return manifest


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


def fit_epochs(model, optimizer, train_ds, val_ds, epochs: int, from_logits: bool, relabel=None,
               patience: int = UTK_PATIENCE, lr_patience: int = UTK_LR_PATIENCE, lr_factor: float = UTK_LR_FACTOR,
               board=None, progress=null_progress, log=None) -> dict:
    """Epoch loop: train, validate, keep the best weights (val_accuracy), halve the learning rate
    after `lr_patience` flat epochs, stop after `patience` flat epochs, restore the best weights."""
    train_step, eval_step = make_steps(model, optimizer, from_logits)
    best = {"val_accuracy": -1.0, "epoch": 0, "weights": None}
    history, records = [], []
    flat = 0
    bar = progress(desc="train utk", total=epochs, unit="epoch")
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            it = iter(train_ds)
            if relabel is not None:
                it = ((images, relabel(labels)) for images, labels in it)
            epoch_records = list(timed_steps(train_step, it))
            if not epoch_records:
                raise DatakitError("training data set is empty")
            records += epoch_records
            n = sum(r["examples"] for r in epoch_records)
            train_loss = sum(r["cross_entropy"] * r["examples"] for r in epoch_records) / n
            train_acc = sum(r["accuracy"] * r["examples"] for r in epoch_records) / n
            if not math.isfinite(train_loss):
                raise DatakitError(f"train utk: loss became {train_loss} in epoch {epoch} (learning rate too high?)")
            val = evaluate(eval_step, val_ds)
            lr = float(optimizer.learning_rate)
            row = {"epoch": epoch, "loss": round(train_loss, 6), "accuracy": round(train_acc, 6),
                   "val_loss": round(val["loss"], 6), "val_accuracy": round(val["accuracy"], 6),
                   "learning_rate": round(lr, 9), "seconds": round(time.perf_counter() - t0, 3),
                   "input_wait_sec": round(sum(r["wait"] for r in epoch_records), 4)}
            history.append(row)
            if board is not None:
                board.scalars("train", epoch, {"loss": train_loss, "accuracy": train_acc, "learning_rate": lr})
                board.scalars("eval", epoch, {"loss": val["loss"], "accuracy": val["accuracy"]})
            line = (f"epoch {epoch}: loss {train_loss:.4f} accuracy {train_acc:.4f} - val_loss {val['loss']:.4f} "
                    f"val_accuracy {val['accuracy']:.4f}")
            bar.update(1)
            _bar_note(bar, line.split(": ", 1)[1])
            if log:
                log(line)
            if val["accuracy"] > best["val_accuracy"]:
                best = {"val_accuracy": val["accuracy"], "val_loss": val["loss"], "epoch": epoch,
                        "train_accuracy": train_acc, "loss": train_loss, "weights": model.get_weights()}
                flat = 0
            else:
                flat += 1
                if flat >= patience:
                    if log:
                        log(f"early stop: val_accuracy has not improved for {patience} epochs "
                            f"(best {best['val_accuracy']:.4f} at epoch {best['epoch']})")
                    break
                if flat % lr_patience == 0:
                    optimizer.learning_rate = lr * lr_factor
    finally:
        bar.close()
    last = model.get_weights()
    model.set_weights(best.pop("weights"))
    return {"history": history, "records": records, "best": best, "last_weights": last}


def train_utk(build_dir, format: str = "tfrecord", model_name: str = "small", epochs: int = UTK_EPOCHS,
              batch_size: int = 16,
              shuffle_labels: bool = False, check: bool = False, lr: float = 1e-3, augment: bool = True,
              patience: int = UTK_PATIENCE, seed: int = 0, out=None, log=None, progress=null_progress,
              datasets=None, service: str | None = None, processing_mode: str | None = None) -> dict:
    """Train `small` (or `seed-bad`) on a build-utk output; validate on its val split each epoch.

    `datasets` = (train, val, num_classes, rescale) overrides the pipelines (tests).
    service="grpc://HOST:PORT": the train batches come from tf.data service workers (default mode
    distributed_epoch, so an epoch is still one pass over the split); validation is read here.
    """
    import keras

    from datakit import models

    if epochs < 1:
        raise DatakitError(f"--epochs {epochs}: expected at least 1")
    t_start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    if datasets is None:
        manifest = read_build(build_dir)
        num_classes = len(manifest["classes"])
        class_counts = [manifest["counts"]["train"].get(name, 0) for name in manifest["classes"]]
        train_ds, val_ds, rescale = utk_datasets(build_dir, format, batch_size, augment, seed, model_name,
                                                 service, processing_mode)
    else:
        train_ds, val_ds, num_classes, rescale = datasets
        class_counts = [1] * num_classes
    first_images, first_labels = _first_batch(train_ds)
    input_shape = tuple(int(d) for d in first_images.shape[1:])

    def build():
        return models.build_utk_model(model_name, input_shape, num_classes, rescale=rescale)

    model = build()  # refuses too-small images for seed-bad before any training
    out = _prepare_out(out)
    check_result = None
    if check:
        check_result = overfit_one_batch(build, lambda: keras.optimizers.Adam(lr), first_images, first_labels,
                                         from_logits=False)
        if log:
            log(check_result["line"])
        keras.utils.set_random_seed(seed)
        model = build()
    optimizer = keras.optimizers.Adam(lr)
    board = _Board(out)
    relabel = shuffled_labels_fn(class_counts, seed) if shuffle_labels else None
    try:
        fit = fit_epochs(model, optimizer, train_ds, val_ds, epochs, from_logits=False, relabel=relabel,
                         patience=patience, board=board, progress=progress, log=log)
    finally:
        board.close()
    best, history = fit["best"], fit["history"]
    final_loss = history[-1]["loss"]
    diag = diagnose(best["val_accuracy"], final_loss, num_classes, what="validation")
    metrics = {
        "target": "utk", "model": model_name, "format": format, "val_accuracy": best["val_accuracy"],
        "service": getattr(train_ds, "source", "").partition(" via tf.data service ")[2] or None,
        "val_loss": best["val_loss"], "train_accuracy": best["train_accuracy"], "best_epoch": best["epoch"],
        "epochs": len(history), "max_epochs": epochs, "final_loss": final_loss,
        "final_train_accuracy": history[-1]["accuracy"], "final_val_accuracy": history[-1]["val_accuracy"],
        "still_improving": best["epoch"] == len(history) == epochs,
        "stuck_at_chance": diag["stuck_at_chance"], "chance": diag["chance"], "ln_k": diag["ln_k"],
        "diagnosis": diag["lines"], "shuffle_labels": shuffle_labels, "check": check_result,
        **input_wait(fit["records"]), "batch_size": batch_size, "learning_rate": lr, "augment": augment,
        "num_classes": num_classes, "input_shape": list(input_shape), "parameters": int(model.count_params()),
        "seed": seed, "data": None if build_dir is None else str(build_dir),
    }
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    metrics["files"] = _finish(out, model, metrics, history)
    metrics["out"] = None if out is None else str(out)
    return metrics


def utk_augment(model_name: str, augment: bool):
    """(train Augment, val Augment, rescale) for pipelines.utk.

    small: flip + a mild random crop (the pipeline's 0.88 of the side) for training, the centre
    crop of the same size for validation; pixels stay 0..255 (standardize off) and the model's
    Rescaling(1/255) puts them in [0, 1], the classic fix. seed-bad: raw 0..255 pixels, no crop,
    no flip, no scaling, as the network that guessed at random was trained.
    """
    from datakit import pipelines
    from datakit.augment import Augment

    plain = Augment(crop=None, flip=False, brightness=None, contrast=None, standardize=False)
    if model_name == "seed-bad":
        return plain, plain, None
    if not augment:
        return plain, plain, 1 / 255.0
    train = Augment(crop=pipelines.UTK_CROP, flip=True, brightness=None, contrast=None, standardize=False)
    return train, train.for_eval(), 1 / 255.0


def utk_datasets(build_dir, format: str, batch_size: int, augment: bool, seed: int, model_name: str,
                 service: str | None = None, processing_mode: str | None = None):
    """(train, val, rescale) from datakit.pipelines.utk over the build's train and val splits
    (with `service`, the train batches are made on the tf.data service's workers)."""
    from datakit import pipelines

    train_aug, val_aug, rescale = utk_augment(model_name, augment)
    served = {"service": service, "processing_mode": processing_mode or "distributed_epoch"} if service else {}
    train = pipelines.utk(build_dir, split="train", format=format, batch_size=batch_size, augment=train_aug,
                          shuffle=True, seed=seed, drop_remainder=False, **served)
    val = pipelines.utk(build_dir, split="val", format=format, batch_size=max(batch_size, 64), augment=val_aug,
                        shuffle=False, seed=seed, drop_remainder=False)
    return train, val, rescale


# ----------------------------------------------------------------------------- report


def render(result: dict) -> str:
    """Human summary of a train_cifar10 / train_utk result."""
    lines = []
    check = result.get("check")
    if check:
        lines.append(check["line"])
    if result["target"] == "cifar10":
        lines.append(f"cifar10: {result['steps']} steps of {result['batch_size']} "
                     f"({result['optimizer']}, lr {result['learning_rate']:g}, schedule {result['schedule']})"
                     + (", SHUFFLED LABELS (control run)" if result["shuffle_labels"] else ""))
        lines.append(f"precision @ 1 = {result['test_accuracy']:.3f} on {result['test_examples']} test examples "
                     f"(test loss {result['test_loss']:.3f})")
    else:
        lines.append(f"utk: model {result['model']} on {result['format']}, {result['epochs']} of "
                     f"{result['max_epochs']} epochs, batch {result['batch_size']}"
                     + (", SHUFFLED LABELS (control run)" if result["shuffle_labels"] else ""))
        lines.append(f"best epoch {result['best_epoch']}: val_accuracy {result['val_accuracy']:.3f} "
                     f"(train accuracy {result['train_accuracy']:.3f}); chance {result['chance']:.3f}")
        if result.get("still_improving"):
            lines.append("validation accuracy was still improving at the last epoch: more --epochs may help")
    lines.append(f"{result['examples_per_sec']:.1f} examples/sec, {result['sec_per_batch']:.4f} sec/batch, "
                 f"input wait {result['input_wait_fraction']:.1%} of each step")
    lines.append(f"final training loss {result['final_loss']:.3f} (ln K = {result['ln_k']:.3f}); "
                 f"stuck_at_chance: {str(result['stuck_at_chance']).lower()}")
    lines += result["diagnosis"]
    if result.get("files"):
        lines.append("wrote:")
        lines += [f"  {key:<11} {path}" for key, path in result["files"].items()]
    return "\n".join(lines)


def demo_step(folder, seed: int, progress=null_progress) -> dict:
    """`datakit demo`: --check plus a short cifar10 run on a small synthetic CIFAR-10 folder."""
    from datakit.testing.synthetic_cifar import make_cifar10_dir

    folder = Path(folder)
    make_cifar10_dir(folder / "data", train_per_batch=40, test=200, seed=seed)
    out = folder / "run"
    result = train_cifar10(folder / "data", steps=40, batch_size=32, out=out, check=True, seed=seed,
                           progress=progress)
    lines = [f"train cifar10 --data {folder / 'data'} --steps 40 --batch 32 --check --out {out}",
             f"  (synthetic CIFAR-10: 200 train, 200 test pictures; the tutorial's net, {result['parameters']} "
             "parameters)"]
    lines += ["  " + line for line in render(result).splitlines()]
    keep = ("test_accuracy", "steps", "examples_per_sec", "input_wait_fraction", "stuck_at_chance", "check", "out")
    return {**{k: result[k] for k in keep}, "lines": lines}
