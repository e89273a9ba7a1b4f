"""tf.data input pipelines over any datakit dataset (CIFAR-10/100, builder outputs), with the tutorial's augmentation.

    from datakit import pipelines
    train = pipelines.cifar10("~/data", split="train", seed=0)
    for images, labels in train:          # float32 [128, 24, 24, 3], int32 [128]
        ...
    model.fit(train.dataset, ...)          # the same pipeline as a tf.data.Dataset
    val = pipelines.build("out/", split="val", batch_size=64)   # any build-utk / `datakit build` output

Options: every constructor takes `options=PipelineOptions(...)` and/or the same fields as keywords
(batch_size, augment, impl, shuffle, seed, repeat, device, service, processing_mode, threads,
drop_remainder, jit); `PipelineOptions` checks them in one place. The data comes from the
dataset's `tf_source(split, fmt, size)` (`datakit.datasets.tfdata.TFSource`): in-memory arrays, or
encoded elements plus their decode; this module has no dataset-specific reading code.

Two implementations of one `datakit.augment.Augment` config (`impl=`):
- "reference": the tutorial's pipeline: the images in a shuffled order element by element, each
  augmented with the tf.image ops in `Dataset.map(num_parallel_calls=threads)`, then batched.
- "fast": shuffled *index* batches gathered from the in-memory array (or decoded batches of a
  streamed source), augmented per batch by XLA-compiled code (see `datakit.augment`). For in-memory
  sources the moments of every possible crop are computed once when the pipeline is built
  (`crop_stats`), so each batch is a single fused pass, and 8 batches go through one compiled
  call (`augment.fast_group`: the launch of a call and the tf.data step around it cost as much
  as the pass itself on a small CPU); each batch is still what its own call would give.

Devices (`device=`): "auto" picks "gpu" when TensorFlow sees a GPU, else "cpu"; the choice is
`pipeline.device` and is logged on the `datakit.pipelines` logger. On "gpu", iterating the pipeline
prefetches onto the GPU (`tf.data.experimental.prefetch_to_device`) and, for impl="fast", runs the
batch augmentation there (tf.data functions always run on the CPU, so the fast function is applied
to the prefetched device tensors). `pipeline.dataset` is always the plain tf.data form (augmentation
inside tf.data on the CPU), which is what `model.fit` and tf.distribute expect.

Seeds and positions: every random draw is a stateless function of (seed, epoch, batch) (Grain-style;
per image: (seed, epoch, position in the epoch)): the permutation of epoch e is keyed by (seed, e),
the draws of batch b of epoch e by (seed, e, b). So the same seed gives the same batches in the same
order whatever the thread count, each epoch gets a fresh shuffle and fresh draws, and a pipeline's
position is two integers: `pipeline.state()` (JSON, a few hundred bytes) and `resume=state` on any
constructor continue exactly where iterating the pipeline stopped (see `Pipeline.state`).
Each pass over a non-repeating pipeline (Keras re-iterates `dataset` every epoch) is the next epoch.
In-memory sources are permuted whole per epoch; streamed ones (TFRecord, folders) in windows of the
source's `shuffle_buffer` elements (a build's whole split), each window permuted by (seed, epoch,
window), and a resume mid-epoch skips encoded elements only. Through the tf.data service there is no
position to restore: workers shuffle and draw with their own randomness (parallel_epochs) or the
dispatcher hands out the splits (distributed_epoch); such a state says "exact": false and resume=
refuses it, as it refuses an unseeded pipeline's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Callable

from datakit.augment import Augment, Draws, crop_stats, fast_batch, fast_group, reference_random
from datakit.datasets.cifar.spec import TRAIN_CROP as CIFAR_CROP  # the tutorial's crop: from_arrays' default
from datakit.errors import DatakitError

log = logging.getLogger("datakit.pipelines")

IMPLS = ("fast", "reference")
DEVICES = ("auto", "cpu", "gpu")

# stream tags of the seeded RNG (independent streams out of one user seed)
_SHUFFLE, _DRAWS, _REFERENCE = 1, 2, 3
STATE_VERSION = 1
_REPEAT_RESTART = 1 << 20  # a new iteration of a repeating `dataset` starts this many epochs on (a fresh stream)


def _tf():
    import tensorflow as tf

    return tf


def gpu_devices() -> list:
    """The GPUs TensorFlow sees (a function, so tests can stand in for a GPU machine)."""
    return _tf().config.list_physical_devices("GPU")


GPU_NAME = "/GPU:0"


def resolve_device(device: str) -> str:
    """'auto' -> 'gpu' when TensorFlow sees a GPU, else 'cpu'; 'gpu' without one is an error."""
    if device not in DEVICES:
        raise DatakitError(f"device must be one of {', '.join(DEVICES)}, got {device!r}", param="device")
    if device == "cpu":
        return "cpu"
    has_gpu = bool(gpu_devices())
    if device == "gpu" and not has_gpu:
        raise DatakitError("device 'gpu' requested but TensorFlow sees no GPU "
                           "(tf.config.list_physical_devices('GPU') is empty; is tensorflow-cpu installed?)",
                           param="device")
    return "gpu" if has_gpu else "cpu"


# ---------------------------------------------------------------- options


def _positive_int(name: str, value, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatakitError(f"{name} must be a positive integer, got {value!r}", param=name)


def _optional_bool(name: str, value) -> None:
    if value is not None and not isinstance(value, bool):
        raise DatakitError(f"{name} must be True, False or None, got {value!r}", param=name)


@dataclass(frozen=True)
class PipelineOptions:
    """How a pipeline batches, shuffles, augments and where it runs; checked once, here.

    batch_size: images per batch. augment: a `datakit.augment.Augment`, or None for the split's
    default (train: the dataset's training chain; other splits: centre crop + standardization).
    impl: "fast" (XLA-fused per batch) or "reference" (tf.image per image). shuffle, drop_remainder:
    None = True for the train split, False otherwise. seed: None = a fresh random seed. repeat:
    endless batches. device: "auto", "cpu" or "gpu". service: "grpc://HOST:PORT" of a tf.data
    service dispatcher (`datakit serve`); processing_mode: "parallel_epochs" or "distributed_epoch"
    (only with service). threads: tf.data private thread pool and map parallelism (None: autotune).
    jit: XLA-compile the fast path (False: plain TF ops, for debugging and for measuring the fusion).
    resume: a `Pipeline.state()` (the dict, or its JSON text): start just after its last batch; a
    state of another source, seed, batch size or batch-determining option is refused by name.
    """

    batch_size: int = 128
    augment: Augment | None = None
    impl: str = "fast"
    shuffle: bool | None = None
    seed: int | None = None
    repeat: bool = False
    device: str = "auto"
    service: str | None = None
    processing_mode: str | None = None
    threads: int | None = None
    drop_remainder: bool | None = None
    jit: bool = True
    resume: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        _positive_int("batch_size", self.batch_size)
        if self.resume is not None:
            object.__setattr__(self, "resume", _checked_state(self.resume))
            if self.service is not None:
                raise DatakitError("resume= with service=: the tf.data service's workers shuffle and draw with their "
                                   "own randomness (parallel_epochs) or the dispatcher owns the position "
                                   "(distributed_epoch), so no position can be restored", param="resume")
        _positive_int("threads", self.threads, optional=True)
        if self.impl not in IMPLS:
            raise DatakitError(f"impl must be one of {', '.join(IMPLS)}, got {self.impl!r}", param="impl")
        if self.device not in DEVICES:
            raise DatakitError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}", param="device")
        if self.augment is not None and not isinstance(self.augment, Augment):
            raise DatakitError(f"augment must be a datakit.augment.Augment, got {type(self.augment).__name__}",
                               param="augment")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise DatakitError(f"seed must be an integer or None, got {self.seed!r}", param="seed")
        _optional_bool("shuffle", self.shuffle)
        _optional_bool("drop_remainder", self.drop_remainder)
        for name in ("repeat", "jit"):
            if not isinstance(getattr(self, name), bool):
                raise DatakitError(f"{name} must be True or False, got {getattr(self, name)!r}", param=name)
        if self.service is not None:
            from datakit import service

            try:
                service.target(self.service)
            except DatakitError as exc:
                raise DatakitError(str(exc), param="service") from None
            if self.processing_mode is not None and self.processing_mode not in service.MODES:
                raise DatakitError(f"processing_mode must be one of {', '.join(service.MODES)}, "
                                   f"got {self.processing_mode!r}", param="processing_mode")
        elif self.processing_mode is not None:
            raise DatakitError(f"processing_mode={self.processing_mode!r} needs service='grpc://HOST:PORT'",
                               param="processing_mode")

    def replace(self, **changes) -> "PipelineOptions":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, options: "PipelineOptions | None" = None, defaults: dict | None = None, **keywords) -> "PipelineOptions":
        """`options` (or the defaults) with `keywords` applied: what every constructor does with its
        `options=` and keyword arguments. An unknown keyword is a TypeError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(f"unexpected pipeline option {unknown[0]!r} (PipelineOptions fields: {', '.join(sorted(names))})")
        if options is None:
            return cls(**{**(defaults or {}), **keywords})
        if not isinstance(options, cls):
            raise DatakitError(f"options must be a PipelineOptions, got {type(options).__name__}", param="options")
        return dataclasses.replace(options, **keywords) if keywords else options


# ---------------------------------------------------------------- the pipeline


@dataclass
class Pipeline:
    """An input pipeline. Iterate it for (images float32 [B, h, w, C], labels int32 [B]) batches.

    dataset: the tf.data.Dataset form of the same batches (augmentation inside tf.data); each
    iteration of it is the next epoch (of a repeating pipeline: a fresh endless stream).
    device: "cpu" or "gpu": where iterated batches land, and where impl="fast" augments.
    service / processing_mode: the tf.data service dispatcher ("grpc://HOST:PORT") the batches come
    from and its mode, or None for an in-process pipeline.
    epoch, batch: the position of the next batch that iterating the pipeline hands out (see `state`).
    """

    dataset: object
    device: str
    impl: str
    augment: Augment
    batch_size: int
    steps_per_epoch: int
    seed: int | None
    threads: int | None
    repeat: bool
    source: str
    service: str | None = None
    processing_mode: str | None = None
    count: int | None = None  # images in one epoch of the source
    epoch: int = 0
    batch: int = 0
    _device_stream: object = field(default=None, repr=False)
    _device_apply: Callable | None = field(default=None, repr=False)
    _stream: object = field(default=None, repr=False)     # `dataset` without its cardinality assertion
    _start: object = field(default=None, repr=False)      # tf.Variable [epoch, batch] the next iteration starts at
    _identity: dict = field(default_factory=dict, repr=False)  # {"source": ..., "options": ...} of `state`

    def __iter__(self):
        tf = _tf()
        if self._start is not None:  # start where the last batch handed out left off
            self._start.assign([self.epoch, self.batch])
        stream = self.dataset if self._stream is None else self._stream
        if self.device != "gpu":
            batches = iter(stream)
        elif self._device_stream is None:  # reference on a GPU machine: augmented on the CPU, prefetched
            batches = iter(stream.apply(tf.data.experimental.prefetch_to_device(GPU_NAME)))
        else:
            batches = (self._device_apply(*element) for element in self._device_stream)
        for batch in batches:
            self._advance()
            yield batch

    def _advance(self) -> None:
        self.batch += 1
        if self.batch >= self.steps_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0

    def __len__(self) -> int:
        if self.repeat:
            raise TypeError("a repeating pipeline has no length; see steps_per_epoch")
        return self.steps_per_epoch

    def take(self, n: int):
        """The next n batches (iterating the pipeline; no batch beyond the n-th is taken)."""
        if n <= 0:
            return
        for i, batch in enumerate(self):
            yield batch
            if i + 1 >= n:
                return

    def state(self) -> dict:
        """The position just after the last batch that iterating the pipeline (`for batch in pipeline`,
        `take`) handed out; prefetched batches do not count. A small JSON-serialisable dict:
        {"version", "source" (what is read), "options" (what decides the batches), "epoch", "batch"};
        pass it as `resume=` to a constructor to continue exactly from there.

        Not tracked: iterations of `pipeline.dataset` by other code (model.fit); for those, `state_at`
        the epoch and batch you know. An unseeded pipeline or one through the tf.data service has an
        inexact state ("exact": false, "why"): `resume=` refuses it.
        """
        return self.state_at(self.epoch, self.batch)

    def state_at(self, epoch: int, batch: int = 0) -> dict:
        """`state` for another position: batch `batch` of epoch `epoch` comes next (e.g. epoch k of model.fit)."""
        _nonnegative_int("epoch", epoch)
        _nonnegative_int("batch", batch)
        epoch, batch = epoch + batch // self.steps_per_epoch, batch % self.steps_per_epoch
        state = {"version": STATE_VERSION, **self._identity, "epoch": epoch, "batch": batch}
        why = None
        if self.service is not None:
            why = (f"batches from the tf.data service ({self.processing_mode}): "
                   + ("each worker shuffles and draws with its own randomness" if self.processing_mode == "parallel_epochs"
                      else "the dispatcher hands out the splits, and its position is not restorable"))
        elif self.seed is None:
            why = "an unseeded pipeline (seed=None): its draws cannot be made again; pass seed="
        if why is not None:
            state.update(exact=False, why=why)
        return state

    def describe(self) -> str:
        where = {"cpu": "on the CPU",
                 "gpu": "on the GPU" if self._device_stream is not None else "on the CPU, prefetched to the GPU"}
        if self.service is not None:
            where = {d: f"on the tf.data service workers of {self.service} ({self.processing_mode})" for d in where}
        at = f", resumed at epoch {self.epoch} batch {self.batch}" if self.epoch or self.batch else ""
        return (f"datakit.pipelines: {self.source}: impl={self.impl}, batch {self.batch_size}, "
                f"{self.steps_per_epoch} batches/epoch, augmentation {where[self.device]} "
                f"(device={self.device}), threads={self.threads or 'autotune'}, seed={self.seed}{at}; "
                f"{self.augment.describe()}")


# ---------------------------------------------------------------- states (positions)


def _nonnegative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatakitError(f"{name} must be a non-negative integer, got {value!r}", param=name)


def _checked_state(state) -> dict:
    """A `Pipeline.state()` (dict or JSON text) checked for its shape; what differs is checked later."""
    if isinstance(state, (str, bytes)):
        try:
            state = json.loads(state)
        except ValueError as exc:
            raise DatakitError(f"resume: not a pipeline state (JSON: {exc})", param="resume") from None
    if not isinstance(state, dict) or not {"version", "source", "options", "epoch", "batch"} <= set(state):
        raise DatakitError("resume: expected a Pipeline.state() dict with version, source, options, epoch and batch, "
                           f"got {str(state)[:80]!r}", param="resume")
    if state["version"] != STATE_VERSION:
        raise DatakitError(f"resume: state version {state['version']!r}, this datakit reads version {STATE_VERSION}",
                           param="resume")
    for name in ("epoch", "batch"):
        if isinstance(state[name], bool) or not isinstance(state[name], int) or state[name] < 0:
            raise DatakitError(f"resume: {name} must be a non-negative integer, got {state[name]!r}", param="resume")
    if state.get("exact") is False:
        raise DatakitError(f"resume: the state is of {state.get('why', 'a pipeline whose batches cannot be made again')}",
                           param="resume")
    return state


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True))


