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


@pytest.mark.parametrize("variant", ["a", "b", "c"])
def test_items_from_content_equals_items_for_table_rows(variant):
    towers = _learn(item_tower=variant)
    idx = np.array([1, 4, 12], np.int32)
    want = towers.items(tf.constant(idx)).numpy()
    got = towers.items_from_content(tf.constant(_content()[idx - 1])).numpy()
    assert np.allclose(got, want, atol=1e-5)
    # Graph mode, unknown batch size.
    fn = tf.function(towers.items_from_content, input_signature=[tf.TensorSpec([None, D], tf.float32)])
    assert np.allclose(fn(tf.constant(_content()[idx - 1])).numpy(), want, atol=1e-5)


def test_items_from_content_hybrid_uses_a_zero_id_vector():
    towers = _learn(item_inputs="hybrid")
    towers.users(tf.constant([[1]]))
    ids = towers.ids.get_weights()[0]
    ids[3] = 0.0  # item index 3: a cold item, its ID vector never trained
    towers.ids.set_weights([ids])
    content = tf.constant(_content()[[2, 4]])  # indices 3 (zero ID) and 5 (random ID)
    got = towers.items_from_content(content).numpy()
    want = towers.items(tf.constant([3, 5])).numpy()
    assert np.allclose(got[0], want[0], atol=1e-5)
    assert not np.allclose(got[1], want[1], atol=1e-4)


def test_items_from_content_rejects_another_width():
    towers = _learn()
    with pytest.raises(ValueError, match=r"width 7 but the towers were trained on content_dim 6.*learn embed"):
        towers.items_from_content(tf.zeros([2, 7]))
    with pytest.raises(ValueError, match=r"content_table rows have width 7 .* content_dim 6.*learn embed"):
        LearnTowers(N, D, content_table=np.zeros((N, 7), np.float32))
    with pytest.raises(ValueError, match=r"11 rows for a catalogue of 12 items"):
        LearnTowers(N, D, content_table=np.zeros((N - 1, D), np.float32))


@pytest.mark.parametrize("variant,inputs", [("a", "content"), ("b", "content"), ("c", "content"), ("a", "hybrid")])
def test_with_extra_items_keeps_old_outputs_and_encodes_new_items(variant, inputs):
    towers = _learn(item_tower=variant, item_inputs=inputs)
    hist = tf.constant([[1, 2, 3, 0, 0], [12, 5, 0, 0, 0]])
    old_users, old_items = towers.users(hist).numpy(), towers.items(tf.range(1, N + 1)).numpy()
    rng = np.random.default_rng(5)
    new = rng.normal(size=(3, D)).astype(np.float32)
    grown = towers.with_extra_items(new)
    assert grown.num_items == N + 3 and grown is not towers and towers.num_items == N
    assert np.allclose(grown.users(hist).numpy(), old_users, atol=1e-6)
    assert np.allclose(grown.items(tf.range(1, N + 1)).numpy(), old_items, atol=1e-6)
    new_items = grown.items(tf.constant([N + 1, N + 2, N + 3])).numpy()
    assert np.allclose(new_items, grown.items_from_content(tf.constant(new)).numpy(), atol=1e-5)
    assert np.allclose(new_items, towers.items_from_content(tf.constant(new)).numpy(), atol=1e-5)
    # A user whose history includes a new item is scored too.
    assert grown.users(tf.constant([[1, N + 2]])).shape == (1, towers.out_dim)
    assert grown.get_config() == {**towers.get_config(), "num_items": N + 3}
    with pytest.raises(ValueError, match="width 5 but the towers were trained on content_dim 6"):
        towers.with_extra_items(np.zeros((2, 5)))
    # The catalogue grows the same way; scoring works on the grown pair.
    cat = Catalogue([f"i{k}" for k in range(N)]).extended(["n0", "n1", "n2"])
    assert cat.indices(["n1"]).tolist() == [N + 2]
    scores = TowerScorer(grown, cat, max_len=5).score([["i1", "n0"]])
    assert scores.shape == (1, N + 3)
    with pytest.raises(ValueError, match="'i3' appears more than once"):
        cat.extended(["i3"])


def test_dot_similarity_keeps_raw_vectors_and_sasrec_ties_item_embeddings():
    towers = _learn(similarity="dot", initializer_range=0.02)
    items = towers.items(tf.constant([1, 2, 3])).numpy()
    assert not np.allclose(np.linalg.norm(items, axis=1), 1, atol=1e-3)
    assert LearnTowers.from_config(towers.get_config()).get_config() == towers.get_config()
    tf.keras.utils.set_random_seed(0)
    s = SASRecTowers(N, d_model=8, num_layers=1, num_heads=2, ff_dim=16, max_len=5, similarity="dot",
                     initializer_range=0.02)
    s.users(tf.constant([[1, 2]]))
    table = s.ids.embeddings.numpy()
    assert np.allclose(s.items(tf.constant([3, 4])).numpy(), table[[3, 4]])  # output = input table (tied)
    assert table[1:].std() == pytest.approx(0.02, rel=0.25)  # N(0, 0.02)
    with pytest.raises(ValueError, match="similarity"):
        _learn(similarity="euclid")


def test_zero_ids_makes_untrained_items_fall_back_to_content():
    towers = _learn(item_inputs="hybrid")
    towers.zero_ids(np.array([3, 7]))
    assert not towers.ids.embeddings.numpy()[[3, 7]].any() and towers.ids.embeddings.numpy()[1].any()
    content = towers.content(tf.constant([3, 7]))
    assert np.allclose(towers.items(tf.constant([3, 7])).numpy(), towers.items_from_content(content).numpy(),
                       atol=1e-5)


