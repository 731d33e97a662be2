"""Tests for leave-one-out splits, tie-breaks, the cold-item holdout and segments."""

import os

import numpy as np
import pandas as pd

from learn_tf.config import SplitConfig, SyntheticConfig
from learn_tf.data.splits import (
    EVAL_FILE, ITEM_STATS_FILE, MANIFEST_FILE, TRAIN_FILE, choose_cold_items, make_splits, read_splits, write_splits,
)
from learn_tf.data.synthetic import generate_synthetic


def _items(ids):
    return pd.DataFrame({"item_id": ids})


def _inter(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    df["rating"] = np.nan
    df["row"] = np.arange(len(df), dtype=np.int64)
    return df


NO_COLD = SplitConfig(cold_item_fraction=0.0)


def test_leave_one_out_with_stable_tie_break():
    # u1's last three share a timestamp: row order decides (c, then d, then e).
    inter = _inter([
        ("u1", "a", 1), ("u1", "c", 5), ("u1", "b", 2), ("u1", "d", 5), ("u1", "e", 5),
        ("u2", "a", 9), ("u2", "b", 3), ("u2", "c", 4),
    ])
    s = make_splits(_items(list("abcde")), inter, NO_COLD)
    test, val = s.cases("test").set_index("user_id"), s.cases("validation").set_index("user_id")
    assert test.loc["u1", "target_item_id"] == "e" and val.loc["u1", "target_item_id"] == "d"
    assert list(test.loc["u1", "history"]) == ["a", "b", "c", "d"]
    assert list(val.loc["u1", "history"]) == ["a", "b", "c"]
    assert test.loc["u2", "target_item_id"] == "a" and list(test.loc["u2", "history"]) == ["b", "c"]
    assert s.train[s.train.user_id == "u1"]["item_id"].tolist() == ["a", "b", "c"]
    assert s.train[s.train.user_id == "u2"]["item_id"].tolist() == ["b"]


def test_tie_break_ignores_input_order_but_follows_row():
    rows = [("u", x, 7) for x in "pqrst"]
    inter = _inter(rows)
    shuffled = inter.sample(frac=1.0, random_state=3)
    a = make_splits(_items(list("pqrst")), inter, NO_COLD)
    b = make_splits(_items(list("pqrst")), shuffled, NO_COLD)
    assert a.cases("test")["target_item_id"].tolist() == ["t"]
    pd.testing.assert_frame_equal(a.eval_cases, b.eval_cases)
    pd.testing.assert_frame_equal(a.train, b.train)


def test_history_cap_and_short_users():
    inter = _inter([("u", f"i{k}", k) for k in range(10)] + [("v", "i0", 1), ("v", "i1", 2)])
    s = make_splits(_items([f"i{k}" for k in range(10)]), inter, SplitConfig(cold_item_fraction=0.0,
                                                                             history_max_len=3))
    t = s.cases("test").set_index("user_id")
    assert list(t.loc["u", "history"]) == ["i6", "i7", "i8"] and t.loc["u", "history_length"] == 3
    assert "v" not in t.index  # fewer than min_user_interactions: train only
    assert s.train[s.train.user_id == "v"]["item_id"].tolist() == ["i0", "i1"]
    assert s.summary["users_with_eval_cases"] == 1


def test_cold_items_never_in_training_and_form_the_cold_segment():
    items, inter = generate_synthetic(SyntheticConfig(num_items=200, num_users=150, seed=3))
    cfg = SplitConfig(cold_item_fraction=0.2, seed=11)
    s = make_splits(items, inter, cfg)
    cold = set(s.item_stats.loc[s.item_stats.cold, "item_id"])
    assert len(cold) == 40
    assert not set(s.train["item_id"]) & cold
    assert (s.item_stats.loc[s.item_stats.cold, "train_count"] == 0).all()
    cases = s.eval_cases
    assert (cases["cold_item"] == cases["target_item_id"].isin(cold)).all()
    assert cases["cold_item"].sum() > 0
    # Exactly one of cold / head / long-tail per case.
    seg = cases[["cold_item", "head_item", "long_tail_item"]].sum(axis=1)
    assert (seg == 1).all()
    n_train = s.train.groupby("user_id").size()
    assert (cases["n_train_items"] == cases["user_id"].map(n_train).fillna(0)).all()
    assert (cases["short_history_user"] == (cases["n_train_items"] <= cfg.short_history_max)).all()
    # Head items: the top 20% of warm items by training count.
    warm = s.item_stats[~s.item_stats.cold]
    assert warm["head"].sum() == int(np.ceil(0.2 * len(warm)))
    assert warm.loc[warm["head"], "train_count"].min() >= warm.loc[~warm["head"], "train_count"].max()


def test_cold_choice_is_seeded_and_order_independent():
    ids = np.array([f"x{k}" for k in range(100)])
    a = choose_cold_items(ids, 0.1, seed=5)
    assert len(a) == 10
    assert list(a) == list(choose_cold_items(ids[::-1], 0.1, seed=5))
    assert list(a) != list(choose_cold_items(ids, 0.1, seed=6))


def test_written_split_files_are_byte_identical_on_rerun(tmp_path):
    items, inter = generate_synthetic(SyntheticConfig(num_items=80, num_users=40, seed=2))
    cfg = SplitConfig()
    m1 = write_splits(make_splits(items, inter, cfg), str(tmp_path / "a"))
    m2 = write_splits(make_splits(items, inter.sample(frac=1.0, random_state=0), cfg), str(tmp_path / "b"))
    assert m1["files"] == m2["files"]
    for name in (TRAIN_FILE, EVAL_FILE, ITEM_STATS_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    back = read_splits(str(tmp_path / "a"))
    assert len(back.eval_cases) == 2 * m1["users_with_eval_cases"]
    assert not [f for f in os.listdir(tmp_path / "a") if f.endswith(".tmp")]
