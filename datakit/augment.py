"""The CIFAR-10 tutorial's augmentation: one config, two implementations that agree.

Train-time chain (the tutorial's `distorted_inputs`, in this order, on float32 pixels in 0..255):
random crop -> random left-right flip -> random brightness (add delta, |delta| < 63) ->
random contrast ((x - mean_c) * f + mean_c with per-channel means, f in [0.2, 1.8)) ->
per-image standardization ((x - mean) / max(std, 1/sqrt(num_elements))). Evaluation: centre crop
and standardization only (`Augment().for_eval()`). There is no clipping anywhere (float pixels).

- `reference`: per image, inside `Dataset.map`, calling the `tf.image` functions one by one
  (`reference_random` draws like the tutorial, `apply_reference` takes explicit draws).
- `fast`: per batch (`fast_batch`, `apply_fast`; `fast_group` for several batches in one call,
  `fast_keyed` for a batch with its draws from a key), vectorized and fused. Crop, flip and the
  gather of the batch's images out of the in-memory array are one gather: compiled, each image's
  crop is one block of contiguous row runs (an XLA gather with [ch, cw * C] slices), flipped by a
  reverse that XLA fuses into the output pass.
  Contrast, brightness and standardization collapse into one affine map per image and channel,
  y = (x - c) * a + b (c: the channel mean, so that nothing large cancels in float32):
    * contrast keeps the image mean: the channels have equal pixel counts, so the mean of the
      channel means is unchanged by (x - mean_c) * f + mean_c;
    * **a brightness shift followed by per-image standardization cancels out exactly**: adding
      delta moves the mean by delta and leaves the deviations unchanged, so with
      `standardize=True` the brightness draw has no effect on the output (it is still drawn,
      so that the random stream and `standardize=False` behave like the tutorial's);
    * the variance after contrast is f^2 * mean_c(var_c) + mean_c((mean_c - mean)^2): only the
      per-channel means and variances of the crop are needed.
  So a batch is one statistics pass and one output pass, and for an in-memory source even the
  statistics pass goes: the moments of every crop an image can get (81 offsets for 24 of 32)
  depend on neither the flip nor the epoch, so `crop_stats` computes them once (exact integer
  summed-area sums, float64 moments) and a batch is a single fused gather + affine pass, which
  costs about what a bare crop + cast costs. Batches of decoded JPEGs take the statistics from
  the crop (exact int32 sums, float64 moments) in a second compiled stage.
  Why TensorFlow ops compiled with XLA rather than NumPy: the same function runs on a GPU
  unchanged, and on the 2-core development machine it is the fastest CPU option measured:
  `datakit bench-aug --impl fast,fast-nojit` puts the XLA and the plain-TF-ops versions side by
  side (about 3x apart); a NumPy prototype inside `tf.numpy_function` (strided-window gather,
  BLAS sums) stayed near 100k images/s, bound by the GIL and the copies in and out of TF.

Randomness is stateless and keyed: `draw(aug, n, hw, seed)` is a pure function of its seed, so a
seeded pipeline gives the same batches in the same order whatever the parallelism.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

from datakit.errors import DatakitError


@dataclasses.dataclass(frozen=True)
class Augment:
    """Which ops run and with what ranges; the defaults are the CIFAR-10 tutorial's.

    crop: output side in pixels (int), a fraction of the image side (float in (0, 1]), or None (no
    crop). center_crop: take the centre crop instead of a random one (evaluation). flip: random
    left-right flip. brightness: max |delta| on 0-255 pixel values, or None. contrast: (lower, upper)
    factor range, or None. standardize: per-image standardization.
    """

    crop: int | float | None = 24
    center_crop: bool = False
    flip: bool = True
    brightness: float | None = 63.0
    contrast: tuple[float, float] | None = (0.2, 1.8)
    standardize: bool = True

    def __post_init__(self):
        c = self.crop
        if c is not None and not (isinstance(c, int) and c >= 1 or isinstance(c, float) and 0.0 < c <= 1.0):
            raise DatakitError(f"Augment: crop must be a positive int (pixels) or a fraction in (0, 1], got {c!r}")
        if self.brightness is not None and not self.brightness >= 0:
            raise DatakitError(f"Augment: brightness must be >= 0 (max delta on 0-255 values), got {self.brightness!r}")
        if self.contrast is not None:
            lo, hi = self.contrast
            if not 0 <= lo < hi:
                raise DatakitError(f"Augment: contrast must be (lower, upper) with 0 <= lower < upper, got {self.contrast!r}")
            object.__setattr__(self, "contrast", (float(lo), float(hi)))

    def for_eval(self) -> "Augment":
        """The evaluation chain: the same crop size, taken at the centre; standardization only."""
        return dataclasses.replace(self, center_crop=True, flip=False, brightness=None, contrast=None)

    def crop_size(self, height: int, width: int) -> tuple[int, int]:
        """(crop height, crop width) for an image of that size; an error if the crop does not fit."""
        if self.crop is None:
            return height, width
        if isinstance(self.crop, float):
            ch, cw = max(1, round(self.crop * height)), max(1, round(self.crop * width))
        else:
            ch = cw = self.crop
        if ch > height or cw > width:
            raise DatakitError(f"Augment: crop {ch}x{cw} does not fit images of {height}x{width}")
        return ch, cw

    def describe(self) -> str:
        crop = "none" if self.crop is None else f"{'centre' if self.center_crop else 'random'} {self.crop}"
        parts = [f"crop {crop}", f"flip {'on' if self.flip else 'off'}",
                 f"brightness {self.brightness if self.brightness is not None else 'off'}",
                 f"contrast {self.contrast if self.contrast is not None else 'off'}",
                 f"standardize {'on' if self.standardize else 'off'}"]
        return ", ".join(parts)


class Draws(NamedTuple):
    """The random draws of a batch (or, with scalar fields, of one image)."""

    offset_y: object  # int32 [B]: top row of the crop
    offset_x: object  # int32 [B]: left column of the crop (in the unflipped image)
    flip: object      # bool [B]: flip left-right
    delta: object     # float32 [B]: brightness shift (0 when off)
    factor: object    # float32 [B]: contrast factor (1 when off)


def _tf():
    import tensorflow as tf

    return tf


def seed_pair(seed: int, *tags: int):
    """A stateless-RNG key [2] int64 from a user seed and tags (stream, step, ...)."""
    tf = _tf()
    key = tf.constant([seed % (1 << 63), 0x5EED], dtype=tf.int64)
    for tag in tags:
        key = tf.random.experimental.stateless_fold_in(key, tag)
    return key


def draw(aug: Augment, batch_size, image_hw: tuple[int, int], seed) -> Draws:
    """The random draws for `batch_size` images of size image_hw, a pure function of `seed` ([2] ints).

    The distributions are those of the tf.image random ops: crop offsets uniform over every
    position, flip with probability 1/2, delta uniform in [-brightness, brightness), factor
    uniform in [lower, upper). Image j's draws are element j of each stream whatever the batch
    size, so a short batch's draws are the first of a full one's (the pipelines pad it to one shape).
    """
    tf = _tf()
    h, w = image_hw
    ch, cw = aug.crop_size(h, w)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    n = tf.reshape(tf.cast(batch_size, tf.int32), [1])

    # Integer Philox draws only, mapped to floats here: XLA and the TF kernels give the same bits
    # for these, so a key gives the same draws inside and outside compiled code (they differ for
    # the library's float draws and for auto-selected algorithms).
    def ints(i, hi):
        return tf.random.stateless_uniform(n, seeds[i], 0, hi, dtype=tf.int32, alg="philox")

    def uniform(i, lo, hi):
        return lo + (hi - lo) * (tf.cast(ints(i, 1 << 24), tf.float32) * (1.0 / (1 << 24)))

    if aug.center_crop:
        oy = tf.fill(n, (h - ch) // 2)
        ox = tf.fill(n, (w - cw) // 2)
    else:
        oy, ox = ints(0, h - ch + 1), ints(1, w - cw + 1)
    flip = tf.equal(ints(2, 2), 1) if aug.flip else tf.zeros(n, tf.bool)
    delta = uniform(3, -aug.brightness, aug.brightness) if aug.brightness is not None else tf.zeros(n, tf.float32)
    factor = uniform(4, *aug.contrast) if aug.contrast is not None else tf.ones(n, tf.float32)
    return Draws(oy, ox, flip, delta, factor)


# ---------------------------------------------------------------- reference: per image, tf.image


def _standardize_and_crop_shape(aug: Augment, image):
    shape = image.shape
    if shape.rank != 3 or shape[0] is None or shape[1] is None:
        raise DatakitError(f"augment: images must have a static [height, width, channels] shape, got {shape}")
    return aug.crop_size(int(shape[0]), int(shape[1]))


def apply_reference(aug: Augment, image, d: Draws):
    """One image through the tf.image functions, one by one, with the given (scalar) draws."""
    tf = _tf()
    ch, cw = _standardize_and_crop_shape(aug, image)
    x = tf.cast(image, tf.float32)
    x = tf.image.crop_to_bounding_box(x, d.offset_y, d.offset_x, ch, cw)
    if aug.flip:
        x = tf.cond(d.flip, lambda: tf.image.flip_left_right(x), lambda: x)
    if aug.brightness is not None:
        x = tf.image.adjust_brightness(x, d.delta)
    if aug.contrast is not None:
        x = tf.image.adjust_contrast(x, d.factor)
    if aug.standardize:
        x = tf.image.per_image_standardization(x)
    return x


def reference_random(aug: Augment, image, seed):
    """One image through the tutorial's chain with the tf.image random ops (their stateless forms)."""
    tf = _tf()
    ch, cw = _standardize_and_crop_shape(aug, image)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    x = tf.cast(image, tf.float32)
    if aug.center_crop:
        x = tf.image.resize_with_crop_or_pad(x, ch, cw)
    elif aug.crop is not None:
        x = tf.image.stateless_random_crop(x, [ch, cw, int(image.shape[2])], seed=seeds[0])
    if aug.flip:
        x = tf.image.stateless_random_flip_left_right(x, seed=seeds[1])
    if aug.brightness is not None:
        x = tf.image.stateless_random_brightness(x, aug.brightness, seed=seeds[2])
    if aug.contrast is not None:
        x = tf.image.stateless_random_contrast(x, aug.contrast[0], aug.contrast[1], seed=seeds[3])
    if aug.standardize:
        x = tf.image.per_image_standardization(x)
    return x


