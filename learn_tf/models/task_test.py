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
