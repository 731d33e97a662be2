"""The dense all-action InfoNCE task (PinnerFormer form), built on `tfrs.tasks.Retrieval`."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

_MIN = -1e9


class DenseAllActionRetrieval(tfrs.tasks.Retrieval):
    """In-batch softmax where every (history position, target item) pair of a user is a positive.

    For a pair (query q from user b, positive item t of user b) the loss is
    -s(q, t) + log(exp s(q, t) + sum over negatives exp s(q, n)), where the
    negatives are the target items of the *other* users in the batch, minus
    any whose item id equals one of user b's targets (false negatives). Scores
    are cosine similarities times `logit_scale` (official LEARN: 20). With one
    query position and one target per user this is exactly
    `tfrs.tasks.Retrieval` with accidental-hit removal (the tests check it).

    Args:
      logit_scale: the fixed inverse temperature.
    """

    def __init__(self, logit_scale: float = 20.0, name: Optional[str] = None) -> None:
        super().__init__(temperature=1.0 / logit_scale, remove_accidental_hits=True, name=name)
        self.logit_scale = float(logit_scale)

    def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor, query_mask: tf.Tensor,
             candidate_mask: tf.Tensor, candidate_ids: tf.Tensor, candidate_log_q: Optional[tf.Tensor] = None,
             pair_mask: Optional[tf.Tensor] = None, training: bool = False) -> tf.Tensor:
        """Computes the mean pair loss.

        Args:
          query_embeddings: [B, H, d] user vectors at H sampled history positions.
          candidate_embeddings: [B, T, d] item vectors of each user's T targets.
          query_mask: [B, H] bool, real query positions.
          candidate_mask: [B, T] bool, real targets.
          candidate_ids: [B, T] int item indices (for false-negative masking).
          candidate_log_q: optional [B, T] log sampling probability of each
            target; subtracted from its scores (logQ correction, Yi et al.
            2019) so in-batch negatives do not penalise popular items.
          pair_mask: optional [B, H, T] bool, which (position, target) pairs
            of a user are positives (default: all valid pairs). A target of
            the same user that is not a positive for a query is never one of
            its negatives either.

        Returns:
          Scalar loss: mean over all valid (query, positive) pairs.
        """
        b = tf.shape(query_embeddings)[0]
        h = tf.shape(query_embeddings)[1]
        t = tf.shape(candidate_embeddings)[1]
        d = tf.shape(query_embeddings)[2]
        q = tf.reshape(query_embeddings, [b * h, d])
        c = tf.reshape(candidate_embeddings, [b * t, d])
        scores = tf.matmul(q, c, transpose_b=True) * self.logit_scale  # [BH, BT]
        if candidate_log_q is not None:
            scores = scores - tf.reshape(tf.cast(candidate_log_q, scores.dtype), [1, b * t])

        row_user = tf.repeat(tf.range(b), h)
        col_user = tf.repeat(tf.range(b), t)
        same_user = tf.equal(row_user[:, None], col_user[None, :])
        row_valid = tf.reshape(query_mask, [b * h])
        col_valid = tf.reshape(candidate_mask, [b * t])
        col_ids = tf.reshape(candidate_ids, [b * t])
        # False negatives: columns whose item is among the row user's own targets.
        # Membership via a [B, U] table over the batch's unique ids (U <= BT).
        unique_ids, col_slot = tf.unique(col_ids)
        owner = tf.stack([col_user, col_slot], axis=1)
        has_item = tf.scatter_nd(tf.boolean_mask(owner, col_valid),
                                 tf.ones([tf.reduce_sum(tf.cast(col_valid, tf.int32))], tf.int32),
                                 [b, tf.size(unique_ids)]) > 0
        false_negative = tf.gather(tf.gather(has_item, row_user), col_slot, axis=1)  # [BH, BT]
        negative = tf.logical_and(tf.logical_and(~same_user, col_valid[None, :]), ~false_negative)
        neg_lse = tf.reduce_logsumexp(tf.where(negative, scores, _MIN), axis=1)  # [BH]
        positive = tf.logical_and(tf.logical_and(same_user, col_valid[None, :]), row_valid[:, None])
        if pair_mask is not None:
            # [B, H, T] -> the [BH, BT] block diagonal: row (b, h), column (b, t).
            own = tf.reshape(tf.cast(pair_mask, tf.bool), [b * h, t])
            positive = tf.logical_and(positive, tf.tile(own, [1, b]))
        pair_loss = tf.math.softplus(neg_lse[:, None] - scores)
        weight = tf.cast(positive, scores.dtype)
        loss = tf.reduce_sum(pair_loss * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
        for metric in self._loss_metrics:
            metric.update_state(loss)
        return loss
