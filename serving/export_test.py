"""SavedModel exports: signatures, equality with the Keras towers, use as a layer in another model."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.models.catalogue import Catalogue
from learn_tf.models.towers import LearnTowers
from serving.export import ITEM_MODEL, USER_MODEL, export_towers

N, D = 10, 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf.keras.utils.set_random_seed(0)
    content = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    towers = LearnTowers(N, D, d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=4, dropout=0.0,
                         max_len=3, content_table=content)
    cat = Catalogue([f"m{k}" for k in range(N)])
    base = str(tmp_path_factory.mktemp("models"))
    paths = export_towers(towers, cat, 3, base)
    return towers, cat, base, paths


def test_layout_and_equality_with_keras(exported):
    towers, cat, base, paths = exported
    assert paths[USER_MODEL].endswith(f"{USER_MODEL}/1") and paths[ITEM_MODEL].endswith(f"{ITEM_MODEL}/1")
    user = tf.saved_model.load(paths[USER_MODEL]).signatures["serving_default"]
    item = tf.saved_model.load(paths[ITEM_MODEL]).signatures["serving_default"]
    hist = tf.constant([["m1", "m2", "m3", "m4"], ["m5", "", "", ""]])
    got = user(history=hist)["user_embedding"].numpy()
    # The user tower keeps the last max_len = 3 items.
    want = towers.users(tf.constant(cat.pad_histories([["m2", "m3", "m4"], ["m5"]], 3))).numpy()
    assert np.allclose(got, want, atol=1e-5)
    out = item(item_ids=tf.constant(["m0", "m9", "nope"]))
    assert out["known"].numpy().tolist() == [True, True, False]
    assert np.allclose(out["item_embedding"].numpy()[:2], towers.items(tf.constant([1, 10])).numpy(), atol=1e-5)
    # A second export is version 2; versions are never overwritten.
    again = export_towers(towers, cat, 3, base)
    assert again[USER_MODEL].endswith("/2")


def test_savedmodel_as_a_layer_in_a_ranking_model(exported):
    _, _, _, paths = exported

    class SavedTower(tf.keras.layers.Layer):
        """Wraps an exported signature as a frozen Keras layer."""

        def __init__(self, path, key, **kw):
            super().__init__(trainable=False, **kw)
            self.loaded = tf.saved_model.load(path)  # keep the variables alive
            self.fn = self.loaded.signatures["serving_default"]
            self.key = key

        def call(self, x):
            arg = "history" if self.key == "user_embedding" else "item_ids"
            return self.fn(**{arg: x})[self.key]

    history = tf.keras.Input([None], dtype=tf.string)
    item = tf.keras.Input([], dtype=tf.string)
    u = SavedTower(paths[USER_MODEL], "user_embedding")(history)
    v = SavedTower(paths[ITEM_MODEL], "item_embedding")(item)
    logit = tf.keras.layers.Dense(1)(tf.keras.layers.Concatenate()([u, v, u * v]))
    model = tf.keras.Model([history, item], logit)
    model.compile(optimizer="adam", loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    x = [tf.constant([["m1", "m2"], ["m3", ""]] * 8), tf.constant(["m1", "m7"] * 8)]
    y = tf.constant([[1.0], [0.0]] * 8)
    hist = model.fit(x, y, epochs=20, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert len(model.trainable_weights) == 2  # only the Dense head trains
