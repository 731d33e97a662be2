"""Request validation and status codes: every malformed PredictRequest gets TF Serving's code and a clear message."""

from __future__ import annotations

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from serving.testing import Stubs, request


def _malformed(too_many_values: bool = False) -> tensor_pb2.TensorProto:
    p = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
    if too_many_values:
        p.ClearField("tensor_content")
        p.float_val.extend(range(8))  # 8 values for 6 elements (fewer would repeat the last one, as in TF)
    else:
        p.tensor_content = p.tensor_content[:-4]  # 20 bytes for 6 floats
    return p


def _huge() -> tensor_pb2.TensorProto:
    p = tf.make_tensor_proto(np.zeros((1, 3), np.float32))
    p.ClearField("tensor_content")
    p.tensor_shape.dim[0].size = 1_000_000_000  # one value broadcast to 3e9 elements
    p.float_val.append(1.0)
    return p


def _filtered(name: str) -> predict_pb2.PredictRequest:
    r = request()
    r.output_filter.append(name)
    return r


BAD_REQUESTS = {
    "unknown_model": (lambda: request(model="nope"), grpc.StatusCode.NOT_FOUND, 'no model named "nope"'),
    "unknown_version": (lambda: request(version=9), grpc.StatusCode.NOT_FOUND, "Specific(toy, 9)"),
    "unknown_signature": (lambda: request(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT,
                          'Serving signature key "nope" not found'),
    "missing_input": (lambda: request(k=None), grpc.StatusCode.INVALID_ARGUMENT, "missing input(s): k"),
    "extra_input": (lambda: request(z=np.zeros(1, np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                    "unexpected input(s): z"),
    "wrong_dtype": (lambda: request(x=np.zeros((1, 3), np.float64)), grpc.StatusCode.INVALID_ARGUMENT,
                    "input 'x' has dtype float64 but the signature expects float32"),
    "wrong_rank": (lambda: request(x=np.zeros(3, np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                   "input 'x' has shape [3] but the signature expects [None, 3]"),
    "wrong_fixed_dim": (lambda: request(x=np.zeros((2, 4), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                        "input 'x' has shape [2, 4]"),
    "malformed_tensor": (lambda: request(x=_malformed(), k=np.ones(2, np.int32)), grpc.StatusCode.INVALID_ARGUMENT,
                         "input 'x' is a malformed TensorProto"),
    "too_many_values": (lambda: request(x=_malformed(True), k=np.ones(2, np.int32)),
                        grpc.StatusCode.INVALID_ARGUMENT, "input 'x' is a malformed TensorProto"),
    "huge_broadcast": (lambda: request(x=_huge()), grpc.StatusCode.INVALID_ARGUMENT, "elements"),
    "graph_assert": (lambda: request(k=np.array([1, 7], np.int32), x=np.zeros((2, 3), np.float32)),
                     grpc.StatusCode.INVALID_ARGUMENT, "k must be at most 5"),
    "unknown_output_filter": (lambda: _filtered("nope"), grpc.StatusCode.INVALID_ARGUMENT,
                              "output tensor alias(es) not found"),
    "no_model_name": (lambda: request(model=""), grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests(stubs: Stubs, case: str) -> None:
    make, code, needle = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.Predict(make(), timeout=10)
    assert e.value.code() == code, e.value.details()
    assert needle in e.value.details()
    assert "[[" not in e.value.details()  # no graph node traces
    assert stubs.served_version() == 1  # the server keeps answering


@pytest.mark.parametrize("value", [
    np.array([[1.5, -np.inf], [np.nan, 0.0]], np.float32), np.arange(6, dtype=np.float64).reshape(3, 2),
    np.array([3, -7], np.int32), np.array([[2 ** 40]], np.int64), np.array([True, False]),
    np.array([[b"a", b""], [b"\xff\x00", b"item_7"]], dtype=object), np.array([b"x", b"yz"]),
    np.array(["caf\u00e9", "b"]), np.zeros((0, 3), np.float32), np.array(5, np.int32),
    np.array([1, 2], np.uint8), np.array([1.0], np.float16),
])
def test_tensor_proto_reads_back_as_tf_make_tensor_proto_does(value: np.ndarray) -> None:
    from serving.tensor_codec import tensor_proto

    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    into = tensor_proto(value, out=response.outputs["y"])  # written in place, as the services do
    for proto in (tensor_proto(value), into, response.outputs["y"]):
        reference = tf.make_tensor_proto(value)
        assert proto.dtype == reference.dtype and proto.tensor_shape == reference.tensor_shape
        got, want = tf.make_ndarray(proto), tf.make_ndarray(reference)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.0]), np.array([[1, 2]], np.int32),
    np.array([7], np.int64), np.array([True, False]), np.array([[b"a", b"bc"]], dtype=object),
    np.zeros((0, 3), np.float32), np.array([], dtype=object).reshape(1, 0), np.array([3], np.int32)])
@pytest.mark.parametrize("layout", ["tensor_content", "typed field"])
def test_tensor_from_proto_decodes_as_tf_make_ndarray_does(value: np.ndarray, layout: str) -> None:
    from serving.tensor_codec import tensor_from_proto

    p = tf.make_tensor_proto(value)
    if layout == "typed field" and p.tensor_content:  # the same values in the dtype's repeated field
        field = {tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val", tf.int64: "int64_val",
                 tf.bool: "bool_val"}[tf.as_dtype(p.dtype)]
        p.ClearField("tensor_content")
        getattr(p, field).extend(value.ravel().tolist())
    spec = tf.TensorSpec([None] * value.ndim, tf.as_dtype(p.dtype))
    got, want = tensor_from_proto("x", p, spec, 1 << 20), tf.make_ndarray(p)
    assert got.dtype == want.dtype and got.shape == want.shape and got.tolist() == want.tolist()
    short = tf.make_tensor_proto(value)  # fewer values than elements: TF repeats the last one
    if value.size > 1 and not short.tensor_content:
        del getattr(short, {tf.string: "string_val", tf.int32: "int_val"}.get(tf.as_dtype(short.dtype),
                                                                                 "float_val"))[1:]
        assert tensor_from_proto("x", short, spec, 1 << 20).tolist() == tf.make_ndarray(short).tolist()
