"""The trainable model: towers + the dense all-action task, as a `tfrs.Model`."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import tensorflow as tf
import tensorflow_recommenders as tfrs

from learn_tf.models.task import DenseAllActionRetrieval


class RetrievalModel(tfrs.Model):
    """Owns the towers; `compute_loss` delegates to `DenseAllActionRetrieval`.

    Features (one row per sampled user sequence):
      history: [B, T] int item indices, right-padded with 0.
      query_positions: [B, H] int positions into `history` (-1 = unused).
      targets: [B, N_t] int item indices of the targets (0 = unused).
      pair_mask: optional [B, H, N_t] bool, the positive (position, target) pairs.

    Args:
      towers: `LearnTowers` or `SASRecTowers`.
      logit_scale: inverse temperature of the softmax (official LEARN: 20).
      item_log_q: optional [N + 1] log frequency of each item index among
        training targets, for the logQ correction of in-batch negatives.
      independent_targets: encode every target on its own (the "window"
        sampling, whose target slots are not one target sequence).
    """

    def __init__(self, towers: tf.keras.Model, logit_scale: float = 20.0, item_log_q: Optional[np.ndarray] = None,
                 independent_targets: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.independent_targets = independent_targets
        self.towers = towers
        self.task = DenseAllActionRetrieval(logit_scale)
        # [N + 1] log sampling probability per item index (logQ correction), or None.
        self.log_q = None if item_log_q is None else tf.constant(item_log_q, tf.float32)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        history, positions, targets = features["history"], features["query_positions"], features["targets"]
        seq = self.towers.sequence(history, training=training)
        queries = tf.gather(seq, tf.maximum(positions, 0), batch_dims=1)
        if self.independent_targets:
            flat = self.towers.items(tf.reshape(targets, [-1]), training=training)
            items = tf.reshape(flat, tf.concat([tf.shape(targets), tf.shape(flat)[-1:]], axis=0))
        else:
            items = self.towers.targets(targets, training=training)
        log_q = tf.gather(self.log_q, targets) if self.log_q is not None else None
        return self.task(queries, items, positions >= 0, targets > 0, targets, log_q,
                         features.get("pair_mask"), training=training)

    def call(self, history: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] history indices -> [B, d] user embeddings."""
        return self.towers.users(history, training=training)