# ---------------------------------------------------------------- fast: per batch, fused


def crop_offsets(aug: Augment, height: int, width: int) -> tuple[int, int, int, int]:
    """(first row, first column, number of rows, number of columns) of the crop offsets `draw` can give."""
    ch, cw = aug.crop_size(height, width)
    if aug.center_crop:
        return (height - ch) // 2, (width - cw) // 2, 1, 1
    return 0, 0, height - ch + 1, width - cw + 1


def crop_stats(aug: Augment, images, chunk: int = 2048):
    """float32 [N, ny, nx, C, 2]: (mean, variance) per channel of every crop `draw` can pick.

    Why: the statistics of a crop depend only on the image and the offset, not on the flip or
    the epoch; computed once (summed-area tables, exact integer sums, float64 moments), they turn
    the per-batch statistics pass into a lookup, and the batch costs one fused pass (gather +
    affine). Memory: 2 x 4 bytes per channel per possible offset (CIFAR-10 train, 81 offsets:
    97 MB next to its 150 MB of pixels).
    """
    import numpy as np

    images = np.asarray(images)
    n, h, w, c = images.shape
    ch, cw = aug.crop_size(h, w)
    y0, x0, ny, nx = crop_offsets(aug, h, w)
    itype = np.int64 if ch * cw * 255 * 255 >= 2**31 else np.int32

    def windows(v, axis, size, first, count):
        """Sums of `size` consecutive entries along `axis`, starting at first..first+count-1 (sliding)."""
        v = np.moveaxis(v, axis, 0)
        out = np.empty((count,) + v.shape[1:], itype)
        out[0] = v[first:first + size].sum(axis=0, dtype=itype)
        for k in range(1, count):
            out[k] = out[k - 1] + v[first + k + size - 1] - v[first + k - 1]
        return np.moveaxis(out, 0, axis)

    out = np.empty((n, ny, nx, c, 2), np.float32)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].astype(itype)
        moments = []
        for v in (x, x * x):  # exact integer box sums: rows, then columns
            box = windows(windows(v, 1, ch, y0, ny), 2, cw, x0, nx)      # [n, ny, nx, c]
            moments.append(box.astype(np.float64) / (ch * cw))
        out[start:start + chunk, ..., 0] = moments[0]
        out[start:start + chunk, ..., 1] = np.maximum(moments[1] - moments[0] ** 2, 0.0)
    return out


