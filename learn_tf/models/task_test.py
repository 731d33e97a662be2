"""The dense all-action loss, checked against tfrs.tasks.Retrieval and a brute-force loop."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from learn_tf.models.task import DenseAllActionRetrieval


def _unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_one_position_one_target_equals_tfrs_retrieval():
    rng = np.random.default_rng(0)
    q, c = _unit(rng, (6, 1, 8)), _unit(rng, (6, 1, 8))
    ids = np.array([[1], [2], [3], [2], [5], [6]])  # rows 1 and 3 share an item: a false negative
    ours = DenseAllActionRetrieval(20.0)(q, c, np.ones((6, 1), bool), np.ones((6, 1), bool), ids)
    ref = tfrs.tasks.Retrieval(temperature=1 / 20, remove_accidental_hits=True)(
        q[:, 0], c[:, 0], candidate_ids=tf.constant(ids[:, 0]))
    assert float(ours) == pytest.approx(float(ref) / 6, rel=1e-5)  # tfrs sums, we average


def _brute(q, c, qm, cm, ids, scale, log_q=None, pairs=None):
    b, h, _ = q.shape
    t = c.shape[1]
    losses = []
    for u in range(b):
        for i in range(h):
            if not qm[u, i]:
                continue
            own = {ids[u, j] for j in range(t) if cm[u, j]}
            negs = [scale * q[u, i] @ c[v, k] - (0 if log_q is None else log_q[v, k])
                    for v in range(b) if v != u for k in range(t) if cm[v, k] and ids[v, k] not in own]
            for j in range(t):
                if not cm[u, j] or (pairs is not None and not pairs[u, i, j]):
                    continue
                s = scale * q[u, i] @ c[u, j] - (0 if log_q is None else log_q[u, j])
                losses.append(-s + math.log(math.exp(s) + sum(math.exp(n) for n in negs)))
    return np.mean(losses)


@pytest.mark.parametrize("with_log_q", [False, True])
def test_many_positions_and_targets_match_brute_force(with_log_q):
    rng = np.random.default_rng(1)
    b, h, t = 4, 3, 5
    q, c = _unit(rng, (b, h, 8)), _unit(rng, (b, t, 8))
    qm = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)
    cm = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], bool)
    ids = np.array([[1, 2, 3, 4, 5], [2, 9, 0, 0, 0], [7, 8, 1, 6, 0], [3, 0, 0, 0, 0]])
    log_q = rng.normal(size=(b, t)).astype(np.float32) if with_log_q else None
    ours = DenseAllActionRetrieval(5.0)(q, c, qm, cm, ids, log_q)
    assert float(ours) == pytest.approx(_brute(q, c, qm, cm, ids, 5.0, log_q), rel=1e-4)


def test_pair_mask_selects_positives_and_never_makes_own_targets_negatives():
    rng = np.random.default_rng(2)
    b, h, t = 3, 2, 4
    q, c = _unit(rng, (b, h, 8)), _unit(rng, (b, t, 8))
    qm, cm = np.ones((b, h), bool), np.ones((b, t), bool)
    ids = np.array([[1, 2, 3, 4], [5, 6, 1, 7], [8, 9, 10, 11]])
    pairs = rng.random((b, h, t)) < 0.5
    pairs[:, :, 0] = True
    ours = DenseAllActionRetrieval(4.0)(q, c, qm, cm, ids, None, pairs)
    assert float(ours) == pytest.approx(_brute(q, c, qm, cm, ids, 4.0, None, pairs), rel=1e-4)


def test_identical_vectors_give_the_uniform_loss():
    b, t = 8, 3
    v = np.ones((b, 1, 4), np.float32) / 2
    c = np.ones((b, t, 4), np.float32) / 2
    ids = np.arange(1, b * t + 1).reshape(b, t)
    loss = DenseAllActionRetrieval(20.0)(v, c, np.ones((b, 1), bool), np.ones((b, t), bool), ids)
    assert float(loss) == pytest.approx(math.log(1 + (b - 1) * t), rel=1e-5)


# --- the next-item task: each negatives mode against a brute-force numpy loop ---

from learn_tf.models.task import NextItemRetrieval, resolve_negatives  # noqa: E402


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_full_softmax_matches_brute_force_with_mask_and_chunks():
    rng = np.random.default_rng(3)
    n, d, q_rows, scale = 11, 6, 7, 3.0
    items = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(q_rows, d)).astype(np.float32)
    labels = np.array([1, 3, 3, 5, 7, 9, 1])  # repeated labels, including the user's own items
    mask = np.ones(n, bool)
    mask[[5, 10]] = False  # items never trained: not scored (index 6 and 11)
    expected = np.mean([_lse([scale * queries[r] @ items[j] for j in range(n) if mask[j]])
                        - scale * queries[r] @ items[labels[r] - 1] for r in range(q_rows)])
    for chunk in (100, 4):  # one block, and three chunks of the catalogue
        task = NextItemRetrieval("full", scale, chunk_size=chunk)
        loss = task(queries, items[labels - 1], labels, items, np.arange(1, n + 1), candidate_mask=mask)
        assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["sampled", "in_batch"])
def test_sampled_and_in_batch_match_brute_force(mode):
    rng = np.random.default_rng(4)
    d, q_rows, m, scale = 5, 6, 4, 2.0
    queries = rng.normal(size=(q_rows, d)).astype(np.float32)
    pos = rng.normal(size=(q_rows, d)).astype(np.float32)
    pos_ids = np.array([4, 2, 4, 7, 8, 2])  # rows 0/2 and 1/5 share a positive: accidental hits
    neg = rng.normal(size=(m, d)).astype(np.float32)
    neg_ids = np.array([3, 4, 9, 7])  # 4 and 7 are accidental hits for rows 0, 2 and 3
    pos_lq = rng.normal(size=q_rows).astype(np.float32)
    neg_lq = rng.normal(size=m).astype(np.float32)
    cols = [(pos[j], pos_ids[j], pos_lq[j], j) for j in range(q_rows)]
    if mode == "sampled":
        cols += [(neg[k], neg_ids[k], neg_lq[k], None) for k in range(m)]
    losses = []
    for r in range(q_rows):
        own = scale * queries[r] @ pos[r] - pos_lq[r]
        others = [scale * queries[r] @ e - lq for e, i, lq, j in cols if j != r and i != pos_ids[r]]
        losses.append(_lse([own] + others) - own)
    loss = NextItemRetrieval(mode, scale)(queries, pos, pos_ids, neg, neg_ids, pos_lq, neg_lq)
    assert float(loss) == pytest.approx(np.mean(losses), rel=1e-5)


def test_resolve_negatives_by_catalogue_size():
    assert resolve_negatives("auto", 1682, 50000) == "full"
    assert resolve_negatives("auto", 60000, 50000) == "sampled"
    assert resolve_negatives("in_batch", 10, 50000) == "in_batch"
    with pytest.raises(ValueError, match="negatives"):
        resolve_negatives("weird", 10, 50000)
