"""The towers as layers of a ranking model: frozen and fine-tuned."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.models.ranking import TowerRanker
from learn_tf.models.towers import LearnTowers

N, D = 30, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 3, size=N)
    content = np.eye(D)[topic] + 0.2 * rng.normal(size=(N, D))
    history = np.zeros((256, 6), np.int32)
    item = rng.integers(1, N + 1, size=256).astype(np.int32)
    label = np.zeros(256, np.float32)
    for r in range(256):
        t = rng.integers(0, 3)
        members = np.flatnonzero(topic == t) + 1
        history[r, :4] = rng.choice(members, size=4)
        label[r] = float(topic[item[r] - 1] == t)  # clicks are on-topic items
    return content.astype(np.float32), {"history": history, "item": item}, label


def _towers(content):
    tf.keras.utils.set_random_seed(0)
    return LearnTowers(N, D, d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=8, dropout=0.0, max_len=6,
                       content_table=content)


@pytest.mark.parametrize("fine_tune", [False, True])
def test_ranker_learns_clicks_with_frozen_or_tuned_towers(fine_tune):
    content, x, y = _data()
    towers = _towers(content)
    model = TowerRanker(towers, fine_tune=fine_tune)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True), metrics=[tf.keras.metrics.AUC(
                      from_logits=True, name="auc")])
    model(x)
    before = [w.numpy().copy() for w in towers.trainable_weights] or [w.numpy().copy() for w in towers.weights]
    hist = model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    after = [w.numpy() for w in (towers.trainable_weights or towers.weights)]
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["auc"][-1] > 0.75
    changed = any(not np.allclose(a, b) for a, b in zip(before, after))
    assert changed == fine_tune
