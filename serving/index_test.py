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
