"""How each build model is trained by default: batch, optimizer and schedule, epochs, input size,
augmentation. `datakit train build` / `train utk` take every field from here unless a flag says
otherwise, so one table holds the defaults the README's figures were measured with.

compact: SGD with Nesterov momentum and a one-cycle learning rate (linear warm-up over the first
epoch, then linear decay to zero at the last), decoupled weight decay and label smoothing; it runs
its fixed number of epochs (no early stop: the schedule needs its end). Trained at 64 px whatever
the build's size (the pipeline resizes), so a 200 px build trains in minutes on a CPU.
small / seed-bad: Adam at a constant rate, halved after 2 flat epochs, early stop after 5, at the
build's size: the seed answer's recipe, kept for comparison.

No Keras at import: the CLI reads this table to write its help, and `datakit build-utk` must not
load TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from datakit.errors import DatakitError


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults.

    optimizer: "adam" (constant rate, halved on plateaus) or "sgd" (Nesterov, one-cycle).
    size: the side the pipeline resizes to (None: the build's). crop: fraction of the side for the
    random training crop and the centre evaluation crop (None: the dataset's default).
    brightness / contrast: colour jitter (see `augment`); None = off.
    """

    batch_size: int
    lr: float
    epochs: int
    optimizer: str = "adam"
    patience: int | None = 5
    lr_patience: int | None = 2
    lr_factor: float = 0.5
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    size: int | None = None
    crop: float | None = None
    brightness: float | None = None
    contrast: tuple[float, float] | None = None
    raw: bool = False  # seed-bad: raw 0..255 pixels, no crop, flip or scaling (as the failing net was trained)


RECIPES = {
    "compact": Recipe(batch_size=64, lr=0.05, epochs=15, optimizer="sgd", patience=None, lr_patience=None,
                      weight_decay=5e-4, label_smoothing=0.1, size=64, crop=0.88, brightness=20.0,
                      contrast=(0.8, 1.25)),
    "small": Recipe(batch_size=16, lr=1e-3, epochs=30),
    "seed-bad": Recipe(batch_size=16, lr=1e-3, epochs=30, raw=True),
}


def recipe(model_name: str) -> Recipe:
    if model_name not in RECIPES:
        raise DatakitError(f"model={model_name!r}: unknown model (choose from {', '.join(RECIPES)})", param="model")
    return RECIPES[model_name]


def optimizer_factory(r: Recipe, lr: float, steps_per_epoch: int, epochs: int):
    """(make_optimizer, description) for a recipe at learning rate `lr` over `epochs` epochs."""
    import keras

    from datakit.schedules import OneCycle

    if r.optimizer == "adam":
        return (lambda: keras.optimizers.Adam(lr)), {"optimizer": "adam", "learning_rate": lr}
    total = steps_per_epoch * epochs

    def make():
        return keras.optimizers.SGD(OneCycle(lr, total, steps_per_epoch), momentum=0.9, nesterov=True,
                                    weight_decay=r.weight_decay or None)

    return make, {"optimizer": "sgd", "learning_rate": lr, "momentum": 0.9, "nesterov": True,
                  "schedule": "one-cycle", "warmup_steps": steps_per_epoch, "total_steps": total,
                  "weight_decay": r.weight_decay}
