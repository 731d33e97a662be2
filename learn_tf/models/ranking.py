"""Using the trained towers inside another TF model: a small CTR/ranking head.

LEARN's user and item embeddings feed production ranking models. This is the
minimal pattern: the towers are ordinary Keras layers, frozen (the default) or
fine-tuned with the ranking objective.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class TowerRanker(tf.keras.Model):
    """Predicts a click logit from LEARN user and item embeddings.

    Inputs: {"history": [B, T] int item indices (right-padded), "item": [B] int}.
    Features: user vector u, item vector v, u * v and the cosine u . v, into a
    small MLP.

    Args:
      towers: trained `LearnTowers` / `SASRecTowers`.
      fine_tune: train the towers with the ranking loss (False: frozen).
      hidden: MLP width.
    """

    def __init__(self, towers: tf.keras.Model, fine_tune: bool = False, hidden: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.towers = towers
        self.towers.trainable = fine_tune
        self.fine_tune, self.hidden = fine_tune, hidden
        self.mlp = tf.keras.Sequential([tf.keras.layers.Dense(hidden, activation="relu"), tf.keras.layers.Dense(1)],
                                       name="mlp")

    def get_config(self) -> dict[str, Any]:
        return {"towers": tf.keras.layers.serialize(self.towers), "fine_tune": self.fine_tune,
                "hidden": self.hidden, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "TowerRanker":
        """Rebuilds the architecture (towers from their config); load weights separately."""
        config = dict(config)
        towers = tf.keras.layers.deserialize(config.pop("towers"), custom_objects=custom_objects)
        return cls(towers, **config)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """-> [B] click logits."""
        u = self.towers.users(inputs["history"], training=training and self.fine_tune)
        v = self.towers.items(inputs["item"], training=training and self.fine_tune)
        cos = tf.reduce_sum(u * v, axis=-1, keepdims=True)
        return self.mlp(tf.concat([u, v, u * v, cos], axis=-1))[:, 0]
