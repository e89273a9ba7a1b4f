"""`datakit bench-aug`: the augmentation pipelines side by side, in one run, on the same data.

Each implementation gets its own endless pipeline (`datakit.pipelines.from_arrays`, train split,
same seed, same thread setting) over the same images; after a warm-up (XLA compilation, shuffle
buffer fill), timed windows of each implementation alternate round by round, so that the noise of
a shared machine hits all of them alike. A window is at least `steps` batches and at least
`min_seconds`; the figure reported is the median window. Each window reads a fresh iterator
(after `warmup` untimed batches) that is dropped after it: with one iterator kept per
implementation, the idle ones kept filling the prefetch buffers that autotuning had grown, taking
CPU from the one being timed and then draining a backlog in their own window (the stock Keras
stack's figure doubled from round to round while the layer's beside it fell by as much).

The consumer (`consumer=`) is what a training loop sees:
- "graph" (default on the CPU): batches taken inside a compiled loop, `steps` per call, as
  `model.fit` takes them (its train function loops over the iterator in a tf.function, with
  `steps_per_execution`) and as custom `tf.function` training loops do; each batch is touched
  (one element read) so nothing is pruned. The figure is the pipeline's own rate.
- "python": `next()` on the iterator in a Python loop, one batch at a time. On a small machine
  this loop alone caps the rate (a pipeline of ready batches: a few hundred thousand images/s at
  batch 128), so it measures the loop as much as the pipeline. GPU pipelines and the tf.data
  service always use it (their batches reach the trainer through the Python iterator).

"crop+cast" is the physical bound: the fast path with every op but the crop turned off, a
gather and a cast to float32 of the same batches: one memory pass and nothing else.

The peers augment the same raw batches (shuffled index batches gathered from the in-memory uint8
array, as `model.fit(x, y)` slices arrays; one seeded permutation per epoch):
- "keras-layers": the tutorial's chain as a user writes it with stock Keras 3 preprocessing layers
  (`RandomCrop`, `RandomFlip("horizontal")`, `RandomBrightness`, `RandomContrast`, then
  `tf.image.per_image_standardization` in a `Lambda`), applied per batch in tf.data as the Keras
  docs show: `ds.map(lambda x, y: (stack(x, training=True), y))`. Same ranges as the Augment config;
  stock differences: `RandomCrop` takes one offset per batch, brightness and contrast clip to 0..255.
- "datakit-layer": `datakit.layers.AugmentLayer` in a model's forward pass: `model(x, training=True)`
  on each raw batch, in the consumer (where the model runs: inside the compiled loop, or a
  tf.function per batch with the Python consumer).
"""

from __future__ import annotations

import gc
import os
import statistics
import time

from datakit.augment import Augment
from datakit.errors import DatakitError
from datakit.progress import null_progress

IMPLS = ("reference", "fast", "crop+cast", "fast-nojit", "keras-layers", "datakit-layer")
BOUND = "crop+cast"
UNFUSED = "fast-nojit"  # the fast path as plain TF ops (no XLA): shows what the fusion buys
KERAS, LAYER = "keras-layers", "datakit-layer"  # the peers: stock Keras layers in tf.data; datakit's layer in a model
PEERS = (KERAS, LAYER)
DEFAULT_IMPLS = ("reference", "fast", BOUND, KERAS, LAYER)  # what `datakit bench-aug` measures by default


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_data(data, images: int = 10000, seed: int = 0):
    """(uint8 [N, 32, 32, 3], labels, description): CIFAR-10 train from `data`, or synthetic CIFAR-shaped."""
    import numpy as np

    if data in (None, "synthetic"):
        from datakit.testing import synthetic_cifar

        x, y = synthetic_cifar.cifar10_arrays(images, np.random.default_rng(seed))
        return x, y, f"synthetic ({images} CIFAR-shaped 32x32 images)"
    from datakit.datasets import cifar

    x, y = cifar.load(os.path.expanduser(str(data)), split="train", dataset="cifar10")
    return x, y, f"{data} (CIFAR-10 train, {len(y)} images)"


