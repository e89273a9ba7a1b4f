"""tf.data input pipelines for CIFAR-10/100 and the outputs of build-utk, with the tutorial's augmentation.

    from datakit import pipelines
    train = pipelines.cifar10("~/data", split="train", seed=0)
    for images, labels in train:          # float32 [128, 24, 24, 3], int32 [128]
        ...
    model.fit(train.dataset, ...)          # the same pipeline as a tf.data.Dataset

Two implementations of one `datakit.augment.Augment` config (`impl=`):
- "reference": the tutorial's pipeline: shuffle the decoded images element by element, augment each
  image with the tf.image ops in `Dataset.map(num_parallel_calls=threads)`, then batch.
- "fast": shuffled *index* batches gathered from the in-memory array (or decoded JPEG batches),
  augmented per batch by XLA-compiled code (see `datakit.augment`). For in-memory sources the
  moments of every possible crop are computed once when the pipeline is built (`crop_stats`,
  about 1 s and 97 MB for CIFAR-10 train), so each batch is a single fused pass.

Devices (`device=`): "auto" picks "gpu" when TensorFlow sees a GPU, else "cpu"; the choice is
`pipeline.device` and is logged on the `datakit.pipelines` logger. On "gpu", iterating the pipeline
prefetches onto the GPU (`tf.data.experimental.prefetch_to_device`) and, for impl="fast", runs the
batch augmentation there (tf.data functions always run on the CPU, so the fast function is applied
to the prefetched device tensors). `pipeline.dataset` is always the plain tf.data form (augmentation
inside tf.data on the CPU), which is what `model.fit` and tf.distribute expect.

Seeds: every random draw is a stateless function of a key taken, in order, from a seeded
`Dataset.random(rerandomize_each_iteration=True)` stream (one key per epoch for the permutation,
one per batch or image for the augmentation). So the same seed gives the same batches in the same
order, whatever the thread count, and each new pass over the same pipeline (Keras re-iterates
`dataset` every epoch) still gets a fresh shuffle and fresh draws.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datakit.augment import Augment, Draws, crop_stats, fast_batch, reference_random
from datakit.errors import DatakitError

log = logging.getLogger("datakit.pipelines")

IMPLS = ("fast", "reference")
DEVICES = ("auto", "cpu", "gpu")
UTK_FORMATS = ("tfrecord", "hdf5", "folders")
CIFAR_CROP = 24
UTK_CROP = 0.88

# stream tags of the seeded RNG (independent streams out of one user seed)
_SHUFFLE, _DRAWS, _REFERENCE = 1, 2, 3


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
        raise DatakitError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    has_gpu = bool(gpu_devices())
    if device == "gpu" and not has_gpu:
        raise DatakitError("device 'gpu' requested but TensorFlow sees no GPU "
                           "(tf.config.list_physical_devices('GPU') is empty; is tensorflow-cpu installed?)")
    return "gpu" if has_gpu else "cpu"


@dataclass
class Pipeline:
    """An input pipeline. Iterate it for (images float32 [B, h, w, C], labels int32 [B]) batches.

    dataset: the tf.data.Dataset form of the same batches (augmentation inside tf.data).
    device: "cpu" or "gpu": where iterated batches land, and where impl="fast" augments.
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
    _device_stream: object = field(default=None, repr=False)
    _device_apply: Callable | None = field(default=None, repr=False)

    def __iter__(self):
        tf = _tf()
        if self.device != "gpu":
            yield from self.dataset
            return
        if self._device_stream is None:  # reference on a GPU machine: augmented on the CPU, prefetched
            yield from self.dataset.apply(tf.data.experimental.prefetch_to_device(GPU_NAME))
            return
        for element in self._device_stream:
            with tf.device(GPU_NAME):
                yield self._device_apply(*element)

    def __len__(self) -> int:
        if self.repeat:
            raise TypeError("a repeating pipeline has no length; see steps_per_epoch")
        return self.steps_per_epoch

    def take(self, n: int):
        """The first n batches (iterating the pipeline)."""
        for i, batch in enumerate(self):
            if i >= n:
                return
            yield batch

    def describe(self) -> str:
        where = {"cpu": "on the CPU",
                 "gpu": "on the GPU" if self._device_stream is not None else "on the CPU, prefetched to the GPU"}
        return (f"datakit.pipelines: {self.source}: impl={self.impl}, batch {self.batch_size}, "
                f"{self.steps_per_epoch} batches/epoch, augmentation {where[self.device]} "
                f"(device={self.device}), threads={self.threads or 'autotune'}, seed={self.seed}; {self.augment.describe()}")


