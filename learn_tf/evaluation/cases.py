"""Every item a user saw before an evaluation target, for the masked protocol.

`Splits.eval_cases.history` is capped at `history_max_len`, but the masked
(RecBole/HLLM-style) protocol excludes *every* earlier item of the user, however
old. `add_earlier_items` rebuilds that list from the canonical interactions,
ordered exactly as `make_splits` orders them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from learn_tf.data.splits import order_interactions

EARLIER_ITEMS = "earlier_items"

# Position of the target counted from the end of the user's sequence.
_FROM_END = {"test": 1, "validation": 2}


def add_earlier_items(cases: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """Adds an `earlier_items` column: the user's items before the target, oldest first.

    Args:
      cases: evaluation cases from `make_splits` (columns split, user_id, target_item_id).
      interactions: the canonical interactions table the split was made from
        (user_id, item_id, timestamp, row).

    Returns:
      A copy of `cases` with `earlier_items` (list of item ids, uncapped); the
      evaluator's masked protocol uses it instead of `history` when present.

    Raises:
      ValueError: a case's split is unknown, or its target is not at the
        expected place in the user's sequence (the interactions are not the
        ones the split was made from).
    """
    ordered = order_interactions(interactions)
    sequences = ordered.groupby("user_id", sort=False)["item_id"].agg(list)
    earlier = []
    for split, user, target in zip(cases["split"], cases["user_id"], cases["target_item_id"]):
        if split not in _FROM_END:
            raise ValueError(f"case of user {user!r}: unknown split {split!r} (expected test or validation)")
        seq = sequences.get(user, [])
        pos = len(seq) - _FROM_END[split]
        if pos < 0 or seq[pos] != target:
            raise ValueError(
                f"case of user {user!r} ({split}): target {target!r} is not item {_FROM_END[split]} from the end "
                "of the user's sequence; pass the interactions the split was made from"
            )
        earlier.append(list(seq[:pos]))
    out = cases.copy()
    out[EARLIER_ITEMS] = pd.Series(earlier, index=cases.index, dtype=object) if len(cases) else np.array([], object)
    return out
