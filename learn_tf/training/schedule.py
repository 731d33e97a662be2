"""Linear warmup then cosine decay, serialisable."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup for step < warmup, then cosine decay to `final_fraction * peak`.

    Args:
      peak: the learning rate after warmup.
      total_steps: steps of the whole run.
      warmup_steps: linear warmup length.
      final_fraction: the last learning rate as a fraction of the peak.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> None:
        self.peak, self.total_steps = float(peak), max(int(total_steps), 1)
        self.warmup_steps, self.final_fraction = max(int(warmup_steps), 0), float(final_fraction)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        progress = tf.clip_by_value((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, self.peak * (step + 1) / warm, self.peak * cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "final_fraction": self.final_fraction}
