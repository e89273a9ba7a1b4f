"""datakit.layers.AugmentLayer: the pipelines' fast path inside a Keras model, serialisable."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from datakit.augment import Augment, apply_fast, draw, fast_batch, seed_pair  # noqa: E402
from datakit.errors import DatakitError  # noqa: E402
from datakit.layers import AugmentLayer  # noqa: E402


def images(n: int = 24, size: int = 32, seed: int = 0) -> np.ndarray:
    """Colour gradients plus noise: every image and channel with its own mean and spread."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 128 + 90 * (rng.uniform(-1, 1, (n, 1, 1, 3)) * yy[None, :, :, None]
                       + rng.uniform(-1, 1, (n, 1, 1, 3)) * xx[None, :, :, None])
    noisy = base + rng.normal(0, rng.uniform(2, 30, (n, 1, 1, 1)), (n, size, size, 3))
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


CONFIGS = [
    Augment(),                                          # the tutorial's chain, crop 24 of 32
    Augment(crop=0.88),                                 # relative crop (UTK's default)
    Augment(contrast=None, brightness=None),
    Augment(flip=False, standardize=False),
    Augment(crop=None, flip=False, contrast=None),
]


def sized(aug: Augment) -> np.ndarray:
    return images(size=40 if isinstance(aug.crop, float) else 32)


@pytest.mark.parametrize("aug", CONFIGS, ids=lambda a: a.describe())
def test_layer_equals_the_fast_path_for_the_same_draws(aug):
    x = sized(aug)
    layer = AugmentLayer(aug, seed=0)
    d = draw(aug, len(x), x.shape[1:3], seed_pair(7, 1))
    ch, cw = aug.crop_size(*x.shape[1:3])
    out = layer(x, training=True, draws=d).numpy()
    assert out.shape == (len(x), ch, cw, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, apply_fast(aug, x, d).numpy(), rtol=0 if aug.standardize else 1e-6, atol=1e-4)
    # a key gives the draws the pipelines make from it: the same batch as augment.fast_batch
    key = seed_pair(7, 2)
    want, _ = fast_batch(aug, x, np.arange(len(x), dtype=np.int32), key)
    np.testing.assert_allclose(layer(x, training=True, key=key).numpy(), want.numpy(),
                               rtol=0 if aug.standardize else 1e-6, atol=1e-4)


def test_float_pixels_give_what_their_uint8_values_give():
    x = images()
    d = draw(Augment(), len(x), (32, 32), seed_pair(1, 1))
    layer = AugmentLayer(Augment(), seed=0)
    np.testing.assert_array_equal(layer(x.astype(np.float32), training=True, draws=d).numpy(),
                                  layer(x, training=True, draws=d).numpy())


@pytest.mark.parametrize("aug", [Augment(), Augment(crop=0.88)], ids=["crop 24", "crop 0.88"])
def test_inference_is_the_centre_crop_standardized(aug):
    x = sized(aug)
    h, w = x.shape[1:3]
    ch, cw = aug.crop_size(h, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = x[:, y0:y0 + ch, x0:x0 + cw].astype(np.float64)
    mean = crop.mean(axis=(1, 2, 3), keepdims=True)
    sd = np.maximum(crop.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(ch * cw * 3))
    want = (crop - mean) / sd
    layer = AugmentLayer(aug, seed=0)
    np.testing.assert_allclose(layer(x, training=False).numpy(), want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=0, atol=1e-4)  # Keras' default: inference


def test_training_draws_come_from_the_seed_generator():
    x = images()
    a, b = AugmentLayer(seed=3), AugmentLayer(seed=3)
    first, second = a(x, training=True).numpy(), a(x, training=True).numpy()
    assert not np.allclose(first, second)                   # a fresh draw per call
    np.testing.assert_array_equal(b(x, training=True).numpy(), first)  # same seed, same sequence
    step = tf.function(lambda t: a(t, training=True))        # inside a compiled forward pass too
    assert not np.allclose(step(x).numpy(), step(x).numpy())


def test_config_round_trip():
    aug = Augment(crop=0.88, brightness=None, contrast=(0.5, 1.5))
    layer = AugmentLayer(aug, seed=5, name="aug")
    config = layer.get_config()
    json.dumps(config)
    again = AugmentLayer.from_config(config)
    assert again.augment == aug and again.seed == 5 and again.name == "aug"
    assert again.get_config() == config
    x = images(size=40)
    np.testing.assert_array_equal(again(x).numpy(), layer(x).numpy())


def test_model_saves_to_and_loads_from_keras_file(tmp_path):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(AugmentLayer(Augment(), seed=1)(inputs)))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = images()
    assert isinstance(loaded.layers[1], AugmentLayer) and loaded.layers[1].augment == Augment()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(DatakitError, match="augment must be"):
        AugmentLayer("tutorial")
    with pytest.raises(DatakitError, match="does not fit"):
        AugmentLayer(Augment(crop=40))(images())
    with pytest.raises(DatakitError, match="inputs must be"):
        AugmentLayer()(np.zeros((32, 32, 3), np.uint8))