@functools.lru_cache(maxsize=None)
def _fast_fns(aug: Augment, height: int, width: int, channels: int, jit: bool):
    """Compiled batch functions for one config and image size (cached: XLA compiles once per shape):
    apply(images, index, draws), batch(images, labels, index, key), batch_stats(images, labels,
    stats, index, key) (with `crop_stats`) and keyed(images, key) (the batch itself, draws from key).

    Each is one compiled call: draws, the block gather of crop + flip (+ batch), the crop
    statistics (looked up in `stats`, else summed from the uint8 crop), the output pass. XLA fuses
    the cast and the affine map into the gather's consumer. With the old per-pixel gather the
    statistics pass made XLA recompute the gather in each of its three consumers, so that case ran
    as two stages; the block gather copies B contiguous blocks, and one stage is as fast or faster
    (benchmarks: bench-aug). Without XLA (jit=False) the functions are plain tf.functions.
    """
    tf = _tf()
    ch, cw = aug.crop_size(height, width)
    y0, x0, _, _ = crop_offsets(aug, height, width)
    stats = aug.contrast is not None or aug.standardize
    xla, xla_data_pb2 = _xla() if jit else (None, None)
    floor = 1.0 / math.sqrt(ch * cw * channels)

    def crop(images, index, d: Draws):
        """uint8 [B, ch, cw, C]: images[index], cropped at the offsets and flipped.

        Compiled: one XLA gather of a [ch, cw * C] block per image (its rows are contiguous runs of
        the source rows, so the gather copies B blocks rather than B * ch * cw single pixels), then
        the flip as a reverse that XLA fuses into the consumers. Plain TF (jit=False): one
        per-pixel tf.gather with the flip folded into the column indices."""
        if xla is not None:
            dims = xla_data_pb2.GatherDimensionNumbers(offset_dims=[1, 2], collapsed_slice_dims=[0],
                                                       start_index_map=[0, 1, 2], index_vector_dim=1)
            rows = tf.reshape(images, [-1, height, width * channels])
            starts = tf.stack([tf.cast(index, tf.int32), d.offset_y, d.offset_x * channels], axis=1)
            x = xla.gather(rows, starts, dims, slice_sizes=[1, ch, cw * channels], indices_are_sorted=False)
            x = tf.reshape(x, [-1, ch, cw, channels])
            return tf.where(d.flip[:, None, None, None], tf.reverse(x, [2]), x)
        itype = tf.int64 if images.shape[0] is not None and images.shape[0] * height * width >= 2**31 else tf.int32
        flat = tf.reshape(images, [-1, channels])
        rows = tf.range(ch)[None, :] + d.offset_y[:, None]                      # [B, ch]
        cols = tf.range(cw)[None, :]
        cols = tf.where(d.flip[:, None], cw - 1 - cols, cols) + d.offset_x[:, None]  # [B, cw]
        base = tf.cast(index, itype)[:, None, None] * (height * width)
        pix = base + tf.cast(rows[:, :, None] * width + cols[:, None, :], itype)  # [B, ch, cw]
        return tf.gather(flat, pix)

    def moments(x8):
        """float64 (mean, variance) [B, C] of uint8 crops: exact sums of x - 128 and its square,
        int32 down each column of [B, ch, cw*C] (contiguous rows), then float64 across."""
        xi = tf.reshape(tf.cast(x8, tf.int32) - 128, [-1, ch, cw * channels])
        col1 = tf.cast(tf.reduce_sum(xi, axis=1), tf.float64)
        col2 = tf.cast(tf.reduce_sum(xi * xi, axis=1), tf.float64)
        mean = tf.reduce_sum(tf.reshape(col1, [-1, cw, channels]), axis=1) / (ch * cw)
        var = tf.reduce_sum(tf.reshape(col2, [-1, cw, channels]), axis=1) / (ch * cw) - mean * mean
        return mean + 128.0, tf.maximum(var, 0.0)

    def output(x8, d: Draws, mean_c, var_c):
        """float32 [B, ch, cw, C] from the uint8 crops and their channel moments: one pass."""
        x = tf.cast(x8, tf.float32)
        if not stats:
            return x + d.delta[:, None, None, None] if aug.brightness is not None else x
        factor = tf.cast(d.factor, tf.float64)[:, None]                         # [B, 1]
        # centred on c = float32(mean_c) so that large x * a and b never cancel in float32
        # (a constant image comes out exactly 0); b absorbs the rounding of c exactly
        c = tf.cast(mean_c, tf.float32)
        shift = factor * (tf.cast(c, tf.float64) - mean_c) + mean_c
        if aug.standardize:
            m = tf.reduce_mean(mean_c, axis=1, keepdims=True)
            var = factor[:, 0] ** 2 * tf.reduce_mean(var_c, axis=1) + tf.reduce_mean((mean_c - m) ** 2, axis=1)
            sd = tf.maximum(tf.sqrt(var), floor)[:, None]
            a = factor / sd * tf.ones_like(mean_c)
            b = (shift - m) / sd                              # the brightness delta cancels here
        else:
            a = factor * tf.ones_like(mean_c)
            b = shift + tf.cast(d.delta, tf.float64)[:, None]
        # y = (x - c) * a + b
        return ((x - c[:, None, None, :]) * tf.cast(a, tf.float32)[:, None, None, :]
                + tf.cast(b, tf.float32)[:, None, None, :])

    def finish(x8, d: Draws):
        if not stats:
            return output(x8, d, None, None)
        return output(x8, d, *moments(x8))

    def crop_batch(images, labels, index, key):
        d = draw(aug, tf.shape(index)[0], (height, width), key)
        return crop(images, index, d), d, tf.gather(labels, index)

    def batch_stats(images, labels, table, index, key):
        x8, d, y = crop_batch(images, labels, index, key)
        if not stats:
            return output(x8, d, None, None), y
        st = tf.gather_nd(table, tf.stack([index, d.offset_y - y0, d.offset_x - x0], axis=1))  # [B, C, 2]
        st = tf.cast(st, tf.float64)
        return output(x8, d, st[..., 0], st[..., 1]), y

    def single(images, labels, index, key):
        x8, d, y = crop_batch(images, labels, index, key)
        return finish(x8, d), y

    def keyed(images, key):
        d = draw(aug, tf.shape(images)[0], (height, width), key)
        return finish(crop(images, tf.range(tf.shape(images)[0]), d), d)

    def group(images, labels, table, index, keys):
        """K batches (index [K, B], keys [K, 2], K static) as one batch of K * B images: each batch's
        draws from its own key, then one crop and one output pass; ([K, B, ch, cw, C], [K, B]).
        Every value depends on its own image and draws only, so each batch equals its own call."""
        k, b = index.shape[0], tf.shape(index)[1]
        parts = [draw(aug, b, (height, width), keys[i]) for i in range(k)]
        d = Draws(*[tf.concat(list(field), axis=0) for field in zip(*parts)])
        flat = tf.reshape(index, [-1])
        x8 = crop(images, flat, d)
        if table is None or not stats:
            out = finish(x8, d)
        else:
            st = tf.cast(tf.gather_nd(table, tf.stack([flat, d.offset_y - y0, d.offset_x - x0], axis=1)), tf.float64)
            out = output(x8, d, st[..., 0], st[..., 1])
        return (tf.reshape(out, tf.concat([[k, b], tf.shape(out)[1:]], axis=0)),
                tf.reshape(tf.gather(labels, flat), [k, b]))

    compile_ = functools.partial(tf.function, jit_compile=jit, reduce_retracing=True)
    return _FastFns(compile_(lambda images, index, d: finish(crop(images, index, d), d)), compile_(single),
                    compile_(batch_stats), compile_(keyed),
                    tf.function(group, jit_compile=jit))  # no shape relaxing: K must stay static


