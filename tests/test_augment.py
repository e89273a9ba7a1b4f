"""datakit.augment: fast == reference for the same draws; matching distributions for free draws."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from datakit import pipelines  # noqa: E402
from datakit.augment import (Augment, Draws, apply_fast, apply_reference, crop_stats, draw, fast_batch,  # noqa: E402
                             reference_random, seed_pair)
from datakit.errors import DatakitError  # noqa: E402


def photo_like(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth colour fields plus noise: CIFAR-like statistics (std 20-70), every image different."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.float64)
    for i in range(n):
        for c in range(3):
            a, b, p = rng.uniform(-1, 1, 3)
            out[i, :, :, c] = 128 + 70 * np.sin(3 * a * yy + 3 * b * xx + 6 * p) * rng.uniform(0.3, 1)
    out += rng.normal(0, rng.uniform(3, 25, (n, 1, 1, 1)), out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def reference_batch(aug, images, d: Draws) -> np.ndarray:
    return np.stack([apply_reference(aug, tf.constant(images[i]), Draws(*[t[i] for t in d])).numpy()
                     for i in range(len(images))])


CONFIGS = [
    Augment(),                                    # the tutorial's train chain
    Augment().for_eval(),                         # centre crop + standardization
    Augment(contrast=None),
    Augment(brightness=None, flip=False),
    Augment(crop=None, flip=False),
    Augment(crop=0.88),                           # the UTK default: relative crop
    Augment(standardize=False),
    Augment(contrast=None, standardize=False),
]


@pytest.mark.parametrize("aug", CONFIGS, ids=lambda a: a.describe())
def test_fast_equals_reference_for_the_same_draws(aug):
    images = photo_like(48, size=40 if aug.crop == 0.88 else 32)
    d = draw(aug, len(images), images.shape[1:3], seed_pair(11, 5))
    fast = apply_fast(aug, images, d).numpy()
    ref = reference_batch(aug, images, d)
    ch, cw = aug.crop_size(*images.shape[1:3])
    assert fast.shape == ref.shape == (48, ch, cw, 3) and fast.dtype == np.float32
    if aug.standardize:
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4)
    else:  # raw 0..255 (+delta) values: float32 rounding of values in the hundreds
        np.testing.assert_allclose(fast, ref, rtol=2e-6, atol=1e-4)


@pytest.mark.parametrize("aug", CONFIGS, ids=lambda a: a.describe())
def test_pipeline_batch_function_equals_reference(aug):
    """What the pipelines run: draws made inside the compiled call from a key, statistics looked up
    in `crop_stats` (in-memory source) or taken from the batch (JPEG source)."""
    images = photo_like(40, size=40 if aug.crop == 0.88 else 32)
    labels = np.arange(100, 140)
    key = seed_pair(3, 9)
    index = np.array([5, 0, 39, 12, 5, 7, 30, 21] * 2, np.int32)
    d = draw(aug, len(index), images.shape[1:3], key)
    ref = reference_batch(aug, images[index], d)
    tol = dict(rtol=0, atol=1e-4) if aug.standardize else dict(rtol=2e-6, atol=1e-4)
    for stats in (crop_stats(aug, images), None):
        y, lab = fast_batch(aug, images, labels, key, index=index, stats=stats)
        np.testing.assert_allclose(y.numpy(), ref, **tol)
        np.testing.assert_array_equal(lab.numpy(), labels[index])
    y, lab = fast_batch(aug, images[index], labels[index], key)  # a decoded batch, no index
    np.testing.assert_allclose(y.numpy(), ref, **tol)


def test_crop_stats_are_the_moments_of_each_crop():
    images = photo_like(6, size=20)
    aug = Augment(crop=12)
    st = crop_stats(aug, images)
    assert st.shape == (6, 9, 9, 3, 2) and st.dtype == np.float32
    for i, oy, ox in [(0, 0, 0), (3, 8, 8), (5, 2, 7)]:
        crop = images[i, oy:oy + 12, ox:ox + 12].astype(np.float64)
        np.testing.assert_allclose(st[i, oy, ox, :, 0], crop.mean(axis=(0, 1)), rtol=1e-6)
        np.testing.assert_allclose(st[i, oy, ox, :, 1], crop.var(axis=(0, 1)), rtol=1e-5)
    centre = crop_stats(aug.for_eval(), images)
    assert centre.shape == (6, 1, 1, 3, 2)
    np.testing.assert_array_equal(centre[:, 0, 0], st[:, 4, 4])


def test_draws_really_vary_in_the_equality_test():
    aug = Augment()
    d = draw(aug, 256, (32, 32), seed_pair(11, 5))
    assert len(set(d.offset_y.numpy())) == 9 and len(set(d.offset_x.numpy())) == 9
    assert 0 < d.flip.numpy().mean() < 1
    assert d.delta.numpy().std() > 20 and d.factor.numpy().std() > 0.3


def test_degenerate_images():
    """A constant image standardizes to exactly 0 in fast (the stddev floor); the reference agrees
    up to its own float32 rounding of the mean of a constant."""
    aug = Augment()
    images = np.stack([np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 255, np.uint8),
                       (photo_like(1)[0] // 32 + 120).astype(np.uint8)])
    d = draw(aug, 3, (32, 32), seed_pair(3))
    fast = apply_fast(aug, images, d).numpy()
    ref = reference_batch(aug, images, d)
    assert np.all(fast[:2] == 0.0)
    # the reference's float32 mean of 576 equal values is off by ~1e-4, times 1/floor = 41.6
    np.testing.assert_allclose(ref[:2], 0.0, atol=1e-2)
    np.testing.assert_allclose(fast[2], ref[2], atol=1e-4)  # low contrast (std ~ 2): still exact stats


def test_brightness_cancels_under_standardization():
    aug = Augment()
    images = photo_like(16)
    d = draw(aug, 16, (32, 32), seed_pair(4))
    shifted = d._replace(delta=-d.delta + 17.0)
    a, b = apply_fast(aug, images, d).numpy(), apply_fast(aug, images, shifted).numpy()
    assert np.array_equal(a, b)
    ref = reference_batch(aug, images, shifted)
    np.testing.assert_allclose(a, ref, atol=1e-4)
    # without standardization it does not cancel
    raw = Augment(standardize=False)
    assert not np.allclose(apply_fast(raw, images, d).numpy(), apply_fast(raw, images, shifted).numpy())


def test_standardized_output_moments():
    out = apply_fast(Augment(), photo_like(32), draw(Augment(), 32, (32, 32), seed_pair(9))).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-4)


def test_gather_from_the_whole_array_equals_the_batch():
    aug = Augment()
    images = photo_like(40)
    idx = np.array([39, 0, 7, 7, 21], np.int32)
    d = draw(aug, 5, (32, 32), seed_pair(2))
    np.testing.assert_array_equal(apply_fast(aug, images, d, index=idx).numpy(),
                                  apply_fast(aug, images[idx], d).numpy())


def test_draws_are_a_pure_function_of_the_seed():
    aug = Augment()
    a = draw(aug, 64, (32, 32), seed_pair(1, 2, 3))
    b = draw(aug, 64, (32, 32), seed_pair(1, 2, 3))
    c = draw(aug, 64, (32, 32), seed_pair(1, 2, 4))
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.numpy(), y.numpy())
    assert not np.array_equal(a.delta.numpy(), c.delta.numpy())
    x = reference_random(aug, tf.constant(photo_like(1)[0]), seed_pair(5))
    y = reference_random(aug, tf.constant(photo_like(1)[0]), seed_pair(5))
    assert np.array_equal(x.numpy(), y.numpy())


def test_draws_of_a_short_batch_are_the_first_rows_of_a_full_one_inside_and_outside_xla():
    """Why it matters: the pipelines pad an epoch's short last batch to the compiled full shape."""
    aug = Augment(contrast=(0.5, 1.5))
    full = draw(aug, 16, (32, 32), seed_pair(9))
    short = draw(aug, 5, (32, 32), seed_pair(9))
    compiled = tf.function(lambda key: draw(aug, 16, (32, 32), key), jit_compile=True)(seed_pair(9))
    for f, s, c in zip(full, short, compiled):
        np.testing.assert_array_equal(f.numpy()[:5], s.numpy())
        if f.dtype.is_floating:  # the same bits; XLA may fuse lo + (hi - lo) * u into one rounding
            np.testing.assert_allclose(f.numpy(), c.numpy(), rtol=1e-6)
        else:
            np.testing.assert_array_equal(f.numpy(), c.numpy())
    assert len(set(full.offset_y.numpy())) > 1 and len(set(full.factor.numpy())) == 16


