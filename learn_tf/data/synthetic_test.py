"""Tests for the synthetic catalogue generator."""

import numpy as np
import pandas as pd
import pytest

from learn_tf.config import SyntheticConfig
from learn_tf.data.synthetic import generate_synthetic

CFG = SyntheticConfig(num_items=500, num_users=300, num_topics=10, mean_sequence_length=15,
                      min_sequence_length=3, topic_concentration=0.1, seed=4)


def test_sizes_ids_and_ordering():
    items, inter = generate_synthetic(CFG)
    assert len(items) == 500 and items["item_id"].is_unique
    assert inter["user_id"].nunique() == 300
    assert set(inter["item_id"]) <= set(items["item_id"])
    lengths = inter.groupby("user_id").size()
    assert lengths.min() >= 3
    assert 10 < lengths.mean() < 20
    assert inter.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert (inter["row"].to_numpy() == np.arange(len(inter))).all()


def test_deterministic_per_seed():
    a, b = generate_synthetic(CFG), generate_synthetic(CFG)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    c = generate_synthetic(SyntheticConfig(**{**CFG.__dict__, "seed": 5}))
    assert not a[1]["item_id"].equals(c[1]["item_id"])


def test_text_carries_the_topic():
    items, _ = generate_synthetic(CFG)
    words = items["title"].str.split().apply(lambda w: set(w[:3]))
    same, diff = [], []
    rng = np.random.default_rng(0)
    for _ in range(2000):
        i, j = rng.integers(0, len(items), size=2)
        if i == j:
            continue
        overlap = len(words[i] & words[j])
        (same if items["topic"][i] == items["topic"][j] else diff).append(overlap)
    # Words are drawn from the item's topic vocabulary: shared words only within a topic.
    assert np.mean(same) > 0.2
    assert np.mean(diff) == 0.0


def test_sequences_follow_topic_preferences():
    items, inter = generate_synthetic(CFG)
    topic = inter["item_id"].map(items.set_index("item_id")["topic"])
    # Share of each user's interactions in their top topic, vs. uniform 1/num_topics.
    top_share = topic.groupby(inter["user_id"]).agg(lambda t: t.value_counts().iloc[0] / len(t))
    assert top_share.mean() > 0.5


def test_rejects_empty_sizes():
    with pytest.raises(ValueError, match="num_items"):
        generate_synthetic(SyntheticConfig(num_items=0))