class _FastFns(NamedTuple):
    apply: object
    batch: object
    batch_stats: object
    keyed: object
    group: object


def _xla():
    """(xla ops, xla_data_pb2) for the block gather, or (None, None) where this TensorFlow lacks
    them (then the crop is the per-pixel tf.gather: same pixels, slower)."""
    try:
        from tensorflow.compiler.tf2xla.python import xla
        from tensorflow.compiler.xla import xla_data_pb2
    except ImportError:
        return None, None
    return xla, xla_data_pb2


JIT = True  # XLA-compile the fast path (set False to debug with plain TF ops)


def _batch_args(images, index):
    tf = _tf()
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise DatakitError(f"augment: batches must be [N, height, width, channels] with static sizes, got {images.shape}")
    if index is None:
        index = tf.range(tf.shape(images)[0])
    return images, tf.cast(index, tf.int32), tuple(int(v) for v in images.shape[1:])


def apply_fast(aug: Augment, images, d: Draws, index=None):
    """A batch through the fused chain with the given draws. images: uint8 [N, H, W, C]; index: int
    [B] rows of `images` to take (the in-memory source), or None when `images` is the batch itself."""
    tf = _tf()
    images, index, (h, w, c) = _batch_args(images, index)
    fn = _fast_fns(aug, h, w, c, JIT).apply
    d = Draws(tf.cast(d.offset_y, tf.int32), tf.cast(d.offset_x, tf.int32), tf.cast(d.flip, tf.bool),
              tf.cast(d.delta, tf.float32), tf.cast(d.factor, tf.float32))
    return fn(images, index, d)


