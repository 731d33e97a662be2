"""The projection head: recommender width to the output embedding, L2-normalised."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class ProjectionHead(tf.keras.layers.Layer):
    """Dense(d_model -> out_dim) followed by L2 normalisation (optional, on by default).

    Args:
      out_dim: output embedding width (paper: 64).
      normalize: L2-normalise the output (cosine scores); False for dot-product scores.
    """

    def __init__(self, out_dim: int, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dim, self.normalize = int(out_dim), bool(normalize)
        self.dense = tf.keras.layers.Dense(out_dim, name="dense")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """[..., d_model] -> [..., out_dim] (unit L2 norm when `normalize`)."""
        y = self.dense(x)
        return tf.math.l2_normalize(y, axis=-1, epsilon=1e-12) if self.normalize else y

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_dim": self.out_dim, "normalize": self.normalize}