# ---------------------------------------------------------------- shared plumbing


@dataclass(frozen=True)
class _Opts:
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
    service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher (datakit.service)
    mode: str | None = None     # its processing_mode


def _options(o: _Opts):
    tf = _tf()
    opts = tf.data.Options()
    if o.threads:
        opts.threading.private_threadpool_size = o.threads
    opts.deterministic = o.seeded or not o.shuffle
    return opts


def _parallel(o: _Opts):
    return o.threads or _tf().data.AUTOTUNE


def _prepare(split, augment, impl, batch_size, shuffle, seed, repeat, drop_remainder, threads, device,
             service, default_crop, train_splits=("train",), processing_mode=None) -> _Opts:
    if service is not None:
        from datakit import service as _service

        service = _service.target(service)
        processing_mode = _service.check_mode(processing_mode or "parallel_epochs")
        if seed is not None:
            log.info("datakit.pipelines: seed=%s is not applied through the tf.data service: each worker "
                     "shuffles and draws with its own randomness (identical seeds would duplicate batches)", seed)
            seed = None
    elif processing_mode is not None:
        raise DatakitError(f"processing_mode={processing_mode!r} needs service='grpc://HOST:PORT'")
    if impl not in IMPLS:
        raise DatakitError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DatakitError(f"batch_size must be a positive integer, got {batch_size!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise DatakitError(f"threads must be a positive integer, got {threads!r}")
    train = split in train_splits
    if augment is None:
        augment = Augment(crop=default_crop) if train else Augment(crop=default_crop).for_eval()
    elif not isinstance(augment, Augment):
        raise DatakitError(f"augment must be a datakit.augment.Augment, got {type(augment).__name__}")
    shuffle = train if shuffle is None else bool(shuffle)
    drop_remainder = train if drop_remainder is None else bool(drop_remainder)
    seeded = seed is not None
    if seed is None:
        seed = secrets.randbits(62)
    return _Opts(augment, impl, batch_size, shuffle, int(seed), seeded, bool(repeat), drop_remainder,
                 threads, resolve_device(device), service, processing_mode)


def _steps(n: int, o: _Opts, what: str) -> int:
    if n == 0:
        raise DatakitError(f"{what}: no images")
    steps = n // o.batch_size if o.drop_remainder else -(-n // o.batch_size)
    if steps == 0:
        raise DatakitError(f"{what}: {n} images, fewer than one batch of {o.batch_size} with drop_remainder; "
                           "use a smaller batch_size or drop_remainder=False")
    return steps


def _finish(ds, o: _Opts, n: int, steps: int, source: str, stream=None, apply=None) -> Pipeline:
    tf = _tf()
    if o.service is not None:  # everything so far runs on the workers; the trainer receives batches
        from datakit import service

        ds = service.distribute(ds.with_options(_options(o)), o.service, o.mode)
        source = f"{source} via tf.data service {o.service} ({o.mode})"
        stream, apply = None, None
    elif not o.repeat:  # a known length: Keras shows progress and never warns of running out
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options(o))
    if stream is not None and o.device == "gpu":
        stream = stream.with_options(_options(o)).apply(tf.data.experimental.prefetch_to_device(GPU_NAME, 2))
    else:
        stream, apply = None, None
    p = Pipeline(dataset=ds, device=o.device, impl=o.impl, augment=o.aug, batch_size=o.batch_size,
                 steps_per_epoch=steps, seed=o.seed if o.seeded else None, threads=o.threads, repeat=o.repeat,
                 source=source, _device_stream=stream, _device_apply=apply)
    log.info(p.describe())
    return p


