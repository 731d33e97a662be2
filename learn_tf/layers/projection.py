"""The projection head: recommender width to the output embedding, L2-normalised."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class ProjectionHead(tf.keras.layers.Layer):
    """Dense(d_model -> out_dim) followed by L2 normalisation.

    Args:
      out_dim: output embedding width (paper: 64).
    """

    def __init__(self, out_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dim = int(out_dim)
        self.dense = tf.keras.layers.Dense(out_dim, name="dense")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """[..., d_model] -> [..., out_dim] with unit L2 norm."""
        return tf.math.l2_normalize(self.dense(x), axis=-1, epsilon=1e-12)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_dim": self.out_dim}
