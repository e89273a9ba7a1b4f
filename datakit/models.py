"""The networks `datakit train` ships: the CIFAR-10 tutorial's net, `compact`, `small`, and `seed-bad`.

`cifar10_tutorial` follows TensorFlow's classic CIFAR-10 tutorial (cifar10.py) layer for layer,
including its initialisers and its weight decay, so its published figures are a meaningful
reference. `compact` is the default for builds: five 3x3 convolutions with batch normalization,
each but the last followed by a 2x2 max-pool, then global average pooling, so nearly all its
weights sit in convolutions and its cost is spread evenly over the resolutions (well under 2 M
parameters). `small` is the well-known fix for a race x gender CNN that guessed at random;
`seed-bad` is that failing network, kept to demonstrate the stuck-at-chance diagnosis.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from datakit.errors import DatakitError

# The tutorial's constants (cifar10.py): weight decay 0.004 on local3/local4 times tf.nn.l2_loss
# (= sum(w**2) / 2), i.e. a Keras L2 factor of 0.002 on sum(w**2).
TUTORIAL_WEIGHT_DECAY = 0.004
LRN = dict(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)
MODELS = ("compact", "small", "seed-bad")
COMPACT_WIDTHS = (24, 48, 96, 192, 384)  # channels per stage: each doubles as the map side halves


@keras.saving.register_keras_serializable(package="datakit")
class LocalResponseNorm(layers.Layer):
    """tf.nn.local_response_normalization as a Keras 3 layer (Keras 3 dropped its own LRN)."""

    def __init__(self, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        return tf.nn.local_response_normalization(inputs, depth_radius=self.depth_radius, bias=self.bias,
                                                  alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


def tutorial_l2(weight_decay: float = TUTORIAL_WEIGHT_DECAY) -> keras.regularizers.L2:
    """weight_decay * tf.nn.l2_loss(w), expressed as Keras L2 (which is factor * sum(w**2))."""
    return keras.regularizers.L2(weight_decay / 2.0)


def cifar10_tutorial(input_shape=(24, 24, 3), num_classes: int = 10, seed: int | None = None) -> keras.Model:
    """conv5x5x64 -> pool3/2 -> LRN -> conv5x5x64 -> LRN -> pool3/2 -> 384 -> 192 -> logits (no softmax)."""
    def trunc(stddev, k):
        return keras.initializers.TruncatedNormal(stddev=stddev, seed=None if seed is None else seed + k)

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=trunc(5e-2, 1),
                      bias_initializer="zeros", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = LocalResponseNorm(**LRN, name="norm1")(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=trunc(5e-2, 2),
                      bias_initializer=keras.initializers.Constant(0.1), name="conv2")(x)
    x = LocalResponseNorm(**LRN, name="norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(384, activation="relu", kernel_initializer=trunc(0.04, 3),
                     bias_initializer=keras.initializers.Constant(0.1), kernel_regularizer=tutorial_l2(),
                     name="local3")(x)
    x = layers.Dense(192, activation="relu", kernel_initializer=trunc(0.04, 4),
                     bias_initializer=keras.initializers.Constant(0.1), kernel_regularizer=tutorial_l2(),
                     name="local4")(x)
    logits = layers.Dense(num_classes, kernel_initializer=trunc(1 / 192.0, 5), bias_initializer="zeros",
                          name="softmax_linear")(x)
    return keras.Model(inputs, logits, name="cifar10_tutorial")


def compact(input_shape, num_classes: int, rescale: float | None = None, widths=COMPACT_WIDTHS,
            dropout: float = 0.0) -> keras.Model:
    """[conv3x3 -> BN -> ReLU -> max-pool 2] x (len(widths) - 1) -> conv3x3 -> BN -> ReLU -> GAP -> softmax.

    The convolutions have no bias (BN's beta is the bias). BN momentum 0.9 (Keras: 0.99) lets the
    running statistics follow the weights within an epoch of a few thousand pictures, so each
    epoch's validation (and the best-epoch choice) sees the model as it is. Every stage costs about the same
    multiply-adds (channels double as the map side halves), and global average pooling instead
    of a flattened dense layer keeps the parameters in the convolutions: no giant dense layer to
    overfit 5,000 pictures, and any input size works.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(rescale, name="rescale")(inputs) if rescale else inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if i < len(widths) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="compact")


def small(input_shape, num_classes: int, rescale: float | None = None) -> keras.Model:
    """conv16 5x5 -> pool -> conv32 3x3 -> pool -> conv64 3x3 -> pool -> dense 512 -> softmax.

    Expects inputs in [0, 1]; `rescale` (e.g. 1/255) puts a Rescaling layer in front when the
    input pipeline delivers raw pixel values.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(rescale, name="rescale")(inputs) if rescale else inputs
    x = layers.Conv2D(16, 5, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small")


# seed-bad: five blocks of (conv 256 2x2 VALID, conv 256 2x2 VALID, max-pool 2x2, dropout 0.4).
SEED_BAD_BLOCKS = 5


def seed_bad_min_size(blocks: int = SEED_BAD_BLOCKS) -> int:
    """Smallest square side that still leaves a 1x1 map after every block (94 for five blocks)."""
    side = 1
    for _ in range(blocks):
        side = 2 * side + 2  # undo the pool (floor halving) and the two VALID 2x2 convs
    return side


def seed_bad(input_shape, num_classes: int, rescale: float | None = None) -> keras.Model:
    """The failing race x gender network: ten 256-filter 2x2 VALID convs, pools, dropout 0.4.

    Kept as it was (no input scaling of its own) so the diagnosis has a real patient.
    """
    side = min(int(input_shape[0]), int(input_shape[1]))
    need = seed_bad_min_size()
    if side < need:
        raise DatakitError(f"model seed-bad: images of {input_shape[0]}x{input_shape[1]} px are too small; its ten "
                           f"2x2 VALID convolutions and five 2x2 pools need at least {need}x{need} px "
                           f"(rebuild with build-utk --size {need} or more, or use --model small)")
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(rescale, name="rescale")(inputs) if rescale else inputs
    for b in range(SEED_BAD_BLOCKS):
        x = layers.Conv2D(256, 2, padding="valid", activation="relu", name=f"conv{2 * b + 1}")(x)
        x = layers.Conv2D(256, 2, padding="valid", activation="relu", name=f"conv{2 * b + 2}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{b + 1}")(x)
        x = layers.Dropout(0.4, name=f"dropout{b + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed_bad")


def build_utk_model(name: str, input_shape, num_classes: int, rescale: float | None = None) -> keras.Model:
    if name == "compact":
        return compact(input_shape, num_classes, rescale=rescale)
    if name == "small":
        return small(input_shape, num_classes, rescale=rescale)
    if name == "seed-bad":
        return seed_bad(input_shape, num_classes, rescale=rescale)
    raise DatakitError(f"model={name!r}: unknown model (choose from {', '.join(MODELS)})", param="model")


def chance_loss(num_classes: int) -> float:
    """Cross-entropy of a model that predicts the uniform distribution: ln(K)."""
    return math.log(num_classes)