def _options_identity(o: "_Plan") -> dict:
    """What decides the batches, given the source: not threads, device or jit (same draws, same order),
    nor repeat (epoch e is the same batches whether a pass or a part of an endless stream)."""
    return _jsonable({"seed": o.seed if o.seeded else None, "batch_size": o.batch_size, "impl": o.impl,
                      "shuffle": o.shuffle, "drop_remainder": o.drop_remainder,
                      "augment": dataclasses.asdict(o.aug)})


def _differences(what: str, saved, here) -> list[str]:
    if isinstance(saved, dict) and isinstance(here, dict):
        out = []
        for k in sorted(set(saved) | set(here)):
            out += _differences(f"{what}.{k}" if what else k, saved.get(k), here.get(k))
        return out
    return [] if saved == here else [f"{what} {json.dumps(saved)} in the state, {json.dumps(here)} here"]


def _check_resume(state: dict, identity: dict, steps: int) -> tuple[int, int]:
    """The (epoch, batch) to start at, or a DatakitError naming what differs."""
    saved_options = state["options"]
    if isinstance(saved_options, dict) and saved_options.get("seed") is None:
        raise DatakitError("resume: the state is of an unseeded pipeline (seed=None): its draws cannot be made "
                           "again; pass seed=", param="resume")
    diff = _differences("", {"source": state["source"], "options": state["options"]}, identity)
    diff = [d.removeprefix("options.") for d in diff]
    if diff:
        raise DatakitError("resume: " + "; ".join(diff), param="resume")
    if state["batch"] >= steps:
        raise DatakitError(f"resume: batch {state['batch']} in the state, but an epoch has {steps} batches here",
                           param="resume")
    return state["epoch"], state["batch"]


