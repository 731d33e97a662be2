"""A BERT-style transformer encoder with causal (or self-only) attention and right padding."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

ATTENTION_MODES = ("causal", "self")


def kernel_initializer(initializer_range: Optional[float], default: str = "glorot_uniform") -> Any:
    """N(0, initializer_range) when set (BERT / SASRec style), else the Keras `default`."""
    if initializer_range is None:
        return default
    return tf.keras.initializers.RandomNormal(stddev=float(initializer_range))


def attention_mask(padding_mask: tf.Tensor, mode: str = "causal") -> tf.Tensor:
    """[B, T] bool padding mask -> [B, T, T] bool attention mask.

    "causal": position i attends to real positions j <= i (LEARN's user tower
    and item tower (a)); "self": each position attends only to itself (item
    tower (b)).
    """
    t = tf.shape(padding_mask)[1]
    if mode == "causal":
        structure = tf.linalg.band_part(tf.ones((t, t), tf.bool), -1, 0)
    elif mode == "self":
        structure = tf.cast(tf.eye(t), tf.bool)
    else:
        raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
    return tf.logical_and(structure[None, :, :], padding_mask[:, None, :])


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class TransformerBlock(tf.keras.layers.Layer):
    """Post-LN block: x = LN(x + MHA(x)); x = LN(x + FFN(x)), GELU feed-forward.

    Args:
      d_model: width.
      num_heads: attention heads (d_model must be divisible by it).
      ff_dim: feed-forward inner width.
      dropout: dropout on attention weights and residual branches.
      initializer_range: kernels drawn from N(0, initializer_range) (BERT /
        SASRec); None: Keras defaults.
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float = 0.1,
                 initializer_range: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.d_model, self.num_heads, self.ff_dim, self.dropout_rate = d_model, num_heads, ff_dim, dropout
        self.initializer_range = initializer_range
        def init() -> Any:  # a fresh instance per layer (an instance reused may repeat its values)
            return kernel_initializer(initializer_range)

        self.attention = tf.keras.layers.MultiHeadAttention(num_heads, d_model // num_heads, dropout=dropout,
                                                            kernel_initializer=init(), name="attention")
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-12, name="norm1")
        self.norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-12, name="norm2")
        self.ff1 = tf.keras.layers.Dense(ff_dim, activation="gelu", kernel_initializer=init(), name="ff1")
        self.ff2 = tf.keras.layers.Dense(d_model, kernel_initializer=init(), name="ff2")
        self.drop = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        """x: [B, T, d_model]; mask: [B, T, T] bool attention mask."""
        a = self.attention(x, x, attention_mask=mask, training=training)
        x = self.norm1(x + self.drop(a, training=training))
        f = self.ff2(self.ff1(x))
        return self.norm2(x + self.drop(f, training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout_rate, "initializer_range": self.initializer_range}


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class CausalTransformerEncoder(tf.keras.layers.Layer):
    """A stack of `TransformerBlock`s over right-padded sequences.

    The official LEARN code adds no position embeddings (order comes from the
    causal mask alone); `use_positions` adds learned ones (SASRec style).

    Args:
      num_layers, num_heads, d_model, ff_dim, dropout: the block settings.
      max_len: longest sequence (only needed with positions).
      use_positions: add learned position embeddings.
      initializer_range: weights drawn from N(0, initializer_range); None:
        Keras defaults.
    """

    def __init__(self, num_layers: int, num_heads: int, d_model: int, ff_dim: int, dropout: float = 0.1,
                 max_len: int = 512, use_positions: bool = False, initializer_range: Optional[float] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_layers, self.num_heads, self.d_model = num_layers, num_heads, d_model
        self.ff_dim, self.dropout_rate, self.max_len, self.use_positions = ff_dim, dropout, max_len, use_positions
        self.initializer_range = initializer_range
        self.blocks = [TransformerBlock(d_model, num_heads, ff_dim, dropout, initializer_range, name=f"block_{i}")
                       for i in range(num_layers)]
        self.positions = (tf.keras.layers.Embedding(max_len, d_model, name="positions",
                                                    embeddings_initializer=kernel_initializer(initializer_range,
                                                                                              "uniform"))
                          if use_positions else None)
        self.input_norm = tf.keras.layers.LayerNormalization(epsilon=1e-12, name="input_norm")
        self.drop = tf.keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, padding_mask: tf.Tensor, mode: str = "causal", training: bool = False) -> tf.Tensor:
        """x: [B, T, d_model]; padding_mask: [B, T] bool (True = real item) -> [B, T, d_model]."""
        if self.positions is not None:
            x = x + self.positions(tf.range(tf.shape(x)[1]))[None]
        x = self.drop(self.input_norm(x), training=training)
        mask = attention_mask(padding_mask, mode)
        for block in self.blocks:
            x = block(x, mask, training=training)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_layers": self.num_layers, "num_heads": self.num_heads,
                "d_model": self.d_model, "ff_dim": self.ff_dim, "dropout": self.dropout_rate,
                "max_len": self.max_len, "use_positions": self.use_positions,
                "initializer_range": self.initializer_range}
