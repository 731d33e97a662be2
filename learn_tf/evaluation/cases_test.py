"""Rebuilding every earlier item of a case, beyond the capped history."""

import numpy as np
import pandas as pd
import pytest

from learn_tf.config import SplitConfig
from learn_tf.data.splits import make_splits
from learn_tf.evaluation.cases import add_earlier_items


def _inter(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["rating"] = np.nan
    df["row"] = np.arange(len(df), dtype=np.int64)
    return df


def test_earlier_items_are_uncapped_and_follow_split_order():
    # u's last two share a timestamp: row order decides (f is validation, g test).
    inter = _inter([("u", x, t) for x, t in zip("abcdefg", (1, 2, 3, 4, 5, 9, 9))] + [("v", "a", 1), ("v", "b", 2),
                                                                                      ("v", "c", 3)])
    items = pd.DataFrame({"item_id": list("abcdefg")})
    splits = make_splits(items, inter, SplitConfig(cold_item_fraction=0.0, history_max_len=2))
    cases = add_earlier_items(splits.eval_cases, inter.sample(frac=1.0, random_state=0))
    by = cases.set_index(["split", "user_id"])
    assert list(by.loc[("test", "u"), "history"]) == ["e", "f"]
    assert by.loc[("test", "u"), "earlier_items"] == list("abcdef")
    assert by.loc[("validation", "u"), "earlier_items"] == list("abcde")
    assert by.loc[("test", "v"), "earlier_items"] == ["a", "b"]
    assert "earlier_items" not in splits.eval_cases.columns  # the input is not modified


def test_mismatched_interactions_raise():
    inter = _inter([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)])
    splits = make_splits(pd.DataFrame({"item_id": list("abc")}), inter, SplitConfig(cold_item_fraction=0.0))
    other = _inter([("u", "a", 1), ("u", "c", 2), ("u", "b", 3)])
    with pytest.raises(ValueError, match="user 'u'"):
        add_earlier_items(splits.eval_cases, other)
