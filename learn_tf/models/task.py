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


NEGATIVES = ("full", "sampled", "in_batch")


def resolve_negatives(negatives: str, num_items: int, full_softmax_max_items: int) -> str:
    """"auto" -> "full" for catalogues of at most `full_softmax_max_items` items, else "sampled"."""
    if negatives == "auto":
        return "full" if num_items <= full_softmax_max_items else "sampled"
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be 'auto' or one of {NEGATIVES}, got {negatives!r}")
    return negatives


class NextItemRetrieval(tfrs.tasks.Retrieval):
    """Softmax cross-entropy of each query's next item against a set of negatives.

    Every row is one (query, positive item) pair: a position of a user's
    window and the item that followed it. The negatives are a setting:

    - "full": every catalogue item (`candidate_embeddings` is the whole item
      matrix; `candidate_mask` drops items that may not be scored, e.g. items
      never seen in training). Loss = logsumexp over candidates - positive
      score; the positive is one of the candidates. The log-sum-exp runs over
      chunks of `chunk_size` candidates.
    - "sampled": the batch's other positives plus shared sampled negatives;
      each column's score is corrected by `-log_q` (log expected count of the
      item among the columns) and columns holding the row's positive item
      (accidental hits) are dropped, except the row's own positive column.
    - "in_batch": the same with no shared negatives.

    The user's own earlier items stay negatives: only the row's positive item
    is ever masked.

    Args:
      negatives: "full", "sampled" or "in_batch".
      logit_scale: multiplies every score (cosine towers: the inverse
        temperature; dot-product towers: 1).
      chunk_size: candidates per log-sum-exp chunk ("full").
    """

    def __init__(self, negatives: str = "full", logit_scale: float = 1.0, chunk_size: int = 8192,
                 name: Optional[str] = None) -> None:
        super().__init__(temperature=None, remove_accidental_hits=False, name=name)
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        self.negatives, self.logit_scale, self.chunk_size = negatives, float(logit_scale), int(chunk_size)

    def call(self, query_embeddings: tf.Tensor, positive_embeddings: tf.Tensor, positive_ids: tf.Tensor,
             candidate_embeddings: Optional[tf.Tensor] = None, candidate_ids: Optional[tf.Tensor] = None,
             positive_log_q: Optional[tf.Tensor] = None, candidate_log_q: Optional[tf.Tensor] = None,
             candidate_mask: Optional[tf.Tensor] = None, training: bool = False) -> tf.Tensor:
        """Mean loss over the rows.

        Args:
          query_embeddings: [Q, d] user vectors (one per positive).
          positive_embeddings: [Q, d] the positive item of each row.
          positive_ids: [Q] int item index of each positive.
          candidate_embeddings: [M, d] "full": every catalogue item;
            "sampled": the shared negatives; "in_batch": unused.
          candidate_ids: [M] int item indices of the candidates.
          positive_log_q, candidate_log_q: [Q] / [M] log expected count of
            each column's item ("sampled"/"in_batch"; None: no correction).
          candidate_mask: [M] bool, candidates that may be scored ("full").

        Returns:
          Scalar loss.
        """
        q = tf.convert_to_tensor(query_embeddings, tf.float32) * self.logit_scale
        pos = tf.convert_to_tensor(positive_embeddings, tf.float32)
        pos_ids = tf.convert_to_tensor(positive_ids)
        if self.negatives == "full":
            loss = self._full(q, pos, candidate_embeddings, candidate_mask)
        else:
            loss = self._sampled(q, pos, pos_ids, candidate_embeddings, candidate_ids, positive_log_q,
                                 candidate_log_q)
        for metric in self._loss_metrics:
            metric.update_state(loss)
        return loss

    def _full(self, q: tf.Tensor, pos: tf.Tensor, cands: tf.Tensor, mask: Optional[tf.Tensor]) -> tf.Tensor:
        cands = tf.convert_to_tensor(cands, tf.float32)
        n = cands.shape[0]
        bounds = [(0, None)] if n is None or n <= self.chunk_size else [
            (s, min(s + self.chunk_size, n)) for s in range(0, n, self.chunk_size)]
        parts = []
        for start, stop in bounds:
            block = cands[start:stop]
            scores = tf.matmul(q, block, transpose_b=True)
            if mask is not None:
                scores = tf.where(tf.cast(mask[start:stop], tf.bool)[None, :], scores, _MIN)
            parts.append(tf.reduce_logsumexp(scores, axis=1))
        lse = parts[0] if len(parts) == 1 else tf.reduce_logsumexp(tf.stack(parts, axis=1), axis=1)
        positive = tf.reduce_sum(q * pos, axis=1)
        return tf.reduce_mean(lse - positive)

    def _sampled(self, q: tf.Tensor, pos: tf.Tensor, pos_ids: tf.Tensor, cands: Optional[tf.Tensor],
                 cand_ids: Optional[tf.Tensor], pos_log_q: Optional[tf.Tensor],
                 cand_log_q: Optional[tf.Tensor]) -> tf.Tensor:
        n_rows = tf.shape(q)[0]
        cols, col_ids, col_log_q = pos, tf.cast(pos_ids, tf.int32), pos_log_q
        if self.negatives == "sampled" and cands is not None:
            cols = tf.concat([pos, tf.convert_to_tensor(cands, tf.float32)], axis=0)
            col_ids = tf.concat([col_ids, tf.cast(cand_ids, tf.int32)], axis=0)
            if pos_log_q is not None:
                col_log_q = tf.concat([pos_log_q, cand_log_q], axis=0)
        scores = tf.matmul(q, cols, transpose_b=True)  # [Q, Q + M]
        if col_log_q is not None:
            scores = scores - tf.cast(col_log_q, scores.dtype)[None, :]
        own = tf.eye(n_rows, tf.shape(cols)[0], dtype=tf.bool)
        hit = tf.logical_and(tf.equal(col_ids[None, :], tf.cast(pos_ids, tf.int32)[:, None]), ~own)
        scores = tf.where(hit, _MIN, scores)
        positive = tf.linalg.diag_part(scores[:, :n_rows])
        return tf.reduce_mean(tf.reduce_logsumexp(scores, axis=1) - positive)