def test_config_validation():
    with pytest.raises(DatakitError, match="crop"):
        Augment(crop=0)
    with pytest.raises(DatakitError, match="crop"):
        Augment(crop=1.5)
    with pytest.raises(DatakitError, match="contrast"):
        Augment(contrast=(1.8, 0.2))
    with pytest.raises(DatakitError, match="brightness"):
        Augment(brightness=-1)
    with pytest.raises(DatakitError, match="does not fit"):
        Augment(crop=40).crop_size(32, 32)
    assert Augment().for_eval() == Augment(center_crop=True, flip=False, brightness=None, contrast=None)
    assert Augment(crop=0.88).crop_size(200, 200) == (176, 176)


# ------------------------------------------------------------------ free draws: distributions

M = 1800  # images per implementation


def _run(aug, images, impl):
    """All M outputs of one epoch of the train pipeline, in order, plus the inputs in the same order."""
    labels = np.arange(len(images))
    p = pipelines.from_arrays(images, labels, augment=aug, impl=impl, batch_size=200, seed=123, device="cpu")
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in p])
    ys = np.concatenate(ys)
    return np.concatenate(xs), images[ys]


def _chi2_uniform(values, k):
    counts = np.bincount(values, minlength=k)
    expected = len(values) / k
    return ((counts - expected) ** 2 / expected).sum()


