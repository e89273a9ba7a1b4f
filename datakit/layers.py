"""The tutorial's augmentation as a Keras 3 layer: the fused fast path inside the model.

    import keras
    from datakit.augment import Augment
    from datakit.layers import AugmentLayer

    model = keras.Sequential([keras.Input((32, 32, 3), dtype="uint8"),
                              AugmentLayer(Augment(), seed=0),      # float32 [B, 24, 24, 3]
                              keras.layers.Conv2D(64, 5, activation="relu"), ...])
    model.fit(raw_uint8_batches, ...)      # training: random crop, flip, brightness, contrast, standardization
    model.predict(images)                  # inference: centre crop + standardization (Augment.for_eval())

The layer is configured by a `datakit.augment.Augment` and computes what the pipelines' fast path
computes (one block gather for crop + flip, then the per-image affine map of contrast + brightness +
standardization from the crop's exact moments), in one compiled call per batch with the draws made
inside it (`augment.fast_keyed`): for the same draws the outputs agree (tests/test_layers.py). Draws
come from the layer's `keras.random.SeedGenerator` (its state is a variable of the layer, saved with
the model); `layer(x, training=True, key=k)` draws with `augment.draw(aug, B, (H, W), k)` instead,
the draws of `augment.fast_batch(..., key=k)`, and `draws=` takes them ready-made
(`augment.apply_fast`). Nothing is pinned to a device: the ops run where the model runs.

Inputs: [B, H, W, C] pixels in 0..255, uint8 (exact) or float (rounded to the nearest integer and
clipped to 0..255 first, because the fused path sums integer pixels exactly).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from datakit import augment as _augment
from datakit.augment import Augment, Draws
from datakit.errors import DatakitError

__all__ = ["AugmentLayer"]

_EVAL_KEY = (0, 0)  # the evaluation chain draws nothing random (centre crop, no flip, no delta, factor 1)


def _augment_config(aug: Augment) -> dict:
    """A JSON-ready dict of an Augment (Augment(**it) gives it back)."""
    cfg = dataclasses.asdict(aug)
    if cfg["contrast"] is not None:
        cfg["contrast"] = list(cfg["contrast"])
    return cfg


@keras.saving.register_keras_serializable(package="datakit")
class AugmentLayer(keras.layers.Layer):
    """Random crop, flip, brightness, contrast and per-image standardization of a batch (training);
    centre crop + standardization otherwise.

    augment: a `datakit.augment.Augment` (or its dict, as `get_config` writes it); None: the
    CIFAR-10 tutorial's chain, `Augment()`. Its `center_crop` decides the training crop; the
    inference chain is always `augment.for_eval()`. seed: of the layer's SeedGenerator (None: random).
    """

    def __init__(self, augment: Augment | dict | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if augment is None:
            augment = Augment()
        elif isinstance(augment, dict):
            augment = Augment(**augment)
        elif not isinstance(augment, Augment):
            raise DatakitError(f"AugmentLayer: augment must be a datakit.augment.Augment or its dict, "
                               f"got {type(augment).__name__}", param="augment")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DatakitError(f"AugmentLayer: seed must be an integer or None, got {seed!r}", param="seed")
        self.augment = augment
        self.eval_augment = augment.for_eval()
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def _check_shape(self, shape) -> tuple[int, int, int]:
        if len(shape) != 4 or None in tuple(shape[1:]):
            raise DatakitError(f"AugmentLayer: inputs must be [batch, height, width, channels] with static "
                               f"height, width and channels, got {tuple(shape)}", param="inputs")
        h, w, c = (int(v) for v in shape[1:])
        self.augment.crop_size(h, w)
        return h, w, c

    def build(self, input_shape):
        self._check_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        h, w, c = self._check_shape(input_shape)
        ch, cw = self.augment.crop_size(h, w)
        return (input_shape[0], ch, cw, c)

    def draw(self, images, key=None) -> Draws:
        """The training draws for this batch: from `key` ([2] ints), else from the seed generator."""
        if key is None:
            key = self.seed_generator.next()
        h, w, _ = self._check_shape(images.shape)
        return _augment.draw(self.augment, tf.shape(images)[0], (h, w), tf.cast(key, tf.int64))

    def call(self, inputs, training=None, key=None, draws=None):
        x = tf.convert_to_tensor(inputs)
        h, w, _ = self._check_shape(x.shape)
        if x.dtype != tf.uint8:
            x = tf.cast(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0.0, 255.0), tf.uint8)
        if not training:
            return _augment.fast_keyed(self.eval_augment, x, tf.constant(_EVAL_KEY, tf.int64))
        if draws is not None:
            return _augment.apply_fast(self.augment, x, draws)
        # the draws are made inside the compiled call (one XLA launch per batch, not draws + launch)
        return _augment.fast_keyed(self.augment, x, self.seed_generator.next() if key is None else key)

    def get_config(self):
        return {**super().get_config(), "augment": _augment_config(self.augment), "seed": self.seed}