def _derived_seed(seed: int, tag: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed % (1 << 63), tag]).generate_state(1)[0])


def _keys(o: _Opts, tag: int):
    """An endless stream of int64 keys: the same sequence for the same seed, a new one per iteration.

    Through the tf.data service each worker must draw its own keys, even when a global seed
    (tf.random.set_seed, keras.utils.set_random_seed) makes every unseeded op deterministic: the
    worker's clock (tf.timestamp, read on the worker for each key) is folded into the stream."""
    tf = _tf()
    if o.service is not None:
        return tf.data.Dataset.random(rerandomize_each_iteration=True).map(
            lambda r: tf.bitwise.bitwise_xor(r, tf.bitcast(tf.timestamp(), tf.int64)))
    return _tf().data.Dataset.random(seed=_derived_seed(o.seed, tag), rerandomize_each_iteration=True)


def _worker_permute(ds, o: _Opts, window: int = 1024):
    """parallel_epochs: permute windows of elements with the worker's own keys.

    Why: under a global seed, `shuffle(seed=None)` gets the same op seed on every worker, so every
    worker would send its epoch in the same order (each image twice in a row, for two workers).
    """
    tf = _tf()
    if o.service is None or not o.shuffle or o.mode != "parallel_epochs":
        return ds

    def permute(w, r):
        n = tf.shape(tf.nest.flatten(w)[0])[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=_key(r, _SHUFFLE))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), w)

    return tf.data.Dataset.zip((ds.batch(window), _keys(o, _SHUFFLE))).map(permute).unbatch()


def _shuffle_seed(o: _Opts):
    """The shuffle's seed; None through the tf.data service (every worker shuffles its own way)."""
    return None if o.service is not None else _derived_seed(o.seed, _SHUFFLE)


def _key(r, tag: int):
    tf = _tf()
    return tf.stack([tf.cast(r, tf.int64), tf.constant(tag, tf.int64)])


def _index_batches(n: int, o: _Opts):
    """Batches of image indices: a seeded permutation per epoch (or 0..n-1), cut into batches."""
    tf = _tf()
    full, rest = divmod(n, o.batch_size)

    def epoch(r):
        idx = tf.range(n, dtype=tf.int64)
        if o.shuffle:
            idx = tf.random.experimental.stateless_shuffle(idx, seed=_key(r, _SHUFFLE))
        ds = tf.data.Dataset.from_tensor_slices(tf.reshape(idx[: full * o.batch_size], [full, o.batch_size]))
        if rest and not o.drop_remainder:
            ds = ds.concatenate(tf.data.Dataset.from_tensors(idx[full * o.batch_size:]))
        return ds

    epochs = _keys(o, _SHUFFLE) if o.repeat else _keys(o, _SHUFFLE).take(1)
    return epochs.flat_map(epoch)


def _reference_map(ds, o: _Opts):
    """(image, label) elements -> (tf.image-augmented image, label), one key per image, in order."""
    tf = _tf()
    ds = tf.data.Dataset.zip((ds, _keys(o, _REFERENCE)))
    return ds.map(lambda el, r: (reference_random(o.aug, el[0], _key(r, _REFERENCE)), el[1]),
                  num_parallel_calls=_parallel(o))


