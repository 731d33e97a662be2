"""Popularity: every user gets the catalogue ordered by training interaction count."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd


class PopularityBaseline:
    """Scores items by how often they occur in the training interactions.

    Items absent from training (cold items) count 0. With `break_ties` (the
    default) equal counts are ordered by `tie_order` (default: the catalogue
    order of `item_ids`), giving one strict order; the score is then the
    item's place in it (N for the most popular item down to 1), exact in
    float32 up to 2^24 items. LEARN.md's reference numbers ("ties broken by
    file row order") need this: pass the items table's row order as
    `tie_order`. With `break_ties=False` the score is the raw count and the
    evaluator's tie rule decides.
    """

    def __init__(self, item_ids: np.ndarray, counts: np.ndarray, tie_order: Optional[Sequence[str]] = None,
                 break_ties: bool = True):
        """Builds the fixed score vector.

        Args:
          item_ids: [N] the catalogue (score columns).
          counts: [N] training interaction count of each item.
          tie_order: item ids, earlier = preferred among equal counts; must
            contain every catalogue item. Default: the order of `item_ids`.
          break_ties: order equal counts by `tie_order` (True) or leave them tied.

        Raises:
          ValueError: on mismatched lengths or a tie_order missing catalogue items.
        """
        self.item_ids = np.asarray(item_ids).astype(str)
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.shape != self.item_ids.shape:
            raise ValueError(f"counts {self.counts.shape} must align with item_ids {self.item_ids.shape}")
        if not break_ties:
            self.scores = self.counts.astype(np.float32)
            return
        if tie_order is None:
            priority = np.arange(len(self.item_ids))
        else:
            order = pd.Index(np.asarray(tie_order).astype(str)).drop_duplicates()
            priority = order.get_indexer(self.item_ids)
            if (priority < 0).any():
                missing = self.item_ids[priority < 0][0]
                raise ValueError(f"tie_order lacks catalogue item {missing!r}")
        # Sort by count descending, then priority ascending; place 0 = most popular.
        ranking = np.lexsort((priority, -self.counts))
        self.scores = np.empty(len(self.item_ids), dtype=np.float32)
        self.scores[ranking] = np.arange(len(self.item_ids), 0, -1, dtype=np.float32)

    @classmethod
    def from_interactions(cls, item_ids: np.ndarray, train_item_ids: np.ndarray,
                          tie_order: Optional[Sequence[str]] = None, break_ties: bool = True) -> "PopularityBaseline":
        """Counts training interactions per catalogue item.

        Args:
          item_ids: [N] the catalogue.
          train_item_ids: [M] the item id of every training interaction (e.g.
            `splits.train["item_id"]`).
          tie_order: see the constructor.
          break_ties: see the constructor.

        Returns:
          The baseline.

        Raises:
          ValueError: a training item is not in the catalogue.
        """
        index = pd.Index(np.asarray(item_ids).astype(str))
        cols = index.get_indexer(np.asarray(train_item_ids).astype(str))
        if (cols < 0).any():
            bad = np.asarray(train_item_ids).astype(str)[cols < 0][0]
            raise ValueError(f"training item {bad!r} is not in the catalogue")
        counts = np.bincount(cols, minlength=len(index))
        return cls(index.to_numpy(), counts, tie_order, break_ties)

    def score(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """The same popularity scores for every history.

        Args:
          histories: B item-id lists (ignored except for their number).

        Returns:
          [B, N] float32 scores in catalogue order.
        """
        return np.tile(self.scores, (len(histories), 1))
