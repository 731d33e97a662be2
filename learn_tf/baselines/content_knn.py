"""Content kNN: cosine between the mean of the history's content embeddings and every item."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class ContentKNNBaseline:
    """A training-free content model: no collaborative signal, only item text embeddings.

    The user vector is the mean of the content embeddings of the history items
    (history ids not in the catalogue are skipped); the score of an item is the
    cosine between that vector and the item's embedding. A history with no
    known item gets `fallback_scores` when given (e.g. popularity scores),
    otherwise all zeros: every item ties, which the evaluator's default
    "expected" tie rule scores as a random ranking (never as a hit).
    """

    def __init__(self, item_ids: np.ndarray, embeddings: np.ndarray, embedding_ids: Optional[np.ndarray] = None,
                 fallback_scores: Optional[np.ndarray] = None):
        """Stores unit-normalised item embeddings in catalogue order.

        Args:
          item_ids: [N] the catalogue (score columns).
          embeddings: [N, D] content embeddings aligned to `item_ids`, or to
            `embedding_ids` when given.
          embedding_ids: optional [M] ids of the embedding rows (e.g. from
            `load_embeddings`); rows are reordered to `item_ids`.
          fallback_scores: optional [N] scores for histories with no known item.

        Raises:
          ValueError: misaligned shapes, or a catalogue item without an embedding.
        """
        self.item_ids = np.asarray(item_ids).astype(str)
        emb = np.asarray(embeddings, dtype=np.float32)
        if embedding_ids is not None:
            cols = pd.Index(np.asarray(embedding_ids).astype(str)).get_indexer(self.item_ids)
            if (cols < 0).any():
                raise ValueError(f"no embedding for catalogue item {self.item_ids[cols < 0][0]!r} "
                                 f"({int((cols < 0).sum()):,} missing)")
            emb = emb[cols]
        if emb.ndim != 2 or emb.shape[0] != len(self.item_ids):
            raise ValueError(f"embeddings {emb.shape} must be [N={len(self.item_ids)}, D]")
        self.embeddings = _unit_rows(emb)
        self._index = pd.Index(self.item_ids)
        self.fallback_scores = None
        if fallback_scores is not None:
            self.fallback_scores = np.asarray(fallback_scores, dtype=np.float32)
            if self.fallback_scores.shape != (len(self.item_ids),):
                raise ValueError(f"fallback_scores {self.fallback_scores.shape} must be [{len(self.item_ids)}]")

    def user_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Mean content embedding of each history's known items.

        Args:
          histories: B item-id lists.

        Returns:
          [B, D] float32; a zero row for a history with no known item.
        """
        return self._pool(histories)[0]

    def _pool(self, histories: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """([B, D] mean embeddings, [B] bool: the history has a known item)."""
        out = np.zeros((len(histories), self.embeddings.shape[1]), dtype=np.float32)
        known = np.zeros(len(histories), dtype=bool)
        for b, h in enumerate(histories):
            cols = self._index.get_indexer([str(v) for v in h]) if len(h) else np.array([], dtype=np.int64)
            cols = cols[cols >= 0]
            if cols.size:
                out[b] = self.embeddings[cols].mean(axis=0)
                known[b] = True
        return out, known

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Cosine of each user vector with every item's content embedding.

        Args:
          histories: B item-id lists, oldest first.

        Returns:
          [B, N] float32 scores in catalogue order.
        """
        users, known = self._pool(histories)
        scores = _unit_rows(users) @ self.embeddings.T
        if self.fallback_scores is not None and not known.all():
            scores[~known] = self.fallback_scores
        return scores