def _check_images(images, labels, what: str):
    import numpy as np

    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DatakitError(f"{what}: images must be uint8 [N, height, width, channels], got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DatakitError(f"{what}: labels must be [N] with N = {images.shape[0]}, got {labels.shape}")
    return images, labels.astype(np.int32)


def from_arrays(images, labels, split: str = "train", batch_size: int = 128, augment: Augment | None = None,
                impl: str = "fast", shuffle: bool | None = None, seed: int | None = None, repeat: bool = False,
                device: str = "auto", service=None, processing_mode=None, threads: int | None = None,
                drop_remainder: bool | None = None, crop=CIFAR_CROP, source: str = "arrays") -> Pipeline:
    """A pipeline over in-memory uint8 images [N, H, W, C] and labels [N] (CIFAR, HDF5, synthetic).

    split decides the defaults: "train" -> the tutorial's augmentation, shuffle, drop_remainder;
    anything else -> centre crop + standardization, file order, the last partial batch kept.
    service= is refused here: the arrays would travel inside the dataset graph to every worker.
    """
    tf = _tf()
    if service is not None:
        raise DatakitError(f"{source}: service= needs a pipeline that reads files (cifar10/cifar100, utk tfrecord "
                           "or folders): from_arrays would ship the whole array inside the graph to every worker")
    o = _prepare(split, augment, impl, batch_size, shuffle, seed, repeat, drop_remainder, threads, device,
                 service, crop, processing_mode=processing_mode)
    images, labels = _check_images(images, labels, source)
    n, h, w, _ = images.shape
    o.aug.crop_size(h, w)
    steps = _steps(n, o, source)
    if o.impl == "reference":
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        if o.shuffle:
            ds = ds.shuffle(n, seed=_derived_seed(o.seed, _SHUFFLE), reshuffle_each_iteration=True)
        if o.repeat:
            ds = ds.repeat()
        ds = _reference_map(ds, o).batch(o.batch_size, drop_remainder=o.drop_remainder)
        return _finish(ds, o, n, steps, source)

    images_t = tf.constant(images)
    labels_t = tf.constant(labels)
    # the moments of every crop the draws can pick, once: each batch is then one fused pass
    stats_t = tf.constant(crop_stats(o.aug, images)) if o.aug.contrast is not None or o.aug.standardize else None

    index = tf.data.Dataset.zip((_index_batches(n, o), _keys(o, _DRAWS)))
    ds = index.map(lambda idx, r: fast_batch(o.aug, images_t, labels_t, _key(r, _DRAWS), index=idx, stats=stats_t),
                   num_parallel_calls=_parallel(o))
    if o.device != "gpu":
        return _finish(ds, o, n, steps, source)
    # GPU: only index batches and keys travel to the device; the arrays are copied there once
    resident = {}

    def on_device(idx, key):
        if "images" not in resident:
            resident["images"], resident["labels"] = tf.identity(images_t), tf.identity(labels_t)
            resident["stats"] = None if stats_t is None else tf.identity(stats_t)
        return fast_batch(o.aug, resident["images"], resident["labels"], key, index=idx, stats=resident["stats"])

    stream = index.map(lambda idx, r: (idx, _key(r, _DRAWS)))
    return _finish(ds, o, n, steps, source, stream, on_device)


def _batched_fast(ds, o: _Opts, hw, n: int, steps: int, source: str) -> Pipeline:
    """uint8 images [h, w, C] + labels -> fast per-batch augmentation (decoded-JPEG sources)."""
    tf = _tf()
    ds = tf.data.Dataset.zip((ds.batch(o.batch_size, drop_remainder=o.drop_remainder), _keys(o, _DRAWS)))
    raw = ds.map(lambda batch, r: (batch[0], batch[1], _key(r, _DRAWS)))

    def apply(x, y, key):
        return fast_batch(o.aug, x, y, key)

    return _finish(raw.map(apply, num_parallel_calls=_parallel(o)), o, n, steps, source, raw, apply)


# ---------------------------------------------------------------- CIFAR


def _cifar(name: str, data_dir, split: str, label_mode: str | None, **kw) -> Pipeline:
    from datakit.datasets import cifar

    if split not in ("train", "test"):
        raise DatakitError(f"{name}: split must be 'train' or 'test', got {split!r}")
    if kw.get("service") is not None:
        return _cifar_files(name, data_dir, split, label_mode, **kw)
    images, labels = cifar.load(os.path.expanduser(str(data_dir)), split=split, label_mode=label_mode, dataset=name)
    kw.setdefault("crop", CIFAR_CROP)
    return from_arrays(images, labels, split=split, source=f"{name} {split} ({len(labels)} images)", **kw)


SERVICE_CHUNK = 256  # records per split handed out by the dispatcher (distributed_epoch)


def _cifar_files(name: str, data_dir, split: str, label_mode: str | None, service, processing_mode, batch_size,
                 augment, impl, shuffle, seed, repeat, device, threads, drop_remainder, crop=CIFAR_CROP) -> Pipeline:
    """CIFAR through the tf.data service: the workers read the .bin files themselves (same path on every
    worker), in chunks of SERVICE_CHUNK records (the dispatcher's splits under distributed_epoch), decode,
    shuffle (a 10 000-record buffer per worker) and augment; only the chunk table is in the graph."""
    from datakit.datasets import cifar
    from datakit import service as _service

    tf = _tf()
    o = _prepare(split, augment, impl, batch_size, shuffle, seed, repeat, drop_remainder, threads, device,
                 service, crop, processing_mode=processing_mode)
    s, folder = cifar.locate(os.path.abspath(os.path.expanduser(str(data_dir))), name)
    mode = cifar._mode(s, label_mode)
    files = cifar.split_files(s, folder, split)
    n = sum(cifar.record_count(f, s) for f in files)
    o.aug.crop_size(32, 32)
    source = f"{name} {split} ({n} images, files in {folder})"
    steps = _steps(n, o, source)
    ds = _service.record_chunks(files, s.record_bytes, SERVICE_CHUNK, cycle_length=4 if o.shuffle else 1)
    if o.shuffle:
        ds = _worker_permute(ds.shuffle(min(n, 10000), seed=_shuffle_seed(o), reshuffle_each_iteration=True), o)
    if o.repeat:
        ds = ds.repeat()
    offset, nbytes = s.label_offsets[mode], s.label_bytes
    if o.impl == "reference":
        ds = ds.map(lambda r: cifar.decode_record(r, offset, nbytes), num_parallel_calls=_parallel(o))
        ds = _reference_map(ds, o)
        return _finish(ds.batch(o.batch_size, drop_remainder=o.drop_remainder), o, n, steps, source)

    def decode_batch(records):  # one decode_raw + transpose per batch, not per record (~3x faster)
        raw = tf.io.decode_raw(records, tf.uint8)
        images = tf.transpose(tf.reshape(raw[:, nbytes:nbytes + cifar.PIXEL_BYTES], [-1, 3, 32, 32]), [0, 2, 3, 1])
        return images, tf.cast(raw[:, offset], tf.int32)

    ds = ds.batch(o.batch_size, drop_remainder=o.drop_remainder).map(decode_batch, num_parallel_calls=_parallel(o))
    ds = tf.data.Dataset.zip((ds, _keys(o, _DRAWS)))
    ds = ds.map(lambda b, r: fast_batch(o.aug, b[0], b[1], _key(r, _DRAWS)), num_parallel_calls=_parallel(o))
    return _finish(ds, o, n, steps, source)


def cifar10(data_dir, split: str = "train", batch_size: int = 128, augment: Augment | None = None,
            impl: str = "fast", shuffle: bool | None = None, seed: int | None = None, repeat: bool = False,
            device: str = "auto", service=None, processing_mode=None, threads: int | None = None,
            drop_remainder: bool | None = None) -> Pipeline:
    """CIFAR-10 batches (images float32 [B, 24, 24, 3], labels int32 [B]) from the folder holding
    cifar-10-batches-bin/. Train: the tutorial's augmentation, shuffled, full batches only; test:
    deterministic centre crops in file order, the last partial batch kept. See `from_arrays`.

    service="grpc://HOST:PORT": reading, decoding and augmentation run on the tf.data service's
    workers (`datakit serve`), which open the .bin files at the same absolute path; processing_mode
    "parallel_epochs" (default: every worker streams whole epochs of its own) or "distributed_epoch"
    (each record once per epoch across the workers). `seed` is not applied then, and
    steps_per_epoch counts one epoch of one worker (see datakit.service)."""
    return _cifar("cifar10", data_dir, split, None, batch_size=batch_size, augment=augment, impl=impl,
                  shuffle=shuffle, seed=seed, repeat=repeat, device=device, service=service,
                  processing_mode=processing_mode, threads=threads, drop_remainder=drop_remainder)


def cifar100(data_dir, split: str = "train", batch_size: int = 128, augment: Augment | None = None,
             impl: str = "fast", shuffle: bool | None = None, seed: int | None = None, repeat: bool = False,
             device: str = "auto", service=None, processing_mode=None, threads: int | None = None,
             drop_remainder: bool | None = None, label_mode: str = "fine") -> Pipeline:
    """CIFAR-100 batches like `cifar10`, from the folder holding cifar-100-binary/; label_mode
    "fine" (100 classes) or "coarse" (20 superclasses)."""
    return _cifar("cifar100", data_dir, split, label_mode, batch_size=batch_size, augment=augment, impl=impl,
                  shuffle=shuffle, seed=seed, repeat=repeat, device=device, service=service,
                  processing_mode=processing_mode, threads=threads, drop_remainder=drop_remainder)


# ---------------------------------------------------------------- UTK (outputs of build-utk)


def read_manifest(build_dir) -> dict:
    """OUT/manifest.json of a complete build-utk run (its presence marks a complete build)."""
    path = Path(os.path.expanduser(str(build_dir))) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatakitError(f"{path}: no manifest.json (not a complete build-utk output folder)") from None
    except (OSError, ValueError) as exc:
        raise DatakitError(f"{path}: unreadable manifest ({exc})") from None
    for key in ("classes", "size", "splits", "counts", "outputs"):
        if key not in manifest:
            raise DatakitError(f"{path}: manifest has no {key!r} (not written by build-utk)")
    return manifest


def _resize(image, size: int | None):
    """Resize a uint8 image to size x size (area-averaged when shrinking), back to uint8."""
    tf = _tf()
    if size is None:
        return image
    x = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def _utk_files(root: Path, manifest: dict, fmt: str, split: str) -> list[Path]:
    entry = manifest["outputs"].get(fmt)
    if entry is None:
        raise DatakitError(f"{root / 'manifest.json'}: format {fmt!r} was not built "
                           f"(built: {', '.join(manifest['outputs']) or 'none'})")
    if split not in entry:
        raise DatakitError(f"{root / 'manifest.json'}: no split {split!r} in {fmt} (splits: {', '.join(entry)})")
    paths = entry[split] if isinstance(entry[split], list) else [entry[split]]
    files = [root / p for p in paths]
    for f in files:
        if not f.exists():
            raise DatakitError(f"{f}: listed in manifest.json but missing")
    return files


def _utk_folder_items(folder: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in (".jpg", ".jpeg"):
                paths.append(str(f))
                labels.append(label)
    if not paths:
        raise DatakitError(f"{folder}: no JPEG files in the class folders")
    return paths, labels


def utk(build_dir, split: str = "train", format: str = "tfrecord", size: int | None = None, batch_size: int = 64,
        augment: Augment | None = None, impl: str = "fast", shuffle: bool | None = None, seed: int | None = None,
        repeat: bool = False, device: str = "auto", service=None, processing_mode=None,
        threads: int | None = None, drop_remainder: bool | None = None) -> Pipeline:
    """Batches (images float32 [B, c, c, 3], labels int32 [B]) over a build-utk output folder.

    Read through OUT/manifest.json: format "tfrecord" and "folders" decode the JPEGs inside the
    pipeline (parallel map); "hdf5" loads the decoded uint8 array into memory and takes the in-memory
    path of `from_arrays`. size: resize to size x size first (default: the build's size). The crop is
    relative to the image (0.88 of the side by default, as 24/32 is for CIFAR). Label = the index in
    manifest["classes"] (race_index * 2 + gender).
    """
    tf = _tf()
    root = Path(os.path.expanduser(str(build_dir)))
    manifest = read_manifest(root)
    if format not in UTK_FORMATS:
        raise DatakitError(f"format must be one of {', '.join(UTK_FORMATS)}, got {format!r}")
    if split not in manifest["splits"]:
        raise DatakitError(f"{root / 'manifest.json'}: no split {split!r} (splits: {', '.join(manifest['splits'])})")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise DatakitError(f"size must be a positive integer, got {size!r}")
    files = _utk_files(root, manifest, format, split)
    side = size or int(manifest["size"])
    source = f"utk {split} {format}"
    kw = dict(batch_size=batch_size, augment=augment, impl=impl, shuffle=shuffle, seed=seed, repeat=repeat,
              device=device, service=service, processing_mode=processing_mode, threads=threads,
              drop_remainder=drop_remainder)

    if format == "hdf5" and service is not None:
        raise DatakitError(f"{root}: format 'hdf5' is loaded into memory and cannot go through the tf.data "
                           "service; use format='tfrecord' or 'folders' (the workers read those files)")
    if service is not None:
        root = root.absolute()  # the workers open the files: no relative paths
        files = [f.absolute() for f in files]
    if format == "hdf5":
        import h5py
        import numpy as np

        parts = []
        for path in files:  # every shard of the split, in manifest order
            try:
                with h5py.File(path, "r") as f:
                    parts.append((f["images"][...], np.asarray(f["labels"][...])))
            except (OSError, KeyError) as exc:
                raise DatakitError(f"{path}: unreadable HDF5 ({exc})") from None
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if size is not None and images.shape[1:3] != (size, size):
            images = np.concatenate([_resize(images[i:i + 256], size).numpy()
                                     for i in range(0, len(images), 256)]) if len(images) else images
        return from_arrays(images, labels, split=split, crop=UTK_CROP, source=f"{source} ({len(labels)} images)", **kw)

    o = _prepare(split, augment, impl, batch_size, shuffle, seed, repeat, drop_remainder, threads, device,
                 service, UTK_CROP, processing_mode=processing_mode)
    o.aug.crop_size(side, side)
    n = sum(int(v) for v in manifest["counts"].get(split, {}).values())
    if format == "folders":
        paths, labels = _utk_folder_items(files[0], list(manifest["classes"]))
        n = len(paths)
        ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
        read = lambda path, label: (tf.io.read_file(path), label)  # noqa: E731
    else:
        if o.service is None:
            ds = tf.data.TFRecordDataset([str(f) for f in files], num_parallel_reads=min(len(files), 8))
        else:  # the shards are the dispatcher's splits under distributed_epoch
            ds = tf.data.Dataset.from_tensor_slices([str(f) for f in files]).interleave(
                tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=_parallel(o))
        spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

        def read(record):
            ex = tf.io.parse_single_example(record, spec)
            return ex["image/encoded"], tf.cast(ex["image/class/label"], tf.int32)
    steps = _steps(n, o, str(files[0]))
    source = f"{source} ({n} images)"
    if o.shuffle:  # shuffle the encoded bytes (small), before decoding
        ds = _worker_permute(ds.shuffle(max(n, 1), seed=_shuffle_seed(o), reshuffle_each_iteration=True), o)
    if o.repeat:
        ds = ds.repeat()

    def decode(*args):
        data, label = read(*args)
        image = tf.io.decode_jpeg(data, channels=3)
        image = _resize(image, size)
        return tf.ensure_shape(image, [side, side, 3]), label

    ds = ds.map(decode, num_parallel_calls=_parallel(o))
    if o.impl == "reference":
        ds = _reference_map(ds, o)
        return _finish(ds.batch(o.batch_size, drop_remainder=o.drop_remainder), o, n, steps, source)
    return _batched_fast(ds, o, (side, side), n, steps, source)


__all__ = ["Augment", "Draws", "Pipeline", "cifar10", "cifar100", "from_arrays", "read_manifest",
           "resolve_device", "utk"]