def test_item_tower_e_scores_users_against_tied_input_embeddings():
    towers = _learn(item_tower="e", item_inputs="hybrid", similarity="dot", input_norm=False, initializer_range=0.02)
    idx = tf.constant([1, 4, 9])
    items = towers.items(idx).numpy()
    assert items.shape == (3, 8) and towers.out_dim == 8
    # The item vector is the user tower's input embedding of that item (adaptor(content) + ID vector).
    assert np.allclose(items, towers._inputs(idx[:, None], False).numpy()[:, 0], atol=1e-6)
    assert np.allclose(towers.targets(idx[None]).numpy()[0], items, atol=1e-6)
    assert towers.users(tf.constant([[1, 2, 0]])).shape == (1, 8)
    towers.zero_ids(np.array([4]))
    content = towers.content(tf.constant([4]))
    assert np.allclose(towers.items(tf.constant([4])).numpy(), towers.items_from_content(content).numpy(), atol=1e-6)
    grown = towers.with_extra_items(_content(1)[:2])
    assert np.allclose(grown.items(idx).numpy()[[0, 2]], items[[0, 2]], atol=1e-5)
    assert LearnTowers.from_config(towers.get_config()).get_config() == towers.get_config()


def test_fit_cold_ids_gives_untrained_items_the_ridge_map_of_their_content():
    towers = _learn(item_tower="e", item_inputs="hybrid", similarity="dot", input_norm=False)
    towers.users(tf.ones([1, 1], tf.int32))
    # Trained items' ID vectors follow a linear map of content: ridge with a tiny l2 recovers it.
    w_true = np.random.default_rng(3).normal(size=(D, 8)).astype(np.float32)
    ids = towers.ids.get_weights()[0]
    ids[1:] = _content() @ w_true
    ids[[5, 9]] = 0.0  # untrained: zero as the trainer leaves them
    towers.ids.set_weights([ids])
    seen = np.ones(N, bool)
    seen[[4, 8]] = False  # items 5 and 9
    towers.fit_cold_ids(seen, 1e-6)
    got = towers.ids.get_weights()[0]
    assert np.allclose(got[[5, 9]], _content()[[4, 8]] @ w_true, atol=1e-3)
    assert np.array_equal(got[1:5], ids[1:5])  # trained items untouched
    # An untrained item scores as the same content encoded from outside (items_from_content) ...
    cold = tf.constant([5, 9])
    assert np.allclose(towers.items(cold).numpy(), towers.items_from_content(towers.content(cold)).numpy(), atol=1e-5)
    # ... and items added later get the same ID vector from their content.
    grown = towers.with_extra_items(_content()[[4]])
    assert np.allclose(grown.items(tf.constant([N + 1])).numpy(), towers.items(tf.constant([5])).numpy(), atol=1e-5)
    # l2=None goes back to zero ID vectors (content alone).
    towers.fit_cold_ids(seen, None)
    assert not towers.ids.get_weights()[0][[5, 9]].any() and not towers.cold_map.numpy().any()
    with pytest.raises(ValueError, match="hybrid"):
        _learn(item_tower="e").fit_cold_ids(seen, 1.0)
    with pytest.raises(ValueError, match="entries"):
        towers.fit_cold_ids(seen[:3], 1.0)


def test_content_fallback_predicts_dropped_and_untrained_ids_with_the_learned_map():
    towers = _learn(item_tower="e", item_inputs="hybrid", similarity="dot", input_norm=False,
                    id_fallback="content", id_dropout=1.0)
    hist = tf.constant([[1, 2, 3]])
    towers.users(hist)
    assert any("id_map" in w.name for w in towers.trainable_weights)
    w = towers.id_map.numpy()
    # Every ID dropped (id_dropout 1): the training input is adaptor(content) + content @ id_map ...
    content = towers.content(hist)
    expected = towers.adaptor(content).numpy() + content.numpy() @ w
    assert np.allclose(towers._inputs(hist, training=True).numpy(), expected, atol=1e-5)
    # ... so the map gets gradients from the loss; with the zero fallback nothing replaces the ID.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(towers.sequence(hist, training=True) ** 2)
    assert np.abs(tape.gradient(loss, towers.id_map).numpy()).sum() > 0
    zero = _learn(item_tower="e", item_inputs="hybrid", similarity="dot", input_norm=False, id_dropout=1.0)
    zero.users(hist)
    assert zero.id_map is None
    assert np.allclose(zero._inputs(hist, training=True).numpy(), zero.adaptor(zero.content(hist)).numpy(), atol=1e-6)
    # After training, untrained items get content @ id_map (fit_cold_ids with l2=None), kept for items added later.
    seen = np.ones(N, bool)
    seen[[4, 8]] = False
    towers.fit_cold_ids(seen, None)
    assert np.allclose(towers.ids.get_weights()[0][[5, 9]], _content()[[4, 8]] @ w, atol=1e-5)
    assert np.array_equal(towers.cold_map.numpy(), w)
    grown = towers.with_extra_items(_content()[[4]])
    assert np.allclose(grown.items(tf.constant([N + 1])).numpy(), towers.items(tf.constant([5])).numpy(), atol=1e-5)
    assert np.array_equal(grown.id_map.numpy(), w)
    assert LearnTowers.from_config(towers.get_config()).get_config() == towers.get_config()
    with pytest.raises(ValueError, match="id_fallback"):
        _learn(item_inputs="hybrid", id_fallback="mean")