# ---------------------------------------------------------------- shared plumbing


@dataclass(frozen=True)
class _Plan:
    """PipelineOptions resolved for one split: the augmentation, shuffle, seed and device decided."""

    aug: Augment
    impl: str
    batch_size: int
    shuffle: bool
    seed: int
    seeded: bool
    repeat: bool
    drop_remainder: bool
    threads: int | None
    device: str
    jit: bool
    service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher (datakit.service)
    mode: str | None = None     # its processing_mode
    resume: dict | None = None  # a Pipeline.state() to start from


def _plan(options: PipelineOptions, split: str, default_crop, default_mode: str = "parallel_epochs") -> _Plan:
    """Decide what the options leave to the split: train -> augmentation, shuffle, full batches."""
    o = options
    train = split == "train"
    service, mode, seed = None, None, o.seed
    if o.service is not None:
        from datakit import service as _service

        service, mode = _service.target(o.service), o.processing_mode or default_mode
        if seed is not None:
            log.info("datakit.pipelines: seed=%s is not applied through the tf.data service: each worker "
                     "shuffles and draws with its own randomness (identical seeds would duplicate batches)", seed)
            seed = None
    aug = o.augment
    if aug is None:
        aug = Augment(crop=default_crop) if train else Augment(crop=default_crop).for_eval()
    shuffle = train if o.shuffle is None else o.shuffle
    drop_remainder = train if o.drop_remainder is None else o.drop_remainder
    seeded = seed is not None
    return _Plan(aug, o.impl, o.batch_size, shuffle, int(seed) if seeded else secrets.randbits(62), seeded, o.repeat,
                 drop_remainder, o.threads, resolve_device(o.device), o.jit, service, mode, o.resume)


