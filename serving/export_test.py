"""SavedModel exports: signatures, equality with the Keras towers, retrieval, TF Serving layout."""

import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from google.protobuf import text_format

from learn_tf.config import ServingConfig
from learn_tf.models.catalogue import Catalogue, item_matrix, tuning_queries
from learn_tf.models.towers import LearnTowers
from learn_tf.training.jobs import save_towers
from serving.export import export_serving_models, export_towers, export_trained
from serving.layout import ALL_MODELS, ITEM_MODEL, RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL, USER_MODEL, WARMUP_FILE

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


def test_export_trained_tunes_on_training_histories_and_onboards_items(exported, tmp_path):
    towers, cat, _, _ = exported
    model_dir = str(tmp_path / "towers")
    save_towers(towers, cat, model_dir, {"max_len": MAX_LEN})
    train = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["m03", "m01", "m05", "zz"],
                          "position": [1, 0, 0, 0]})
    queries = tuning_queries(cat, train, MAX_LEN)
    assert queries.dtype == np.int32 and queries.tolist() == [[2, 4, 0], [6, 0, 0]]  # u3 knows no item
    assert tuning_queries(cat, train, MAX_LEN, limit=1).shape == (1, MAX_LEN)
    rows = np.random.default_rng(3).normal(size=(2, D)).astype(np.float32)
    base = str(tmp_path / "base")
    paths = export_trained(model_dir, base, ServingConfig(max_k=20, warmup_requests=1), train,
                           extra_items=(["new0", "new1"], rows))
    assert paths["version"] == 1 and os.path.exists(os.path.join(base, "models.config"))
    out = _sig(paths[ITEM_MODEL])(item_ids=tf.constant(["new1", "m00", "nope"]))
    assert out["known"].numpy().tolist() == [True, True, False]
    want = towers.with_extra_items(rows).items(tf.constant([N + 2, 1])).numpy()
    assert np.allclose(out["item_embedding"].numpy()[:2], want, atol=1e-5)
    again = export_trained(model_dir, base, ServingConfig(max_k=20, warmup_requests=1), None)
    assert again["version"] == 2
    with pytest.raises(FileNotFoundError):
        export_trained(str(tmp_path / "none"), base, ServingConfig(), None)


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
