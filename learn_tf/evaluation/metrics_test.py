"""Ranking metrics against hand-computed ranks, masking, ties and batching."""

import math

import numpy as np
import pytest

from learn_tf.evaluation.metrics import case_metrics, rank_counts, ranking_metrics, target_ranks

# Row 0: target 0.5 has 0.9 and 0.7 above it -> rank 3.
# Row 1: target 0.2 has 0.8 above and one other 0.2 -> rank 2 or 3.
# Row 2: target 0.4 is the top score -> rank 1.
SCORES = np.array([
    [0.1, 0.9, 0.5, 0.3, 0.7],
    [0.2, 0.2, 0.8, 0.1, 0.0],
    [0.0, 0.1, 0.2, 0.3, 0.4],
])
TARGETS = np.array([2, 0, 4])


def test_rank_counts_by_hand():
    g, t = rank_counts(SCORES, TARGETS)
    assert g.tolist() == [2, 1, 0]
    assert t.tolist() == [0, 1, 0]
    assert target_ranks(g, t, "optimistic").tolist() == [3, 2, 1]
    assert target_ranks(g, t, "pessimistic").tolist() == [3, 3, 1]
    assert target_ranks(g, t, "expected").tolist() == [3, 2.5, 1]


def test_metrics_by_hand_pessimistic_and_optimistic():
    g, t = rank_counts(SCORES, TARGETS)
    pes = case_metrics(g, t, ks=(1, 2, 3), ties="pessimistic")  # ranks 3, 3, 1
    assert pes["recall@1"].tolist() == [0, 0, 1]
    assert pes["recall@2"].tolist() == [0, 0, 1]
    assert pes["recall@3"].tolist() == [1, 1, 1]
    np.testing.assert_allclose(pes["ndcg@3"], [0.5, 0.5, 1.0])  # 1/log2(3+1) = 0.5
    np.testing.assert_allclose(pes["ndcg@2"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(pes["mrr"], [1 / 3, 1 / 3, 1.0])
    opt = case_metrics(g, t, ks=(2,), ties="optimistic")  # ranks 3, 2, 1
    assert opt["recall@2"].tolist() == [0, 1, 1]
    np.testing.assert_allclose(opt["ndcg@2"], [0.0, 1 / math.log2(3), 1.0])
    np.testing.assert_allclose(opt["mrr"], [1 / 3, 1 / 2, 1.0])


def test_expected_rule_averages_over_tie_orders():
    g, t = rank_counts(SCORES, TARGETS)
    exp = case_metrics(g, t, ks=(2, 3), ties="expected")
    # Row 1 is rank 2 or rank 3 with probability 1/2 each.
    assert exp["recall@2"][1] == 0.5
    assert exp["recall@3"][1] == 1.0
    np.testing.assert_allclose(exp["ndcg@2"][1], 0.5 / math.log2(3))
    np.testing.assert_allclose(exp["ndcg@3"][1], 0.5 / math.log2(3) + 0.5 / math.log2(4))
    np.testing.assert_allclose(exp["mrr"][1], (1 / 2 + 1 / 3) / 2)
    np.testing.assert_allclose(exp["mrr"][[0, 2]], [1 / 3, 1.0])


def test_expected_rule_matches_brute_force():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 30, size=200)
    t = rng.integers(0, 30, size=200)
    ks = (1, 5, 20)
    exp = case_metrics(g, t, ks, "expected")
    for i in range(200):
        ranks = np.arange(g[i] + 1, g[i] + t[i] + 2)
        for k in ks:
            assert exp[f"recall@{k}"][i] == pytest.approx(np.mean(ranks <= k))
            assert exp[f"ndcg@{k}"][i] == pytest.approx(np.mean(np.where(ranks <= k, 1 / np.log2(ranks + 1), 0)))
        assert exp["mrr"][i] == pytest.approx(np.mean(1 / ranks))


def test_constant_scores_give_random_ranking_under_expected_rule():
    scores = np.zeros((2, 5))
    g, t = rank_counts(scores, np.array([0, 3]))
    exp = case_metrics(g, t, ks=(1, 5), ties="expected")
    np.testing.assert_allclose(exp["recall@1"], 0.2)
    np.testing.assert_allclose(exp["mrr"], sum(1 / r for r in range(1, 6)) / 5)
    np.testing.assert_allclose(exp["ndcg@5"], sum(1 / math.log2(r + 1) for r in range(1, 6)) / 5)
    # The official LEARN rule calls every constant-score case a hit.
    assert case_metrics(g, t, ks=(1,), ties="optimistic")["recall@1"].tolist() == [1.0, 1.0]


def test_masking_excludes_history_but_keeps_target():
    exclude = np.zeros_like(SCORES, dtype=bool)
    exclude[0, 1] = True  # row 0: mask the 0.9 item -> rank 2
    exclude[1, [0, 1]] = True  # row 1: the target itself is "in the history" and its tie partner too
    exclude[2, :] = True  # row 2: everything masked, the target still ranks 1
    g, t = rank_counts(SCORES, TARGETS, exclude)
    assert g.tolist() == [1, 1, 0]
    assert t.tolist() == [0, 0, 0]
    m = case_metrics(g, t, ks=(2,), ties="expected")
    assert m["recall@2"].tolist() == [1, 1, 1]
    np.testing.assert_allclose(m["mrr"], [0.5, 0.5, 1.0])


def test_masked_items_do_not_tie_with_minus_infinity_scores():
    scores = np.array([[-np.inf, -np.inf, 1.0]])
    g, t = rank_counts(scores, np.array([0]), np.array([[False, True, False]]))
    assert (g.tolist(), t.tolist()) == ([1], [0])


def test_batch_size_invariance():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(37, 50)).astype(np.float32)  # many ties
    targets = rng.integers(0, 50, size=37)
    exclude = rng.random((37, 50)) < 0.2
    ref = ranking_metrics(scores, targets, exclude, ks=(1, 10, 50), batch_size=1000)
    for bs in (1, 7, 36):
        got = ranking_metrics(scores, targets, exclude, ks=(1, 10, 50), batch_size=bs)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, abs=1e-12)


def test_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        rank_counts(np.array([[0.1, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match="target indices"):
        rank_counts(SCORES, np.array([0, 1, 5]))
    with pytest.raises(ValueError, match="shape"):
        rank_counts(SCORES, np.array([0, 1]))
    with pytest.raises(ValueError, match="ties"):
        case_metrics(np.array([0]), np.array([0]), ties="average")


def test_accepts_tf_tensors():
    import learn_tf  # noqa: F401
    import tensorflow as tf

    g, t = rank_counts(tf.constant(SCORES, tf.float32), tf.constant(TARGETS))
    assert g.tolist() == [2, 1, 0] and t.tolist() == [0, 1, 0]