def _tf_options(o: _Plan):
    tf = _tf()
    opts = tf.data.Options()
    if o.threads:
        opts.threading.private_threadpool_size = o.threads
    opts.deterministic = o.seeded or not o.shuffle
    return opts


def _parallel(o: _Plan):
    return o.threads or _tf().data.AUTOTUNE


def _steps(n: int, o: _Plan, what: str) -> int:
    if n == 0:
        raise DatakitError(f"{what}: no images")
    steps = n // o.batch_size if o.drop_remainder else -(-n // o.batch_size)
    if steps == 0:
        raise DatakitError(f"{what}: {n} images, fewer than one batch of {o.batch_size} with drop_remainder; "
                           "use a smaller batch_size or drop_remainder=False", param="batch_size")
    return steps


def _fast(o: _Plan, images, labels, key, index=None, stats=None):
    return fast_batch(o.aug, images, labels, key, index=index, stats=stats, jit=o.jit)


class _Start:
    """Where the next iteration begins: a tf.Variable [epoch, batch], read in the graph when an iterator
    starts, which then moves it to the next epoch (what a new pass over `dataset` begins with).
    `Pipeline.__iter__` sets it to the pipeline's position first."""

    def __init__(self, epoch: int, batch: int, repeat: bool):
        tf = _tf()
        self.var = tf.Variable([epoch, batch], dtype=tf.int64, trainable=False, name="datakit_pipeline_start")
        self.repeat = repeat

    def assign(self, position) -> None:
        self.var.assign(position)

    def epochs(self):
        """Dataset of (epoch, first batch): one element, or (repeat) endless epochs from the start."""
        tf = _tf()
        var, step = self.var, _REPEAT_RESTART if self.repeat else 1

        def begin(_):
            old = var.read_value()
            with tf.control_dependencies([old]):
                moved = var.assign(tf.stack([old[0] + step, tf.constant(0, tf.int64)]))
            with tf.control_dependencies([moved]):
                return tf.identity(old[0]), tf.identity(old[1])

        first = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(begin)
        if not self.repeat:
            return first
        return first.flat_map(lambda e0, b0: tf.data.Dataset.range(e0, tf.int64.max).map(
            lambda e: (e, tf.where(tf.equal(e, e0), b0, tf.constant(0, tf.int64)))))