def fast_batch(aug: Augment, images, labels, key, index=None, stats=None, jit: bool | None = None):
    """(augmented batch, labels[index]) with the draws `draw(aug, B, (H, W), key)` made inside the
    compiled code: what the pipelines run per step. labels: [N] (or [B] when index is None);
    stats: `crop_stats(aug, images)` for the in-memory source (one fused pass), or None (the
    statistics are taken from each batch); jit: XLA-compile (None: the module default `JIT`)."""
    tf = _tf()
    images, index, (h, w, c) = _batch_args(images, index)
    fns = _fast_fns(aug, h, w, c, JIT if jit is None else jit)
    key = tf.cast(key, tf.int64)
    if stats is None:
        return fns.batch(images, tf.convert_to_tensor(labels), index, key)
    return fns.batch_stats(images, tf.convert_to_tensor(labels), tf.convert_to_tensor(stats), index, key)


def fast_group(aug: Augment, images, labels, keys, index, stats=None, jit: bool | None = None):
    """K `fast_batch` calls in one compiled call: index int [K, B] (K static), keys [K, 2]; returns
    (augmented [K, B, ch, cw, C], labels [K, B]), whose k-th batch equals `fast_batch(aug, images,
    labels, keys[k], index[k], stats)`. Why: on a small CPU the launch of a compiled call and the tf.data
    step around it cost as much as augmenting 128 CIFAR images; one call per K batches pays it once."""
    tf = _tf()
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise DatakitError(f"augment: batches must be [N, height, width, channels] with static sizes, got {images.shape}")
    index = tf.cast(index, tf.int32)
    if index.shape.rank != 2 or index.shape[0] is None:
        raise DatakitError(f"augment: fast_group takes index [K, B] with a static K, got {index.shape}")
    h, w, c = (int(v) for v in images.shape[1:])
    fns = _fast_fns(aug, h, w, c, JIT if jit is None else jit)
    table = None if stats is None else tf.convert_to_tensor(stats)
    return fns.group(images, tf.convert_to_tensor(labels), table, index, tf.cast(keys, tf.int64))


def fast_keyed(aug: Augment, images, key, jit: bool | None = None):
    """`images` (uint8 [B, H, W, C], the batch itself) augmented with the draws
    `draw(aug, B, (H, W), key)`, made inside the compiled call: the same output as
    `fast_batch(aug, images, labels, key)` without labels (what `datakit.layers.AugmentLayer` runs)."""
    tf = _tf()
    images, _, (h, w, c) = _batch_args(images, None)
    return _fast_fns(aug, h, w, c, JIT if jit is None else jit).keyed(images, tf.cast(key, tf.int64))
