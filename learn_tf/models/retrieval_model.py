"""The trainable model: towers + a retrieval task, as a `tfrs.Model`."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

import tensorflow as tf
import tensorflow_recommenders as tfrs

from learn_tf.models.task import DenseAllActionRetrieval, NextItemRetrieval


class RetrievalModel(tfrs.Model):
    """Owns the towers; `compute_loss` delegates to the task chosen by `negatives`.

    Features, next-item objective (`negatives` "full", "sampled", "in_batch"):
      history: [B, T] int item indices, right-padded with 0.
      labels: [B, T] the item following each history position (0 = none).
    Features, dense all-action objective (`negatives="dense"`):
      history: [B, T]; query_positions: [B, H] (-1 = unused); targets:
      [B, N_t] (0 = unused); pair_mask: optional [B, H, N_t] bool.

    Args:
      towers: `LearnTowers` or `SASRecTowers`.
      logit_scale: inverse temperature for cosine towers (official LEARN: 20);
        dot-product towers (`towers.similarity == "dot"`) use 1.
      item_log_q: optional [N + 1] log frequency of each item index among
        training targets (logQ correction of in-batch columns).
      independent_targets: dense task: encode every target on its own.
      negatives: "dense", "full", "sampled" or "in_batch".
      candidate_mask: optional [N + 1] bool, the items that may be scored in
        training ("full") or drawn as negatives ("sampled"): items seen in
        training. Default: every item.
      num_sampled: shared negatives per batch ("sampled").
      sampled_distribution: "uniform" or "unigram" over `candidate_mask`.
      learnable_logit_scale: train the (log) logit scale, starting at
        `logit_scale` (cosine towers only).
      chunk_size: candidates per log-sum-exp chunk ("full").
    """

    def __init__(self, towers: tf.keras.Model, logit_scale: float = 20.0, item_log_q: Optional[np.ndarray] = None,
                 independent_targets: bool = False, negatives: str = "dense",
                 candidate_mask: Optional[np.ndarray] = None, num_sampled: int = 1024,
                 sampled_distribution: str = "uniform", learnable_logit_scale: bool = False,
                 chunk_size: int = 8192, target_neighbours: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 target_share: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if target_share and (target_neighbours is None or negatives != "full"):
            raise ValueError("soft targets over neighbours (target_share > 0) need target_neighbours and "
                             f"negatives 'full', got negatives {negatives!r}")
        # [N + 1, k] neighbour item indices and weights (rows sum to 1) of each target, and their share.
        self.target_share = float(target_share)
        self.neighbour_ids = self.neighbour_weights = None
        if self.target_share:
            ids, weights = target_neighbours
            self.neighbour_ids = tf.constant(np.asarray(ids, np.int32))
            self.neighbour_weights = tf.constant(np.asarray(weights, np.float32))
        self.independent_targets, self.negatives = independent_targets, negatives
        self.towers = towers
        self.num_items = int(towers.num_items)
        dot = getattr(towers, "similarity", "cosine") == "dot"
        scale = 1.0 if dot else float(logit_scale)
        self.log_scale = (tf.Variable(math.log(scale), trainable=True, name="log_logit_scale")
                          if learnable_logit_scale and not dot else None)
        if negatives == "dense":
            self.task = DenseAllActionRetrieval(1.0 if self.log_scale is not None else scale)
        else:
            self.task = NextItemRetrieval(negatives, 1.0 if self.log_scale is not None else scale, chunk_size)
        # [N + 1] log sampling probability per item index (logQ correction), or None.
        self.log_q = None if item_log_q is None else tf.constant(item_log_q, tf.float32)
        mask = np.ones(self.num_items + 1, bool) if candidate_mask is None else np.asarray(candidate_mask, bool)
        mask = mask.copy()
        mask[0] = False
        self.candidate_mask = tf.constant(mask)
        self.num_sampled = int(num_sampled) if negatives == "sampled" else 0
        if sampled_distribution not in ("uniform", "unigram"):
            raise ValueError(f"sampled_distribution must be uniform or unigram, got {sampled_distribution!r}")
        if sampled_distribution == "unigram" and item_log_q is not None:
            logits = np.where(mask, np.asarray(item_log_q, np.float64), -np.inf)
        else:
            logits = np.where(mask, 0.0, -np.inf)
        logits = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        # log probability of each item index under the shared-negative sampler.
        self.sample_log_p = tf.constant(logits, tf.float32)

    def scale(self) -> Optional[tf.Tensor]:
        """The learnable logit scale (clipped to [1, 100]), or None when fixed."""
        if self.log_scale is None:
            return None
        return tf.exp(tf.clip_by_value(self.log_scale, 0.0, math.log(100.0)))

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        if "labels" in features:
            return self._next_item_loss(features, training)
        history, positions, targets = features["history"], features["query_positions"], features["targets"]
        seq = self.towers.sequence(history, training=training)
        queries = tf.gather(seq, tf.maximum(positions, 0), batch_dims=1)
        if self.log_scale is not None:
            queries = queries * self.scale()
        if self.independent_targets:
            flat = self.towers.items(tf.reshape(targets, [-1]), training=training)
            items = tf.reshape(flat, tf.concat([tf.shape(targets), tf.shape(flat)[-1:]], axis=0))
        else:
            items = self.towers.targets(targets, training=training)
        log_q = tf.gather(self.log_q, targets) if self.log_q is not None else None
        return self.task(queries, items, positions >= 0, targets > 0, targets, log_q,
                         features.get("pair_mask"), training=training)

    def _next_item_loss(self, features: dict[str, tf.Tensor], training: bool) -> tf.Tensor:
        history, labels = features["history"], features["labels"]
        seq = self.towers.sequence(history, training=training)
        valid = labels > 0
        queries = tf.boolean_mask(seq, valid)  # [Q, d]
        pos_ids = tf.boolean_mask(labels, valid)  # [Q]
        if self.log_scale is not None:
            queries = queries * self.scale()
        if self.negatives == "full":
            all_ids = tf.range(1, self.num_items + 1)
            matrix = self.towers.items(all_ids, training=training)  # [N, d], recomputed every step
            positives = tf.gather(matrix, pos_ids - 1)
            if self.target_share:
                # Soft label (1 - s) one-hot + s neighbours: the loss is linear in the positive's vector, so the
                # cross-entropy against it is the one against the mixed vector.
                nbr = tf.gather(matrix, tf.gather(self.neighbour_ids, pos_ids) - 1)  # [Q, k, d]
                soft = tf.einsum("qk,qkd->qd", tf.gather(self.neighbour_weights, pos_ids), nbr)
                positives = (1.0 - self.target_share) * positives + self.target_share * soft
            return self.task(queries, positives, pos_ids, matrix, all_ids, candidate_mask=self.candidate_mask[1:],
                             training=training)
        unique, slot = tf.unique(pos_ids)
        positives = tf.gather(self.towers.items(unique, training=training), slot)
        n_rows = tf.cast(tf.shape(pos_ids)[0], tf.float32)
        neg_ids = neg = None
        if self.num_sampled:
            neg_ids = tf.cast(tf.random.categorical(self.sample_log_p[None, :], self.num_sampled)[0], tf.int32)
            neg = self.towers.items(neg_ids, training=training)
        pos_log_q = cand_log_q = None
        if self.log_q is not None:
            # log expected count of an item among the columns: rows x p_target + sampled x p_sampler.
            def log_count(ids: tf.Tensor) -> tf.Tensor:
                terms = [tf.gather(self.log_q, ids) + tf.math.log(n_rows)]
                if self.num_sampled:
                    terms.append(tf.gather(self.sample_log_p, ids) + math.log(self.num_sampled))
                return tf.reduce_logsumexp(tf.stack(terms, axis=0), axis=0)

            pos_log_q = log_count(pos_ids)
            cand_log_q = log_count(neg_ids) if neg_ids is not None else None
        return self.task(queries, positives, pos_ids, neg, neg_ids, pos_log_q, cand_log_q, training=training)

    def call(self, history: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] history indices -> [B, d] user embeddings."""
        return self.towers.users(history, training=training)