def _options(impl: str, batch: int, threads: int, device: str, seed: int, service: str | None = None,
             processing_mode: str | None = None):
    """The PipelineOptions of one implementation: bench-aug's names map onto impl, augment and jit."""
    from datakit import pipelines

    opts = pipelines.PipelineOptions(batch_size=batch, impl="reference" if impl == "reference" else "fast",
                                     seed=seed, repeat=True, threads=threads, device=device, service=service,
                                     processing_mode=processing_mode if service else None, jit=impl != UNFUSED)
    if impl == BOUND:
        opts = opts.replace(augment=Augment(crop=pipelines.CIFAR_CROP, flip=False, brightness=None, contrast=None,
                                            standardize=False))
    return opts


def _pipeline(impl: str, images, labels, options):
    from datakit import pipelines

    if impl in PEERS:
        return _peer(impl, images, labels, options)
    return pipelines.from_arrays(images, labels, options=options, source=f"bench {impl}")


class _Peer:
    """A peer's endless batches (`dataset`, then `forward` on each batch's images where the model
    runs, or None), with what the results table shows of a pipeline (device, augment)."""

    def __init__(self, dataset, forward, device: str, described: str):
        self.dataset, self.forward, self.device, self.described = dataset, forward, device, described

    def __iter__(self):
        if self.forward is None:
            return iter(self.dataset)
        step = _tf().function(self.forward)
        return ((step(x), y) for x, y in self.dataset)


def _tf():
    import tensorflow as tf

    return tf


