"""The content adaptor: frozen LLM vectors into the recommender's width."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class ContentAdaptor(tf.keras.layers.Layer):
    """LayerNorm (optional) -> Dense(d_llm -> d_model) -> dropout.

    Normalising the input matters: mean-pooled decoder states are nearly
    collinear, and a normalised input keeps the adaptor's gradients useful.

    Args:
      d_model: output width.
      input_norm: apply LayerNorm to the content vectors first.
      dropout: dropout rate on the output.
      initializer_range: kernel drawn from N(0, initializer_range); None: Glorot.
    """

    def __init__(self, d_model: int, input_norm: bool = True, dropout: float = 0.0,
                 initializer_range: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_model, self.input_norm, self.dropout_rate = int(d_model), bool(input_norm), float(dropout)
        self.initializer_range = initializer_range
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="input_norm") if input_norm else None
        init = ("glorot_uniform" if initializer_range is None
                else tf.keras.initializers.RandomNormal(stddev=float(initializer_range)))
        self.dense = tf.keras.layers.Dense(d_model, kernel_initializer=init, name="dense")
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[..., d_llm] -> [..., d_model]."""
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(self.dense(x), training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_model": self.d_model, "input_norm": self.input_norm,
                "dropout": self.dropout_rate, "initializer_range": self.initializer_range}