def _position(o: _Plan, identity: dict, steps: int):
    """(start variable or None under the service, epoch, batch): where the pipeline begins."""
    if o.service is not None:
        return None, 0, 0
    epoch, batch = _check_resume(o.resume, identity, steps) if o.resume is not None else (0, 0)
    return _Start(epoch, batch, o.repeat), epoch, batch


def _finish(core, o: _Plan, n: int, steps: int, source: str, identity: dict, start=None, at=(0, 0),
            stream=None, apply=None) -> Pipeline:
    """core: the batches (no prefetch) -> the Pipeline: `dataset` (with its cardinality when every pass is a
    whole epoch), the stream `__iter__` reads, the device stream."""
    tf = _tf()
    opts = _tf_options(o)
    plain = None
    if o.service is not None:  # everything so far runs on the workers; the trainer receives batches
        from datakit import service

        ds = service.distribute(core.with_options(opts), o.service, o.mode)
        source = f"{source} via tf.data service {o.service} ({o.mode})"
        stream, apply = None, None
    else:
        plain = core.prefetch(tf.data.AUTOTUNE).with_options(opts)
        ds = core
        if not o.repeat and at[1] == 0:  # a known length: Keras shows progress and never warns of running out
            ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(opts)
    if stream is not None and o.device == "gpu":
        stream = stream.with_options(opts).apply(tf.data.experimental.prefetch_to_device(GPU_NAME, 2))
    else:
        stream, apply = None, None
    p = Pipeline(dataset=ds, device=o.device, impl=o.impl, augment=o.aug, batch_size=o.batch_size,
                 steps_per_epoch=steps, seed=o.seed if o.seeded else None, threads=o.threads, repeat=o.repeat,
                 source=source, service=o.service, processing_mode=o.mode, count=n, epoch=at[0], batch=at[1],
                 _device_stream=stream, _device_apply=apply, _stream=plain, _start=start, _identity=identity)
    log.info(p.describe())
    return p


def _derived_seed(seed: int, tag: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed % (1 << 63), tag]).generate_state(1)[0])


def _key_at(base: int, epoch, i):
    """The stateless key [2] of element i (batch or image) of `epoch` in the stream `base` (_derived_seed):
    a closed form, so any position is reached without replaying the ones before. Both words are kept
    below 2**31: XLA's stateless RNG reads 32 bits of each, TensorFlow's kernels 64."""
    tf = _tf()
    seed = tf.stack([tf.constant(base, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.bitwise.bitwise_and(tf.random.experimental.stateless_fold_in(seed, tf.cast(i, tf.int64)),
                                  tf.constant(0x7FFFFFFF, tf.int64))


def _order(n: int, o: _Plan, epoch):
    """The image order of `epoch`: a permutation keyed by (seed, epoch), or 0..n-1."""
    tf = _tf()
    idx = tf.range(n, dtype=tf.int64)
    if not o.shuffle:
        return idx
    return tf.random.experimental.stateless_shuffle(idx, seed=_key_at(_derived_seed(o.seed, _SHUFFLE), epoch, 0))


def _window_permute(ds, window: int, o: _Plan, epoch):
    """A streamed epoch shuffled in windows of `window` elements, each permuted by (seed, epoch, window):
    the whole split when the window holds it (builds), so skipping to a batch of the epoch is exact."""
    tf = _tf()
    base = _derived_seed(o.seed, _SHUFFLE)

    def permute(w, k):
        n = tf.shape(tf.nest.flatten(w)[0])[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=_key_at(base, epoch, k))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), w)

    windows = tf.data.Dataset.zip((ds.batch(window), tf.data.Dataset.range(tf.int64.max)))
    return windows.map(permute).unbatch()


# The tf.data service path: workers cannot share a position (nor a variable), so its streams are random.

def _keys(o: _Plan, tag: int):
    """An endless stream of int64 keys, new on every iteration (tf.data service workers).

    Each worker must draw its own keys, even when a global seed (tf.random.set_seed,
    keras.utils.set_random_seed) makes every unseeded op deterministic: the worker's clock
    (tf.timestamp, read on the worker for each key) is folded into the stream."""
    tf = _tf()
    return tf.data.Dataset.random(rerandomize_each_iteration=True).map(
        lambda r: tf.bitwise.bitwise_xor(r, tf.bitcast(tf.timestamp(), tf.int64)))


def _key(r, tag: int):
    tf = _tf()
    return tf.stack([tf.cast(r, tf.int64), tf.constant(tag, tf.int64)])


def _worker_permute(ds, o: _Plan, window: int = 1024):
    """parallel_epochs: permute windows of elements with the worker's own keys.

    Why: under a global seed, `shuffle(seed=None)` gets the same op seed on every worker, so every
    worker would send its epoch in the same order (each image twice in a row, for two workers).
    """
    tf = _tf()
    if not o.shuffle or o.mode != "parallel_epochs":
        return ds

    def permute(w, r):
        n = tf.shape(tf.nest.flatten(w)[0])[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=_key(r, _SHUFFLE))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), w)

    return tf.data.Dataset.zip((ds.batch(window), _keys(o, _SHUFFLE))).map(permute).unbatch()


