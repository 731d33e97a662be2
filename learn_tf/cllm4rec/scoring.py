"""CLLM4Rec as a scorer of the shared evaluator: histories -> scores over the whole catalogue.

The prompt is the fine-tuning prompt over the whole given history:
`user_u has interacted with <items>, user_u will interact with`; the scores
are the item logits of its last hidden state (the LLM runs per request).
The user token needs the user: `for_cases` keys each evaluation case's
history to its user; a history of an unknown user is scored without user
tokens. Items the model never trained on (cold items, ids outside its
catalogue) keep whatever their table row scores: CLLM4Rec cannot score them
meaningfully, which the cold segment shows.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.cllm4rec.documents import DocumentBuilder, bucket_batches, prompt_batch
from learn_tf.cllm4rec.model import CLLM4Rec


class PromptScorer:
    """Scores recommendation prompts in length-bucketed batches through one traced function.

    Args:
      model: the trained model.
      batch_size: prompts per batch.
      max_tokens: padded tokens per batch.
    """

    def __init__(self, model: CLLM4Rec, batch_size: int = 32, max_tokens: int = 8192) -> None:
        self.model, self.batch_size, self.max_tokens = model, batch_size, max_tokens
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)]
        self._scores = tf.function(model.scores, input_signature=spec)

    def __call__(self, prompts: Sequence[np.ndarray]) -> np.ndarray:
        """[B] token-id prompts -> [B, I] float32 item logits, rows in input order."""
        out = np.zeros((len(prompts), self.model.vocab.num_items), np.float32)
        if not prompts:
            return out
        rng = np.random.default_rng(0)
        for idx in bucket_batches([len(p) for p in prompts], self.batch_size, self.max_tokens, rng):
            b = prompt_batch([prompts[i] for i in idx], self.model.vocab)
            out[idx] = self._scores(b.tokens, b.padding_mask).numpy()
        return out


class CLLM4RecScorer:
    """Item-id histories -> [B, N] scores in catalogue order (the evaluator's `ScoreFn`).

    Args:
      model: the trained model; its item index j is catalogue item `item_ids[j]`.
      builder: builds the prompts.
      item_ids: [I] the model's catalogue.
      user_ids: [U] the model's users (user index u is `user_ids[u]`).
      batch_size: prompts scored at once.
    """

    def __init__(self, model: CLLM4Rec, builder: DocumentBuilder, item_ids: Sequence[str], user_ids: Sequence[str],
                 batch_size: int = 32) -> None:
        self.model, self.builder = model, builder
        self.item_index = {str(i): k for k, i in enumerate(item_ids)}
        self.user_index = {str(u): k for k, u in enumerate(user_ids)}
        self.prompts = PromptScorer(model, batch_size)
        self.users_by_history: dict[tuple[str, ...], str] = {}

    def prompt(self, history: Sequence[str], user_id: Optional[str] = None) -> np.ndarray:
        """The recommendation prompt of one history (unknown item ids dropped)."""
        items = [self.item_index[str(i)] for i in history if str(i) in self.item_index]
        user = self.user_index.get(str(user_id)) if user_id is not None else None
        return self.builder.recommendation_prompt(user, items)

    def score_users(self, histories: Sequence[Sequence[str]], user_ids: Sequence[Optional[str]]) -> np.ndarray:
        """[B] histories of known (or None) users -> [B, I] item logits."""
        return self.prompts([self.prompt(h, u) for h, u in zip(histories, user_ids)])

    def for_cases(self, cases: pd.DataFrame) -> "CLLM4RecScorer":
        """Remembers which user each case history belongs to (the evaluator passes histories only)."""
        for user, history in zip(cases["user_id"], cases["history"]):
            self.users_by_history.setdefault(tuple(map(str, history)), str(user))
        return self

    def score(self, histories: list[list[str]]) -> np.ndarray:
        """The evaluator's score_fn: [B] histories (oldest first) -> [B, I] scores."""
        users = [self.users_by_history.get(tuple(map(str, h))) for h in histories]
        return self.score_users(histories, users)