def _ks(a, b):
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(fa - fb).max()


KS_2SAMPLE = 1.95 * np.sqrt(2 / M)   # alpha = 0.001
KS_1SAMPLE = 1.95 * np.sqrt(1 / M)
CHI2_8DF = 26.12                     # alpha = 0.001


def coordinate_images(n):
    """Pixel (r, c) = (8 r, 8 c, 77): a crop's offsets and flip can be read back from its pixels."""
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = np.arange(32)[:, None] * 8
    img[..., 1] = np.arange(32)[None, :] * 8
    img[..., 2] = 77
    return np.repeat(img[None], n, axis=0)


def test_crop_offsets_and_flip_rate_match():
    aug = Augment(brightness=None, contrast=None, standardize=False)
    found = {}
    for impl in ("reference", "fast"):
        out, _ = _run(aug, coordinate_images(M), impl)
        oy = (out[:, 0, 0, 0] / 8).round().astype(int)
        g = (out[:, 0, :, 1] / 8).round().astype(int)
        flipped = g[:, 0] > g[:, -1]
        ox = np.where(flipped, g[:, -1], g[:, 0])
        # every crop is a real crop: rows consecutive, columns consecutive in one direction
        assert np.all(np.abs(np.diff(g, axis=1)) == 1)
        assert np.all(np.diff(out[:, :, 0, 0] / 8, axis=1).round() == 1)
        assert oy.min() >= 0 and oy.max() <= 8 and ox.min() >= 0 and ox.max() <= 8
        assert _chi2_uniform(oy, 9) < CHI2_8DF and _chi2_uniform(ox, 9) < CHI2_8DF
        assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / M)
        found[impl] = (oy, ox, flipped)
    for k in range(2):  # the two implementations against each other (homogeneity)
        a, b = np.bincount(found["reference"][k], minlength=9), np.bincount(found["fast"][k], minlength=9)
        pooled = (a + b) / 2
        assert (((a - pooled) ** 2 + (b - pooled) ** 2) / pooled).sum() < CHI2_8DF


