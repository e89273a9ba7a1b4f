"""Learning-rate schedules of the bundled trainers (Keras serializable)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="datakit")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate: 0 -> peak linearly over `warmup_steps`, then linearly to 0 at `total_steps`."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak, self.total, self.warmup = float(peak), int(total_steps), max(1, int(warmup_steps))

    def __call__(self, step):
        s = ops.cast(step, "float32")
        up = self.peak * s / self.warmup
        down = self.peak * ops.maximum(0.0, (self.total - s) / max(1, self.total - self.warmup))
        return ops.where(s < self.warmup, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total, "warmup_steps": self.warmup}
