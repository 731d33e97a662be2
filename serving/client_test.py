"""Tests for serving/client.py against the local server and a tiny model with the retrieval contract."""

from __future__ import annotations

import os

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.client import ServingError, make_channel, model_status, predict, retrieve
from serving.server import ModelServer

ITEMS = ["a", "b", "c", "d", "é"]
EMB = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.2]], np.float32)


class _Retrieval(tf.Module):
    """Exact top-k by dot product with the mean history embedding, following the export's contract."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = tf.constant(ITEMS)
        self.emb = tf.Variable(EMB)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.ids, tf.range(len(ITEMS), dtype=tf.int64)), -1)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                  tf.TensorSpec([None], tf.int32, name="k"),
                                  tf.TensorSpec([None], tf.bool, name="exclude_history")])
    def retrieve(self, history: tf.Tensor, k: tf.Tensor, exclude_history: tf.Tensor) -> dict[str, tf.Tensor]:
        idx = self.table.lookup(history)
        known = tf.cast(idx >= 0, tf.float32)
        tf.debugging.assert_greater(tf.reduce_sum(known, axis=1), 0.0, message="a history has no known item")
        tf.debugging.assert_greater_equal(k, 1, message="k must be in [1, 5]")
        tf.debugging.assert_less_equal(k, len(ITEMS), message="k must be in [1, 5]")
        vecs = tf.gather(self.emb, tf.maximum(idx, 0)) * known[..., None]
        user = tf.reduce_sum(vecs, axis=1) / tf.reduce_sum(known, axis=1, keepdims=True)
        scores = tf.matmul(user, self.emb, transpose_b=True)
        seen = tf.reduce_any(tf.one_hot(idx, len(ITEMS), on_value=True, off_value=False, dtype=tf.bool), axis=1)
        scores = tf.where(seen & exclude_history[:, None], -np.inf, scores)
        top = tf.math.top_k(scores, tf.reduce_max(k))
        keep = tf.range(tf.reduce_max(k))[None, :] < k[:, None]
        return {"item_ids": tf.where(keep, tf.gather(self.ids, top.indices), ""),
                "scores": tf.where(keep, top.values, -np.inf)}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    base = str(tmp_path_factory.mktemp("client_base"))
    module = _Retrieval()
    tf.saved_model.save(module, os.path.join(base, "learn_retrieval", "1"),
                        signatures={"serving_default": module.retrieve})
    server = ModelServer(base, port=0, num_threads=4)
    server.start()
    yield server.address
    server.stop(grace=0.5)


def _expected(history: list[str], k: int, exclude: bool) -> list[tuple[str, float]]:
    user = EMB[[ITEMS.index(i) for i in history]].mean(axis=0)
    scores = EMB @ user
    order = [j for j in np.argsort(-scores, kind="stable") if not (exclude and ITEMS[j] in history)]
    return [(ITEMS[j], float(scores[j])) for j in order[:k]]


def test_retrieve_matches_exact_ranking(target: str) -> None:
    histories = [["a"], ["c", "d"], ["a", "b", "c", "d"]]
    got = retrieve(target, histories, k=3)
    assert len(got) == 3
    for row, history in zip(got, histories):
        want = _expected(history, 3, exclude=True)
        assert [i for i, _ in row] == [i for i, _ in want]  # the last row has only one item left
        np.testing.assert_allclose([s for _, s in row], [s for _, s in want], rtol=1e-6)
    assert got[2] == [("é", pytest.approx(_expected(["a", "b", "c", "d"], 1, True)[0][1]))]
    with_history = retrieve(target, [["a"]], k=2, exclude_history=False)
    assert [i for i, _ in with_history[0]] == ["a", "b"]
    assert retrieve(target, [], k=3) == []


def test_predict_pads_rows_with_smaller_k(target: str) -> None:
    with make_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        out = predict(stub, "learn_retrieval", {"history": np.array([["a", ""], ["c", "d"]]),
                                                "k": np.array([1, 3], np.int32),
                                                "exclude_history": np.array([True, True])})
    assert out["item_ids"].shape == (2, 3) and out["scores"].dtype == np.float32
    assert list(out["item_ids"][0][1:]) == [b"", b""] and np.all(np.isneginf(out["scores"][0][1:]))
    assert out["item_ids"][0][0] == b"b"


def test_errors_carry_status_codes(target: str) -> None:
    with pytest.raises(ServingError) as e:
        retrieve(target, [["a"]], k=3, model="nope")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as e:
        retrieve(target, [["a"]], k=0)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k must be in [1, 5]" in e.value.details()
    with pytest.raises(ServingError) as e:
        retrieve(target, [["zzz"]], k=1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no known item" in e.value.details()


def test_channel_target_and_rpc_error_compatibility(target: str) -> None:
    with make_channel(target) as channel:
        out = predict(channel, "learn_retrieval", {"history": np.array([["a"]]), "k": np.array([2], np.int32),
                                                   "exclude_history": np.array([False])})
        assert list(out["item_ids"][0]) == [b"a", b"b"]
        with pytest.raises(grpc.RpcError) as e:  # ServingError is a grpc.RpcError
            predict(channel, "nope", {})
        assert isinstance(e.value, ServingError) and e.value.code() == grpc.StatusCode.NOT_FOUND
        assert str(e.value).startswith("NOT_FOUND: ")


def test_model_status(target: str) -> None:
    assert model_status(target, "learn_retrieval") == {1: "AVAILABLE"}
    with pytest.raises(ServingError) as e:
        model_status(target, "learn_retrieval", version=2)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_retrieve_pads_histories_to_a_fixed_width(target: str) -> None:
    # Padding with "" to a fixed width (for TF Serving's batching) does not change the answer.
    assert retrieve(target, [["a"], ["c", "d"]], k=3, pad_to=6) == retrieve(target, [["a"], ["c", "d"]], k=3)
    with pytest.raises(ValueError, match="more than pad_to=1"):
        retrieve(target, [["c", "d"]], k=3, pad_to=1)
