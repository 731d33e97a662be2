"""SavedModel exports: signatures, equality with the Keras towers, retrieval, ScaNN tuning, TF Serving layout."""

import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from learn_tf.config import ServingConfig
from learn_tf.models.catalogue import Catalogue, item_matrix
from learn_tf.models.towers import LearnTowers
from serving.export import (ALL_MODELS, ITEM_MODEL, RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL, USER_MODEL, WARMUP_FILE,
                            build_tuned_scann, export_serving_models, export_towers, recall_at_k, tune_scann)

N, D, MAX_LEN = 40, 6, 3


def _towers(n=N, d=D, seed=0):
    tf.keras.utils.set_random_seed(seed)
    content = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return LearnTowers(n, d, d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=4, dropout=0.0,
                       max_len=MAX_LEN, content_table=content)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    towers = _towers()
    cat = Catalogue([f"m{k:02d}" for k in range(N)])
    base = str(tmp_path_factory.mktemp("models"))
    paths = export_serving_models(towers, cat, MAX_LEN, base, serving=ServingConfig(max_k=20, warmup_requests=2))
    return towers, cat, base, paths


def _sig(path):
    return tf.saved_model.load(path).signatures["serving_default"]


def test_layout_and_user_item_equality_with_keras(exported):
    towers, cat, base, paths = exported
    assert paths["version"] == 1
    for name in ALL_MODELS:
        assert paths[name] == os.path.join(base, name, "1")
        assert os.path.exists(os.path.join(paths[name], "saved_model.pb"))
    assert not [f for n in ALL_MODELS for f in os.listdir(os.path.join(base, n)) if f.startswith(".")]
    user, item = _sig(paths[USER_MODEL]), _sig(paths[ITEM_MODEL])
    # Unknown ids ("zz") are ignored and counted; the user tower keeps the last MAX_LEN = 3 known items.
    out = user(history=tf.constant([["m01", "zz", "m02", "m03", "m04"], ["m05", "", "", "", ""]]))
    want = towers.users(tf.constant(cat.pad_histories([["m02", "m03", "m04"], ["m05"]], MAX_LEN))).numpy()
    assert np.allclose(out["user_embedding"].numpy(), want, atol=1e-5)
    assert out["known_items"].numpy().tolist() == [4, 1]
    out = item(item_ids=tf.constant(["m00", "m39", "nope"]))
    assert out["known"].numpy().tolist() == [True, True, False]
    assert np.allclose(out["item_embedding"].numpy()[:2], towers.items(tf.constant([1, 40])).numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one known item"):
        user(history=tf.constant([["nope", ""]]))


@pytest.mark.parametrize("name", [RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL])
def test_retrieval_equals_exact_in_process_topk(exported, name):
    towers, cat, _, paths = exported
    fn = _sig(paths[name])
    hist = [["m01", "m02", ""], ["m05", "m07", "m09"]]
    out = fn(history=tf.constant(hist), k=tf.constant([5, 3]), exclude_history=tf.constant([True, False]))
    ids, scores = out["item_ids"].numpy().astype(str), out["scores"].numpy()
    assert ids.shape == (2, 5)
    u = towers.users(tf.constant(cat.pad_histories([["m01", "m02"], hist[1]], MAX_LEN))).numpy()
    s = u @ item_matrix(towers, N).T
    s[0, [1, 2]] = -np.inf  # row 0 excludes its history
    for r, k in enumerate([5, 3]):
        want = [cat.item_ids[i] for i in np.argsort(-s[r], kind="stable")[:k]]
        assert ids[r, :k].tolist() == want
        assert np.allclose(scores[r, :k], np.sort(s[r])[::-1][:k], atol=1e-5)
    assert ids[1, 3:].tolist() == ["", ""] and np.all(np.isneginf(scores[1, 3:]))
    assert not {"m01", "m02"} & set(ids[0])


def test_retrieval_rejects_bad_k(exported):
    _, _, _, paths = exported
    fn = _sig(paths[RETRIEVAL_BF_MODEL])
    for k, msg in ((0, "k must be >= 1"), (21, "k must be <= max_k")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=msg):
            fn(history=tf.constant([["m01"]]), k=tf.constant([k]), exclude_history=tf.constant([True]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per history row"):
        fn(history=tf.constant([["m01"], ["m02"]]), k=tf.constant([3]), exclude_history=tf.constant([True, True]))


def test_models_config_warmup_and_versions(exported):
    from tensorflow_serving.apis import prediction_log_pb2
    from tensorflow_serving.config import model_server_config_pb2

    towers, cat, base, paths = exported
    cfg = text_format.Parse(open(os.path.join(base, "models.config")).read(),
                            model_server_config_pb2.ModelServerConfig())
    assert [c.name for c in cfg.model_config_list.config] == list(ALL_MODELS)
    assert all(c.base_path == os.path.join(base, c.name) for c in cfg.model_config_list.config)
    stock = text_format.Parse(open(os.path.join(base, "models.stock.config")).read(),
                              model_server_config_pb2.ModelServerConfig())
    assert RETRIEVAL_MODEL not in [c.name for c in stock.model_config_list.config]
    # Warmup requests replay against the model they ship with.
    fn = _sig(paths[RETRIEVAL_BF_MODEL])
    records = list(tf.data.TFRecordDataset(os.path.join(paths[RETRIEVAL_BF_MODEL], WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 2
    for rec in records:
        req = prediction_log_pb2.PredictionLog.FromString(rec).predict_log.request
        assert req.model_spec.name == RETRIEVAL_BF_MODEL
        out = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
        assert out["item_ids"].shape == (1, 10)
    # A second export is version 2 of every model; versions are never overwritten.
    again = export_towers(towers, cat, MAX_LEN, base)
    assert again[USER_MODEL].endswith("/2") and again[ITEM_MODEL].endswith("/2")
    with pytest.raises(FileExistsError):
        export_towers(towers, cat, MAX_LEN, base, version=2)


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
    x = [tf.constant([["m01", "m02"], ["m03", ""]] * 8), tf.constant(["m01", "m07"] * 8)]
    y = tf.constant([[1.0], [0.0]] * 8)
    hist = model.fit(x, y, epochs=20, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert len(model.trainable_weights) == 2  # only the Dense head trains
