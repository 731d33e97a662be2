"""Popularity baseline: training counts, tie order, errors."""

import numpy as np
import pytest

from learn_tf.baselines.popularity import PopularityBaseline

CATALOGUE = np.array(["a", "b", "c", "d", "e"])
TRAIN = np.array(["c", "a", "c", "d", "c", "a", "d"])  # c:3, a:2, d:2, b:0, e:0


def _order(scores):
    return [CATALOGUE[j] for j in np.argsort(-scores, kind="stable")]


def test_ranks_by_training_count_with_catalogue_tie_order():
    pop = PopularityBaseline.from_interactions(CATALOGUE, TRAIN)
    assert pop.counts.tolist() == [2, 0, 3, 2, 0]
    scores = pop.score([["a"], [], ["b", "c"]])
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    assert (scores == scores[0]).all()  # the same for every user
    assert _order(scores[0]) == ["c", "a", "d", "b", "e"]
    assert len(set(scores[0].tolist())) == 5  # a strict order


def test_custom_tie_order_and_raw_counts():
    pop = PopularityBaseline.from_interactions(CATALOGUE, TRAIN, tie_order=["e", "d", "c", "b", "a"])
    assert _order(pop.scores) == ["c", "d", "a", "e", "b"]
    raw = PopularityBaseline.from_interactions(CATALOGUE, TRAIN, break_ties=False)
    assert raw.scores.tolist() == [2, 0, 3, 2, 0]


def test_errors():
    with pytest.raises(ValueError, match="'z' is not in the catalogue"):
        PopularityBaseline.from_interactions(CATALOGUE, np.array(["a", "z"]))
    with pytest.raises(ValueError, match="tie_order lacks catalogue item 'e'"):
        PopularityBaseline(CATALOGUE, np.zeros(5), tie_order=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="align"):
        PopularityBaseline(CATALOGUE, np.zeros(4))