def _raw_batches(images, labels, options):
    """Endless shuffled (uint8 [B, H, W, C], int32 [B]) batches of the arrays: what the peers augment."""
    import tensorflow as tf

    from datakit import pipelines

    n, batch = len(labels), options.batch_size
    images_t, labels_t = tf.constant(images), tf.constant(labels.astype("int32"))

    def epoch(r):  # one seeded permutation per epoch, cut into full batches
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([r, tf.constant(1, tf.int64)]))
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[: n // batch * batch], [n // batch, batch]))

    ds = tf.data.Dataset.random(seed=options.seed, rerandomize_each_iteration=True).flat_map(epoch)
    ds = ds.map(lambda idx: (tf.gather(images_t, idx), tf.gather(labels_t, idx)),
                num_parallel_calls=options.threads or tf.data.AUTOTUNE)
    tf_options = tf.data.Options()
    if options.threads:
        tf_options.threading.private_threadpool_size = options.threads
    return ds.with_options(tf_options), options.augment or Augment(crop=pipelines.CIFAR_CROP)


def keras_tutorial_stack(aug: Augment, image_hw: tuple[int, int], seed: int | None = None):
    """The Augment chain as stock Keras 3 preprocessing layers (what a Keras user writes for the tutorial)."""
    import keras
    import tensorflow as tf

    if aug.center_crop:
        raise DatakitError("keras-layers: the stock stack is the training chain (random crop)", param="augment")
    k = (lambda i: None) if seed is None else (lambda i: seed + i)  # noqa: E731
    stack = []
    if aug.crop is not None:
        stack.append(keras.layers.RandomCrop(*aug.crop_size(*image_hw), seed=k(1)))
    if aug.flip:
        stack.append(keras.layers.RandomFlip("horizontal", seed=k(2)))
    if aug.brightness is not None:  # factor: a fraction of the value range; delta uniform in +-63
        stack.append(keras.layers.RandomBrightness(aug.brightness / 255.0, value_range=(0, 255), seed=k(3)))
    if aug.contrast is not None:    # factor (a, b): contrast in [1 - a, 1 + b], the tutorial's [0.2, 1.8]
        lo, hi = aug.contrast
        stack.append(keras.layers.RandomContrast((1.0 - lo, hi - 1.0), value_range=(0, 255), seed=k(4)))
    if aug.standardize:
        stack.append(keras.layers.Lambda(tf.image.per_image_standardization))
    return keras.Sequential(stack, name="keras_tutorial_augmentation")


def _peer(impl: str, images, labels, options) -> _Peer:
    import tensorflow as tf

    raw, aug = _raw_batches(images, labels, options)
    hw = images.shape[1:3]
    if impl == KERAS:
        stack = keras_tutorial_stack(aug, hw, options.seed)
        ds = raw.map(lambda x, y: (stack(x, training=True), y), num_parallel_calls=options.threads or tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        names = ", ".join(type(layer).__name__ for layer in stack.layers)
        return _Peer(ds, None, "cpu", f"stock Keras layers in tf.data.map: {names}")
    import keras

    from datakit.layers import AugmentLayer

    model = keras.Sequential([keras.Input((*hw, images.shape[3]), dtype="uint8"), AugmentLayer(aug, seed=options.seed)])
    return _Peer(raw.prefetch(tf.data.AUTOTUNE), lambda x: model(x, training=True), options.device,
                 f"datakit AugmentLayer in model(x, training=True): {aug.describe()}")


def _service_data(data, images: int, seed: int) -> tuple[str, str, str | None]:
    """(CIFAR-10 folder the workers read, description, note) for bench-aug --service.

    The workers open the files themselves, so in-memory synthetic data will not do: synthetic
    CIFAR-10 binaries are written once under the temporary folder (readable by workers on this machine).
    """
    import tempfile
    from pathlib import Path

    if data not in (None, "synthetic"):
        folder = os.path.abspath(os.path.expanduser(str(data)))
        return folder, f"{folder} (CIFAR-10 train, read by the workers)", None
    from datakit.testing import synthetic_cifar

    per_file = max(1, -(-images // 5))
    folder = Path(tempfile.gettempdir()) / "datakit-bench-aug" / f"synthetic-{per_file * 5}-{seed}"
    if not (folder / "cifar-10-batches-bin" / "test_batch.bin").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))  # renamed when complete
        synthetic_cifar.make_cifar10_dir(tmp, train_per_batch=per_file, test=10, seed=seed)
        try:
            os.rename(tmp, folder)
        except OSError:  # written meanwhile by another run
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return (str(folder), f"synthetic ({per_file * 5} CIFAR-shaped images as CIFAR-10 binaries in {folder})",
            f"synthetic data written to {folder}: only workers on this machine can read it (--data DIR for others)")


def _service_pipeline(data_dir: str, options):
    """The same implementations, built by pipelines.cifar10 reading the files on the tf.data service's workers."""
    from datakit import pipelines

    return pipelines.cifar10(data_dir, split="train", options=options)


def _sync(batch) -> None:
    """Wait for the batch to exist (GPU work is asynchronous): fetch one element."""
    batch[0][0, 0, 0, 0].numpy()


CONSUMERS = ("graph", "python")


class _PythonTaker:
    """take(n): n batches by next() in a Python loop."""

    def __init__(self, pipe):
        self.it = iter(pipe)

    def __call__(self, n: int) -> None:
        for _ in range(n):
            batch = next(self.it)
        _sync(batch)


class _GraphTaker:
    """take(n): n batches inside one compiled loop (see the module doc), each touched once."""

    def __init__(self, dataset, forward=None):
        tf = _tf()
        it = iter(dataset)

        @tf.function
        def take(n):
            acc = tf.constant(0.0)
            for _ in tf.range(n):
                x, _ = next(it)
                if forward is not None:
                    x = forward(x)
                acc += tf.cast(x[0, 0, 0, 0], tf.float32)
            return acc

        self.take = take

    def __call__(self, n: int) -> None:
        self.take(_tf().constant(n, _tf().int64)).numpy()


def _taker(pipe, consumer: str):
    if consumer == "python":
        return _PythonTaker(pipe)
    return _GraphTaker(pipe.dataset, getattr(pipe, "forward", None))


def _window(take, steps: int, min_seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while True:
        take(steps)
        n += steps
        if time.perf_counter() - t0 >= min_seconds:
            break
    return n, time.perf_counter() - t0


def bench_aug(threads: int = 16, batch: int = 128, steps: int = 50, data=None, impls=("reference", "fast", BOUND),
              device: str = "auto", rounds: int = 3, warmup: int = 10, min_seconds: float = 1.0,
              images: int = 10000, seed: int = 0, service: str | None = None,
              processing_mode: str = "parallel_epochs", consumer: str = "graph", progress=null_progress) -> dict:
    """Measure each implementation in `impls`; returns the figures (the CLI renders them).

    consumer: "graph" or "python" (module doc); "graph" falls back to "python" for GPU pipelines
    and the tf.data service, with a note.

    service="grpc://HOST:PORT": the pipelines read CIFAR-10 files and augment on the tf.data service's
    workers (`datakit serve`); the figure is what the trainer receives."""
    from datakit import pipelines

    impls = list(dict.fromkeys(impls))
    for impl in impls:
        if impl not in IMPLS:
            raise DatakitError(f"impls: {impl!r} is not among {', '.join(IMPLS)}", param="impls")
    if not impls:
        raise DatakitError("impls: nothing to measure", param="impls")
    if service is not None and set(impls) & set(PEERS):
        raise DatakitError(f"impls: {', '.join(PEERS)} run in this process on in-memory data, not on a tf.data "
                           "service", param="impls")
    for name, value in (("threads", threads), ("batch", batch), ("steps", steps), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatakitError(f"{name}={value!r}: expected a positive integer", param=name)
    if consumer not in CONSUMERS:
        raise DatakitError(f"consumer={consumer!r}: must be one of {', '.join(CONSUMERS)}", param="consumer")
    resolved = pipelines.resolve_device(device)
    asked = consumer
    if consumer == "graph" and (resolved != "cpu" or service is not None):
        consumer = "python"
    service_note = None
    if service is None:
        x, y, described = load_data(data, images, seed)
        if len(y) < batch:
            raise DatakitError(f"{described}: fewer images than one batch of {batch}", param="batch")
        make = lambda impl: _pipeline(impl, x, y, _options(impl, batch, threads, resolved, seed))  # noqa: E731
    else:
        data_dir, described, service_note = _service_data(data, images, seed)
        make = lambda impl: _service_pipeline(data_dir, _options(impl, batch, threads, resolved, seed,  # noqa: E731
                                                                 service, processing_mode))

    bar = progress(desc="bench-aug", total=len(impls) * (rounds + 1), unit="window")
    pipes = {}
    for impl in impls:  # build every pipeline and run it once (tracing, XLA compilation, crop statistics)
        pipes[impl] = make(impl)
        _taker(pipes[impl], consumer)(warmup + steps)
        gc.collect()
        bar.update(1)
    windows = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl in impls:
            # a fresh iterator per window, dropped after it: an idle pipeline's prefetch buffers (which
            # autotuning grows) would otherwise keep filling while the others are timed, taking their
            # CPU, and its next window would start by draining them
            take = _taker(pipes[impl], consumer)
            take(warmup)  # untimed: thread pools and buffers ramp up
            n, seconds = _window(take, steps, min_seconds)
            del take
            gc.collect()
            windows[impl].append((n, seconds))
            bar.update(1)
    bar.close()

    results = []
    for impl in impls:
        rates = [n * batch / s for n, s in windows[impl]]
        rate = statistics.median(rates)
        p = pipes[impl]
        results.append({
            "impl": impl, "images_per_sec": round(rate, 1), "ms_per_batch": round(1000.0 * batch / rate, 4),
            "min_images_per_sec": round(min(rates), 1), "max_images_per_sec": round(max(rates), 1),
            "batches": sum(n for n, _ in windows[impl]), "seconds": round(sum(s for _, s in windows[impl]), 3),
            "device": p.device if impl != "reference" or p.device == "cpu" else "cpu (prefetched to gpu)",
            "augment": p.described if impl in PEERS else p.augment.describe(),
        })
    by = {r["impl"]: r["images_per_sec"] for r in results}
    n_cores = cores()
    notes = []
    if threads > n_cores:
        notes.append(f"{threads} threads on {n_cores} cores: the thread pool oversubscribes the machine "
                     f"(16 is the tutorial's figure)")
    if resolved == "cpu" and device == "auto":
        notes.append("no GPU visible to TensorFlow: everything ran on the CPU")
    if consumer != asked:
        notes.append(f"consumer: python ({'GPU pipelines' if resolved != 'cpu' else 'the tf.data service'} hand "
                     "their batches to the trainer through the Python iterator)")
    if service is not None:
        notes.append(f"through the tf.data service {service} ({processing_mode}): reading and augmentation on its "
                     "workers, --threads applies there; workers on this machine share its cores")
        if service_note:
            notes.append(service_note)
    out = {"threads": threads, "batch": batch, "device": resolved, "cores": n_cores, "data": described,
           "consumer": consumer,
           "steps": steps, "rounds": rounds, "min_seconds": min_seconds, "results": results, "notes": notes,
           "service": service, "processing_mode": processing_mode if service else None}
    if "fast" in by and "reference" in by:
        out["fast_over_reference"] = round(by["fast"] / by["reference"], 2)
    if "fast" in by and BOUND in by:
        out["fast_of_bound"] = round(by["fast"] / by[BOUND], 3)
    if "fast" in by and KERAS in by:
        out["fast_over_keras_layers"] = round(by["fast"] / by[KERAS], 2)
    if LAYER in by and KERAS in by:
        out["layer_over_keras_layers"] = round(by[LAYER] / by[KERAS], 2)
    return out