def _check_images(images, labels, what: str):
    import numpy as np

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DatakitError(f"{what}: images must be uint8 [N, height, width, channels], got {images.dtype} {images.shape}",
                           param="images")
    if labels.shape != (images.shape[0],):
        raise DatakitError(f"{what}: labels must be [N] with N = {images.shape[0]}, got {labels.shape}", param="labels")
    return images, labels.astype(np.int32)


def _arrays_identity(images, labels, source: str) -> dict:
    """Arrays' fingerprint: shape and a digest of the labels and of up to 256 evenly spaced images."""
    step = max(1, len(images) // 256)
    return {"dataset": source, "count": len(labels), "shape": list(images.shape[1:]),
            "digest": _digest(labels.tobytes(), images[::step].tobytes())}


def _source_identity(src) -> dict:
    return _jsonable(src.identity if src.identity is not None else
                     {"dataset": src.description, "count": src.count, "shape": list(src.image_shape)})


def _from_memory(images, labels, o: _Plan, source: str, identity: dict | None = None) -> Pipeline:
    tf = _tf()
    images, labels = _check_images(images, labels, source)
    n, h, w, _ = images.shape
    o.aug.crop_size(h, w)
    steps = _steps(n, o, source)
    identity = {"source": _jsonable(identity or _arrays_identity(images, labels, source)),
                "options": _options_identity(o)}
    start, *at = _position(o, identity, steps)
    bs, full, rest = o.batch_size, n // o.batch_size, n % o.batch_size
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)

    if o.impl == "reference":  # per image: one key per (epoch, position in the epoch)
        base = _derived_seed(o.seed, _REFERENCE)

        def epoch(e, b0):
            pos = tf.range(b0 * bs, full * bs if o.drop_remainder else n, dtype=tf.int64)
            ds = tf.data.Dataset.from_tensor_slices((tf.gather(_order(n, o, e), pos), pos))
            ds = ds.map(lambda i, p: (reference_random(o.aug, tf.gather(images_t, i), _key_at(base, e, p)),
                                      tf.gather(labels_t, i)), num_parallel_calls=_parallel(o))
            return ds.batch(bs, drop_remainder=o.drop_remainder)

        return _finish(start.epochs().flat_map(epoch), o, n, steps, source, identity, start, at)

    # the moments of every crop the draws can pick, once: each batch is then one fused pass
    stats_t = tf.constant(crop_stats(o.aug, images)) if o.aug.contrast is not None or o.aug.standardize else None
    base = _derived_seed(o.seed, _DRAWS)

    def epoch(e, b0):  # index batches of the epoch's order, each with its draws' key
        idx = _order(n, o, e)
        ds = tf.data.Dataset.from_tensor_slices((tf.reshape(idx[: full * bs], [full, bs]),
                                                 tf.range(full, dtype=tf.int64)))
        if rest and not o.drop_remainder:
            ds = ds.concatenate(tf.data.Dataset.from_tensors((idx[full * bs:], tf.constant(full, tf.int64))))
        return ds.skip(b0).map(lambda i, b: (i, _key_at(base, e, b)))

    def grouped(e, b0):  # the epoch's index batches in groups of _GROUP (see augment.fast_group)
        keyed = epoch(e, b0)
        count = tf.maximum(tf.constant(full, tf.int64) - b0, 0)  # full batches left in the epoch
        pad = functools.partial(_padded_group, batch_size=bs)
        groups = keyed.take(count).batch(_GROUP).map(pad)
        if rest and not o.drop_remainder:  # the short last batch: a group of its own, padded to the same shape
            groups = groups.concatenate(keyed.skip(count).batch(1).map(pad))
        return groups

    def call(idx, keys, k, m):
        return (*fast_group(o.aug, images_t, labels_t, keys, idx, stats=stats_t, jit=o.jit), k, m)

    # one parallel map across epochs (a map per epoch would drain at each epoch's end)
    ds = start.epochs().flat_map(grouped).map(call, num_parallel_calls=_parallel(o)).flat_map(_one_by_one)
    if o.device != "gpu":
        return _finish(ds, o, n, steps, source, identity, start, at)
    index = start.epochs().flat_map(epoch)
    # GPU: only index batches and keys travel to the device; the arrays are copied there once
    resident = {}

    def on_device(idx, key):
        if "images" not in resident:
            resident["images"], resident["labels"] = tf.identity(images_t), tf.identity(labels_t)
            resident["stats"] = None if stats_t is None else tf.identity(stats_t)
        return _fast(o, resident["images"], resident["labels"], key, index=idx, stats=resident["stats"])

    return _finish(ds, o, n, steps, source, identity, start, at, index, on_device)


_GROUP = 8  # full batches per compiled call of the in-memory fast path (see augment.fast_group)


def _padded_group(idx, keys, batch_size: int):
    """A group of up to _GROUP index batches padded to [_GROUP, batch_size], so that one compiled
    shape serves every group: by repeating its last batch (the epoch's last group may be short), and
    the short last batch of an epoch by repeating its last index (its draws are the first rows of a
    full batch's, see augment.draw); k: the real batches, m: their real length."""
    tf = _tf()
    k, m = tf.shape(idx)[0], tf.shape(idx)[1]
    idx = tf.concat([idx, tf.repeat(idx[:, -1:], batch_size - m, axis=1)], axis=1)
    idx = tf.concat([idx, tf.repeat(idx[-1:], _GROUP - k, axis=0)], axis=0)
    keys = tf.concat([keys, tf.repeat(keys[-1:], _GROUP - k, axis=0)], axis=0)
    return (tf.ensure_shape(idx, [_GROUP, batch_size]), tf.ensure_shape(keys, [_GROUP, 2]), tf.cast(k, tf.int64),
            tf.cast(m, tf.int64))


