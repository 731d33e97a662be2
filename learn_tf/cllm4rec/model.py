"""CLLM4Rec's heads and losses over one frozen LM and two ID-table sets.

- Collaborative LM: one causal pass over [prompt; main]; the hidden state
  before each main-text item token is scored against the collaborative item
  table only (softmax over items, the head tied to the table).
- Content LM: the same pass with the content tables; each main-text token is
  scored by the frozen vocabulary head (softmax over vocabulary tokens only).
- Mutual regularisation (official code): lambda_V x the **sum** over the
  batch's covered ID positions of ||e_own - stop_gradient(e_partner)||^2.
- Recommendation head: the last non-pad hidden state of a masked-history
  prompt x the collaborative item table -> log-softmax over the catalogue;
  multinomial loss -mean_b sum_j t_b,j log p_b,j.

All losses take padded `Batch` arrays as tensors, so each step function is
traced once (dynamic [None, None] shapes).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from learn_tf.cllm4rec.vocab import FrozenLM, IdTables, IdVocabulary


def mutual_regularisation(own: tf.Tensor, partner: tf.Tensor, reg_mask: tf.Tensor) -> tf.Tensor:
    """sum over masked positions of ||own - partner||^2; the partner carries no gradient.

    Args:
      own: [B, T, d] input embeddings of the model being trained.
      partner: [B, T, d] the other model's embeddings of the same tokens.
      reg_mask: [B, T] bool, the ID positions covered.
    """
    diff = own - tf.stop_gradient(partner)
    per_position = tf.reduce_sum(tf.square(diff), axis=-1)
    return tf.reduce_sum(tf.where(tf.cast(reg_mask, tf.bool), per_position, tf.zeros_like(per_position)))


def _shifted(hidden: tf.Tensor, tokens: tf.Tensor, label_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(hidden states that predict the scored tokens [P, d], those tokens [P]): position t predicts t+1."""
    scored = tf.cast(label_mask, tf.bool)[:, 1:]
    return tf.boolean_mask(hidden[:, :-1], scored), tf.boolean_mask(tokens[:, 1:], scored)


def last_hidden(hidden: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """[B, T, d] -> [B, d]: the hidden state at each row's last non-pad token."""
    last = tf.maximum(tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1) - 1, 0)
    return tf.gather(hidden, last, batch_dims=1)


class CLLM4Rec:
    """One frozen LM, collaborative and content ID tables, and the losses of both phases.

    Args:
      lm: the frozen backbone.
      num_users: U.
      num_items: I.
      seed: initialiser seed of the tables.
    """

    def __init__(self, lm: FrozenLM, num_users: int, num_items: int, seed: int = 0) -> None:
        self.lm = lm
        self.vocab = IdVocabulary(lm.base_size, num_users, num_items)
        self.collab = IdTables(num_users, num_items, lm.dim, seed=seed, name="collaborative")
        self.content = IdTables(num_users, num_items, lm.dim, seed=seed + 2, name="content")

    def tables(self, which: str) -> tuple[IdTables, IdTables]:
        """(own, partner) for "collaborative" or "content"."""
        if which == "collaborative":
            return self.collab, self.content
        if which == "content":
            return self.content, self.collab
        raise ValueError(f"unknown table set {which!r}")

    def collaborative_loss(self, tokens: tf.Tensor, padding_mask: tf.Tensor, label_mask: tf.Tensor,
                           reg_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean item cross-entropy over the scored main-text item tokens, regularisation sum)."""
        own = self.lm.lookup(tokens, self.collab)
        hidden = self.lm.hidden(own, padding_mask)
        h, target = _shifted(hidden, tokens, label_mask)
        logits = tf.matmul(h, self.collab.items, transpose_b=True)  # [P, I]: item tokens only
        nll = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target - self.vocab.item_offset, logits))
        reg = mutual_regularisation(own, self.lm.lookup(tokens, self.content), reg_mask)
        return nll, reg

    def content_loss(self, tokens: tf.Tensor, padding_mask: tf.Tensor, label_mask: tf.Tensor,
                     reg_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean vocabulary cross-entropy over the scored main-text tokens, regularisation sum)."""
        own = self.lm.lookup(tokens, self.content)
        hidden = self.lm.hidden(own, padding_mask)
        h, target = _shifted(hidden, tokens, label_mask)
        logits = self.lm.vocab_logits(h)  # [P, N]: vocabulary tokens only
        nll = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits))
        reg = mutual_regularisation(own, self.lm.lookup(tokens, self.collab), reg_mask)
        return nll, reg

    def item_log_probs(self, tokens: tf.Tensor, padding_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(log-softmax over the catalogue [B, I] from each prompt's last hidden state, input embeddings)."""
        own = self.lm.lookup(tokens, self.collab)
        h = last_hidden(self.lm.hidden(own, padding_mask), padding_mask)
        return tf.nn.log_softmax(tf.matmul(h, self.collab.items, transpose_b=True), axis=-1), own

    def recommendation_loss(self, tokens: tf.Tensor, padding_mask: tf.Tensor, targets: tf.Tensor,
                            reg_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(multinomial loss -mean_b sum_j t_bj log p_bj, regularisation sum toward the content tables).

        Args:
          tokens, padding_mask: [B, T] prompt batch.
          targets: [B, I] float multi-hot targets.
          reg_mask: [B, T] the prompt's ID positions.
        """
        log_p, own = self.item_log_probs(tokens, padding_mask)
        nll = -tf.reduce_mean(tf.reduce_sum(tf.cast(targets, tf.float32) * log_p, axis=-1))
        return nll, mutual_regularisation(own, self.lm.lookup(tokens, self.content), reg_mask)

    def scores(self, tokens: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
        """[B, T] recommendation prompts -> [B, I] item logits (higher = recommended)."""
        own = self.lm.lookup(tokens, self.collab)
        h = last_hidden(self.lm.hidden(own, padding_mask), padding_mask)
        return tf.matmul(h, self.collab.items, transpose_b=True)

    def trainable(self, which: Optional[str] = None) -> list:
        """The trainable weights: one table set's, or both."""
        sets = [self.collab, self.content] if which is None else [self.tables(which)[0]]
        return [w for s in sets for w in (s.users, s.items)]
