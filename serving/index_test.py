"""ScaNN tuning: leaves searched reach the recall target, verified on the index that is exported."""

import numpy as np
import tensorflow as tf

from learn_tf.config import ServingConfig
from serving.index import build_tuned_scann, recall_at_k, tune_scann


def test_scann_tuning_reaches_recall_target():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(30, 16))
    items = (centres[rng.integers(0, 30, 3000)] + 0.5 * rng.normal(size=(3000, 16))).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = items[rng.choice(3000, 300, replace=False)] + 0.1 * rng.normal(size=(300, 16)).astype(np.float32)
    s = tune_scann(items, queries.astype(np.float32), ServingConfig(max_k=50, scann_recall_target=0.95))
    assert s.num_leaves == 55  # ~ sqrt(3000)
    assert s.measured_recall_at_10 >= 0.95 and s.num_leaves_to_search <= s.num_leaves
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    assert recall_at_k(exact, exact) == 1.0
    # The index that is exported meets the target itself (measured here independently of the tuner).
    index, built = build_tuned_scann(items, queries.astype(np.float32), ServingConfig(max_k=50), max_k=50)
    _, got = index(tf.constant(queries.astype(np.float32)), k=10)
    measured = recall_at_k(got.numpy() - 1, exact)
    assert measured >= 0.95 and abs(measured - built.measured_recall_at_10) < 1e-9


def _reference(queries: np.ndarray, layer, k: int) -> tuple[np.ndarray, np.ndarray]:
    """tf.math.top_k over all N scores, the scores computed by the same product as the layer's (same rounding)."""
    scores = tf.linalg.matmul(tf.constant(queries), layer.items, transpose_b=True)[:, :layer.num_items]
    values, index = tf.math.top_k(scores, k=k)
    return values.numpy(), index.numpy() + 1


def test_exact_top_k_equals_top_k_over_all_scores():
    from serving.index import ExactTopK

    rng = np.random.default_rng(3)
    for n, block in [(1, None), (7, None), (1700, None), (10_000, None), (10_007, 100), (4096, 64)]:
        items = rng.normal(size=(n, 8)).astype(np.float32)
        if n > 20:
            items[n // 2:n // 2 + 5] = items[3]  # exact ties: equal scores go to the lower index
            items[-1] = items[3]
        queries = rng.normal(size=(6, 8)).astype(np.float32)
        queries[0] = -np.abs(queries[0])
        items_pos = np.abs(items)  # every score of query 0 negative: padding zeros must never win
        for table in (items, items_pos):
            layer = ExactTopK(table, block=block)
            for k in sorted({1, 2, 5, 10, 37, min(n, 200), n}):
                if k > n:
                    continue
                got_v, got_i = layer(tf.constant(queries), k=tf.constant(k))
                want_v, want_i = _reference(queries, layer, k)
                np.testing.assert_array_equal(got_i.numpy(), want_i, err_msg=f"n={n} block={block} k={k}")
                np.testing.assert_array_equal(got_v.numpy(), want_v)


def test_exact_top_k_in_a_saved_signature(tmp_path):
    from serving.index import ExactTopK

    rng = np.random.default_rng(4)
    items = rng.normal(size=(5000, 8)).astype(np.float32)
    module = tf.Module()
    module.index = ExactTopK(items)

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32), tf.TensorSpec([], tf.int32)])
    def top(q, k):
        return module.index(q, k=k)

    module.top = top
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    q = rng.normal(size=(3, 8)).astype(np.float32)
    for k in (10, 3000):  # two stages, and one top_k over all scores
        v, i = loaded.top(tf.constant(q), tf.constant(k))
        want_v, want_i = _reference(q, module.index, k)
        np.testing.assert_array_equal(i.numpy(), want_i)
        np.testing.assert_array_equal(v.numpy(), want_v)