def _one_by_one(x, y, k, m):
    """The first k batches of one fast_group call, in order, each its first m images."""
    return _tf().data.Dataset.from_tensor_slices((x[:, :m], y[:, :m])).take(k)


def _streamed(src, o: _Plan) -> Pipeline:
    """Encoded elements (records, Examples, paths) -> shuffled (encoded: small), decoded, augmented."""
    tf = _tf()
    h, w, _ = src.image_shape
    o.aug.crop_size(h, w)
    n = src.count
    steps = _steps(n, o, src.description)
    source = f"{src.description} ({n} images)" if "images" not in src.description else src.description
    identity = {"source": _source_identity(src), "options": _options_identity(o)}
    if o.service is not None:
        return _served(src, o, n, steps, source, identity)
    start, *at = _position(o, identity, steps)
    bs, window = o.batch_size, max(1, min(n, src.shuffle_buffer))
    ref_base, draws_base = _derived_seed(o.seed, _REFERENCE), _derived_seed(o.seed, _DRAWS)
    endless = tf.data.Dataset.range

    def epoch(e, b0):  # the epoch's encoded elements in its order, from batch b0 (skipped before decoding)
        ds = src.read(False, o.shuffle)
        if o.shuffle:
            ds = _window_permute(ds, window, o, e)
        if o.drop_remainder:
            ds = ds.take((n // bs) * bs)
        ds = ds.skip(b0 * bs)
        if o.impl == "reference":
            ds = tf.data.Dataset.zip((ds.map(src.decode, num_parallel_calls=_parallel(o)),
                                      endless(b0 * bs, tf.int64.max)))
            ds = ds.map(lambda el, p: (reference_random(o.aug, el[0], _key_at(ref_base, e, p)), el[1]),
                        num_parallel_calls=_parallel(o))
            return ds.batch(bs, drop_remainder=o.drop_remainder)
        if src.decode_batch is not None:  # one decode per batch (raw records)
            ds = ds.batch(bs, drop_remainder=o.drop_remainder).map(src.decode_batch, num_parallel_calls=_parallel(o))
        else:  # per-element decode (JPEG), then batch
            ds = ds.map(src.decode, num_parallel_calls=_parallel(o)).batch(bs, drop_remainder=o.drop_remainder)
        return tf.data.Dataset.zip((ds, endless(b0, tf.int64.max))).map(
            lambda xy, b: (xy[0], xy[1], _key_at(draws_base, e, b)))

    raw = start.epochs().flat_map(epoch)
    if o.impl == "reference":
        return _finish(raw, o, n, steps, source, identity, start, at)

    def apply(x, y, key):
        return _fast(o, x, y, key)

    return _finish(raw.map(apply, num_parallel_calls=_parallel(o)), o, n, steps, source, identity, start, at,
                   raw, apply)


def _served(src, o: _Plan, n: int, steps: int, source: str, identity: dict) -> Pipeline:
    """The graph tf.data service workers run: their own shuffle and draws (no seed, no position)."""
    tf = _tf()
    ds = src.read(True, o.shuffle)
    if o.shuffle:
        ds = _worker_permute(ds.shuffle(max(1, min(n, src.shuffle_buffer)), seed=None,
                                        reshuffle_each_iteration=True), o)
    if o.repeat:
        ds = ds.repeat()
    if o.impl == "reference":
        ds = tf.data.Dataset.zip((ds.map(src.decode, num_parallel_calls=_parallel(o)), _keys(o, _REFERENCE)))
        ds = ds.map(lambda el, r: (reference_random(o.aug, el[0], _key(r, _REFERENCE)), el[1]),
                    num_parallel_calls=_parallel(o))
        return _finish(ds.batch(o.batch_size, drop_remainder=o.drop_remainder), o, n, steps, source, identity)
    if src.decode_batch is not None:
        ds = ds.batch(o.batch_size, drop_remainder=o.drop_remainder).map(src.decode_batch,
                                                                          num_parallel_calls=_parallel(o))
    else:
        ds = ds.map(src.decode, num_parallel_calls=_parallel(o)).batch(o.batch_size,
                                                                       drop_remainder=o.drop_remainder)
    ds = tf.data.Dataset.zip((ds, _keys(o, _DRAWS))).map(lambda b, r: _fast(o, b[0], b[1], _key(r, _DRAWS)),
                                                         num_parallel_calls=_parallel(o))
    return _finish(ds, o, n, steps, source, identity)


# ---------------------------------------------------------------- constructors


def from_source(src, split: str = "train", options: PipelineOptions | None = None, crop=CIFAR_CROP,
                **keywords) -> Pipeline:
    """A pipeline over a `datakit.datasets.tfdata.TFSource` (what a dataset's `tf_source` returns).

    In-memory sources take the fused in-memory path, unless the pipeline goes through the tf.data
    service: then the workers stream the source's files. crop: the default crop of `augment=None`.
    """
    opts = PipelineOptions.of(options, **keywords)
    o = _plan(opts, split, crop)
    if o.service is not None:
        if not src.streams:
            raise DatakitError(f"{src.description}: loaded into memory, so it cannot go through the tf.data service; "
                               "use a source whose files the workers read (format='tfrecord' or 'folders', CIFAR)",
                               param="service")
        return _streamed(src, o)
    if src.in_memory:
        images, labels = src.load()
        return _from_memory(images, labels, o, f"{src.description} ({len(labels)} images)"
                            if "images" not in src.description else src.description,
                            _source_identity(src) if src.identity is not None else None)
    return _streamed(src, o)


def from_arrays(images, labels, split: str = "train", options: PipelineOptions | None = None, crop=CIFAR_CROP,
                source: str = "arrays", **keywords) -> Pipeline:
    """A pipeline over in-memory uint8 images [N, H, W, C] and labels [N] (synthetic data, your own arrays).

    split decides the defaults: "train" -> the tutorial's augmentation, shuffle, drop_remainder;
    anything else -> centre crop + standardization, file order, the last partial batch kept.
    Options: `PipelineOptions` fields as keywords, or `options=`. service= is refused here: the
    arrays would travel inside the dataset graph to every worker.
    """
    opts = PipelineOptions.of(options, **keywords)
    if opts.service is not None:
        raise DatakitError(f"{source}: service= needs a pipeline that reads files (cifar10/cifar100, build "
                           "tfrecord or folders): from_arrays would ship the whole array inside the graph to every "
                           "worker", param="service")
    return _from_memory(images, labels, _plan(opts, split, crop), source)


def dataset_pipeline(dataset, split: str = "train", format: str | None = None, size: int | None = None,
                     options: PipelineOptions | None = None, **keywords) -> Pipeline:
    """A pipeline over one split of any `datakit.datasets.Dataset` (its `tf_source`, its default crop)."""
    opts = PipelineOptions.of(options, **keywords)
    src = dataset.tf_source(split, format, size)
    return from_source(src, split, opts, crop=dataset.default_crop)


def _open(path, label_mode=None, key: str | None = None):
    from datakit.datasets.registry import open_dataset

    dataset = open_dataset(os.path.expanduser(str(path)), label_mode=label_mode)
    if key is not None and dataset.key != key:
        raise DatakitError(f"{path}: holds {dataset.key}, not {key}")
    return dataset


def build(build_dir, split: str = "train", format: str = "tfrecord", size: int | None = None,
          options: PipelineOptions | None = None, **keywords) -> Pipeline:
    """Batches (images float32 [B, c, c, 3], labels int32 [B]) over any builder output folder
    (`datakit build-utk`, `datakit build`), read through its manifest.json.

    format "tfrecord" and "folders" decode the JPEGs inside the pipeline (parallel map); "hdf5" loads
    the decoded uint8 arrays into memory (the in-memory path of `from_arrays`). size: resize to
    size x size first (default: the build's size). The crop is the dataset's default (relative to the
    image side). Label = the index in manifest["classes"]. batch_size defaults to 64.
    """
    return dataset_pipeline(_open(build_dir), split, format, size, PipelineOptions.of(
        options, defaults={"batch_size": 64}, **keywords))


def utk(build_dir, split: str = "train", format: str = "tfrecord", size: int | None = None,
        options: PipelineOptions | None = None, **keywords) -> Pipeline:
    """`build` over a build-utk output (label = race_index * 2 + gender, as its manifest lists the classes)."""
    return build(build_dir, split, format, size, options, **keywords)


def cifar10(data_dir, split: str = "train", options: PipelineOptions | None = None, **keywords) -> Pipeline:
    """CIFAR-10 batches (images float32 [B, 24, 24, 3], labels int32 [B]) from the folder holding
    cifar-10-batches-bin/. Train: the tutorial's augmentation, shuffled, full batches only; test:
    deterministic centre crops in file order, the last partial batch kept. See `PipelineOptions`.

    service="grpc://HOST:PORT": reading, decoding and augmentation run on the tf.data service's
    workers (`datakit serve`), which open the .bin files at the same absolute path; processing_mode
    "parallel_epochs" (default: every worker streams whole epochs of its own) or "distributed_epoch"
    (each record once per epoch across the workers). `seed` is not applied then, and
    steps_per_epoch counts one epoch of one worker (see datakit.service)."""
    return dataset_pipeline(_cifar("cifar10", data_dir, None), split, options=options, **keywords)


def cifar100(data_dir, split: str = "train", options: PipelineOptions | None = None, label_mode: str = "fine",
             **keywords) -> Pipeline:
    """CIFAR-100 batches like `cifar10`, from the folder holding cifar-100-binary/; label_mode
    "fine" (100 classes) or "coarse" (20 superclasses)."""
    return dataset_pipeline(_cifar("cifar100", data_dir, label_mode), split, options=options, **keywords)




def _cifar(key: str, data_dir, label_mode: str | None):
    from datakit.datasets.cifar.dataset import CifarDataset

    dataset = CifarDataset(os.path.expanduser(str(data_dir)), label_mode=label_mode)
    if dataset.key != key:
        raise DatakitError(f"{data_dir}: holds {dataset.spec.title}, not {key}", param="data_dir")
    return dataset


__all__ = ["Augment", "Draws", "Pipeline", "PipelineOptions", "build", "cifar10", "cifar100", "dataset_pipeline",
           "from_arrays", "from_source", "resolve_device", "utk"]
