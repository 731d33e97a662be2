"""Tests for the LEARN and SASRec towers and the catalogue mapping."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.models.catalogue import Catalogue, TowerScorer, UnknownItemError
from learn_tf.models.towers import LearnTowers, SASRecTowers, last_position

N, D = 12, 6


def _content(seed=0):
    x = np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _learn(**kw):
    tf.keras.utils.set_random_seed(0)
    args = dict(d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=4, dropout=0.0, max_len=5,
                content_table=_content())
    args.update(kw)
    return LearnTowers(N, D, **args)


def test_last_position():
    assert last_position(tf.constant([[3, 4, 0], [5, 0, 0], [0, 0, 0]])).numpy().tolist() == [1, 0, 0]


@pytest.mark.parametrize("variant", ["a", "b", "c"])
def test_variants_shapes_and_norms(variant):
    towers = _learn(item_tower=variant)
    hist = tf.constant([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]])
    users = towers.users(hist).numpy()
    dim = D if variant == "c" else 4
    assert users.shape == (2, dim)
    items = towers.items(tf.constant([1, 2, 3])).numpy()
    assert items.shape == (3, dim) and np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    if variant == "c":  # the raw content embedding
        assert np.allclose(items, _content()[:3], atol=1e-6)
    # The user vector is the sequence output at the last real position.
    seq = towers.sequence(hist).numpy()
    assert np.allclose(users[0], seq[0, 2], atol=1e-6) and np.allclose(users[1], seq[1, 0], atol=1e-6)


def test_variants_a_and_b_share_weights_and_coincide_on_single_items():
    a, b = _learn(item_tower="a"), _learn(item_tower="b")
    b.set_weights(a.get_weights()) if a.get_weights() else None
    a.users(tf.constant([[1]])), b.users(tf.constant([[1]]))
    b.set_weights(a.get_weights())
    idx = tf.constant([1, 5, 9])
    assert np.allclose(a.items(idx).numpy(), b.items(idx).numpy(), atol=1e-6)
    # On a target *sequence*, (a) attends causally and (b) does not.
    tgt = tf.constant([[1, 5, 9]])
    assert np.allclose(a.targets(tgt).numpy()[0, 0], b.targets(tgt).numpy()[0, 0], atol=1e-6)
    assert not np.allclose(a.targets(tgt).numpy()[0, 2], b.targets(tgt).numpy()[0, 2], atol=1e-4)


def test_hybrid_adds_id_embeddings_and_config_roundtrip():
    towers = _learn(item_inputs="hybrid")
    towers.users(tf.constant([[1, 2]]))
    assert any("item_ids" in w.name for w in towers.trainable_weights)
    clone = LearnTowers.from_config(towers.get_config())
    clone.users(tf.constant([[1, 2]]))
    clone.content.set_table(_content())
    clone.set_weights(towers.get_weights())
    assert np.allclose(clone.users(tf.constant([[1, 2]])).numpy(), towers.users(tf.constant([[1, 2]])).numpy())
    with pytest.raises(ValueError, match="item_tower"):
        _learn(item_tower="d")


def test_sasrec_towers():
    tf.keras.utils.set_random_seed(0)
    s = SASRecTowers(N, d_model=8, num_layers=1, num_heads=2, ff_dim=16, max_len=5)
    u = s.users(tf.constant([[1, 2, 0]])).numpy()
    i = s.items(tf.constant([1, 2])).numpy()
    assert u.shape == (1, 8) and i.shape == (2, 8)
    assert SASRecTowers.from_config(s.get_config()).get_config() == s.get_config()


def test_catalogue_errors_and_scorer():
    cat = Catalogue([f"i{k}" for k in range(N)])
    assert cat.indices(["i0", "i11"]).tolist() == [1, 12]
    with pytest.raises(UnknownItemError, match="unknown item id 'zzz' \\(history row 1\\)"):
        cat.pad_histories([["i1"], ["i2", "zzz"]], 5)
    with pytest.raises(ValueError, match="history row 0 is empty"):
        cat.pad_histories([[]], 5)
    assert cat.pad_histories([["i1", "i2", "i3"]], 2).tolist() == [[3, 4]]
    with pytest.raises(ValueError, match="no content embedding"):
        cat.align(np.array(["i0"]), np.zeros((1, D)))
    scorer = TowerScorer(_learn(), cat, max_len=5)
    scores = scorer.score([["i1", "i2"], ["i3"]])
    assert scores.shape == (2, N)
    assert np.allclose(scores, scorer.user_vectors([["i1", "i2"], ["i3"]]) @ scorer.item_matrix.T)
