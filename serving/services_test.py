"""PredictionService / ModelService over gRPC with the stock tensorflow_serving.apis stubs and a toy SavedModel."""

from __future__ import annotations

import os

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2

from serving.testing import AVAILABLE, MODEL, Stubs, request


def test_predict_matches_in_process(base: str, stubs: Stubs) -> None:
    loaded = tf.saved_model.load(os.path.join(base, MODEL, "1"))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    k = np.array([1, 2, 3, 5], np.int32)
    want = {n: t.numpy() for n, t in loaded.signatures["serving_default"](x=tf.constant(x), k=tf.constant(k)).items()}

    response = stubs.predict.Predict(request(x=x, k=k), timeout=10)
    got = {n: tf.make_ndarray(t) for n, t in response.outputs.items()}
    assert set(got) == {"y", "k2", "version"}
    for n in want:
        np.testing.assert_array_equal(got[n], want[n])
        assert got[n].dtype == want[n].dtype
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"

    # Explicit version, explicit signature name and an output filter.
    response = stubs.predict.Predict(request(x=x, k=k, version=1, signature="serving_default", **{}), timeout=10)
    assert response.model_spec.version.value == 1
    filtered = request(x=x, k=k)
    filtered.output_filter.append("y")
    response = stubs.predict.Predict(filtered, timeout=10)
    assert list(response.outputs) == ["y"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), want["y"])

    # A string signature.
    words = np.array([[b"a", "bé".encode(), b"c"], [b"x", b"", b"z"]], dtype=object)
    r = predict_pb2.PredictRequest()
    r.model_spec.name, r.model_spec.signature_name = MODEL, "join"
    r.inputs["words"].CopyFrom(tf.make_tensor_proto(words))
    response = stubs.predict.Predict(r, timeout=10)
    want_join = loaded.signatures["join"](words=tf.constant(words))["joined"].numpy()
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["joined"]), want_join)
    assert response.model_spec.signature_name == "join"


def test_get_model_metadata(base: str, stubs: Stubs) -> None:
    r = get_model_metadata_pb2.GetModelMetadataRequest()
    r.model_spec.name = MODEL
    r.metadata_field.append("signature_def")
    response = stubs.predict.GetModelMetadata(r, timeout=10)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigs)
    assert {"serving_default", "join"} <= set(sigs.signature_def)
    default = sigs.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert set(default.inputs) == {"x", "k"} and set(default.outputs) == {"y", "k2", "version"}
    assert default.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1, 3]
    assert default.outputs["version"].dtype == tf.int64.as_datatype_enum
    assert sigs.signature_def["join"].inputs["words"].dtype == tf.string.as_datatype_enum

    bad = get_model_metadata_pb2.GetModelMetadataRequest()
    bad.model_spec.name = MODEL
    bad.metadata_field.append("nope")
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.GetModelMetadata(bad, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in e.value.details()
    bad.ClearField("metadata_field")
    bad.metadata_field.append("signature_def")
    bad.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.GetModelMetadata(bad, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_model_status(stubs: Stubs) -> None:
    status = stubs.status()
    assert set(status) == {1}
    assert status[1].state == AVAILABLE and status[1].status.error_code == 0
    assert stubs.status(version=1)[1].state == AVAILABLE
    for kwargs, needle in (({"model": "nope"}, "nope"), ({"version": 7}, "version 7")):
        with pytest.raises(grpc.RpcError) as e:
            stubs.status(**kwargs)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and needle in e.value.details()


def test_unimplemented_methods(stubs: Stubs) -> None:
    r = classification_pb2.ClassificationRequest()
    r.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.Classify(r, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