def test_brightness_and_contrast_draws_match():
    images = photo_like(M, seed=5)
    for impl in ("reference", "fast"):
        out, src = _run(Augment(crop=None, flip=False, contrast=None, standardize=False), images, impl)
        delta = (out - src.astype(np.float32)).reshape(M, -1)
        assert np.abs(delta - delta[:, :1]).max() < 1e-3  # one delta per image
        delta = delta[:, 0]
        assert delta.min() >= -63 and delta.max() < 63
        assert _ks(delta, np.linspace(-63, 63, 10001)) < KS_1SAMPLE

        out, src = _run(Augment(crop=None, flip=False, brightness=None, standardize=False), images, impl)
        factor = out.std(axis=(1, 2)) / src.astype(np.float64).std(axis=(1, 2))  # per channel
        assert np.abs(factor / factor[:, :1] - 1).max() < 1e-4  # one factor per image
        assert factor.min() >= 0.2 - 1e-4 and factor.max() < 1.8 + 1e-4
        assert _ks(factor[:, 0], np.linspace(0.2, 1.8, 10001)) < KS_1SAMPLE


def test_output_statistics_match():
    images = photo_like(M, seed=6)
    stats = {}
    for impl in ("reference", "fast"):
        out, _ = _run(Augment(), images, impl)
        assert out.shape == (M, 24, 24, 3)
        np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-4)
        np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-3)
        stats[impl] = (out.mean(axis=(1, 2)).ravel(),        # channel means: move with the contrast factor
                       out.std(axis=(1, 2)).ravel(),         # channel spreads
                       out[:, ::7, ::7, :].ravel())          # pixel values
    for a, b in zip(stats["reference"], stats["fast"]):
        assert _ks(a, b) < 1.95 * np.sqrt(2 / len(a)) + 0.01


@pytest.mark.parametrize("shape", [(32, 32, 3), (40, 28, 3), (30, 36, 1)])
def test_block_gather_crop_equals_the_per_pixel_gather(shape):
    """The compiled crop (one [ch, cw*C] block per image, flip as a reverse) takes the pixels the
    plain-TF per-pixel gather takes: non-square images, one channel, repeated and edge indices."""
    from datakit.augment import _fast_fns

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (12, *shape), dtype=np.uint8)
    aug = Augment(crop=0.75, brightness=None, contrast=None, standardize=False)
    index = np.array([0, 11, 11, 3, 0, 7, 5, 11], np.int32)
    for seed in range(4):
        key = seed_pair(seed)
        a = fast_batch(aug, images, np.arange(12), key, index=index, jit=True)[0].numpy()
        b = fast_batch(aug, images, np.arange(12), key, index=index, jit=False)[0].numpy()
        np.testing.assert_array_equal(a, b)
    d = draw(aug, len(index), shape[:2], seed_pair(1))
    want = np.stack([images[i, y:y + a.shape[1], x:x + a.shape[2]][:, ::-1 if f else 1]
                     for i, y, x, f in zip(index, d.offset_y.numpy(), d.offset_x.numpy(), d.flip.numpy())])
    got = _fast_fns(aug, *shape, True).apply(tf.constant(images), tf.constant(index), d).numpy()
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_fast_group_and_fast_keyed_equal_fast_batch():
    from datakit.augment import fast_group, fast_keyed

    aug = Augment()
    images = photo_like(30)
    labels = np.arange(30)
    index = np.random.default_rng(2).integers(0, 30, (3, 8)).astype(np.int32)
    keys = tf.stack([seed_pair(5, k) for k in range(3)])
    for stats in (crop_stats(aug, images), None):
        ys, labs = fast_group(aug, images, labels, keys, index, stats=stats)
        assert ys.shape == (3, 8, 24, 24, 3) and labs.shape == (3, 8)
        for k, (y, lab) in enumerate(zip(ys, labs)):
            want, want_lab = fast_batch(aug, images, labels, keys[k], index=index[k], stats=stats)
            np.testing.assert_array_equal(y.numpy(), want.numpy())
            np.testing.assert_array_equal(lab.numpy(), want_lab.numpy())
    batch = images[index[0]]
    want, _ = fast_batch(aug, batch, labels[:8], keys[0])
    np.testing.assert_array_equal(fast_keyed(aug, batch, keys[0]).numpy(), want.numpy())
    with pytest.raises(DatakitError, match=r"index \[K, B\]"):
        fast_group(aug, images, labels, keys[0], index[0])
