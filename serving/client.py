"""A small typed client over the stock TF Serving gRPC stubs (works with `learn serve` and `tensorflow_model_server`).

    from serving.client import predict, retrieve
    out = predict("127.0.0.1:8500", "learn_user", {"history": np.array([["i1", "i2"]], object)})
    recs = retrieve("127.0.0.1:8500", [["i1", "i2"], ["i7"]], k=10)   # [[(item_id, score), ...], ...]

Every call accepts a `host:port` target (a channel is opened and closed per call), a
`grpc.Channel` or a `PredictionServiceStub` (reuse one for many calls; see `make_channel`).
Failures raise `ServingError` (a `grpc.RpcError`) with the status code and the server's message.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
RETRIEVAL_MODEL = "learn_retrieval"

StubOrTarget = Union[str, grpc.Channel, prediction_service_pb2_grpc.PredictionServiceStub]


class ServingError(grpc.RpcError, RuntimeError):
    """A failed RPC, readable as `CODE: message`; `code()` and `details()` as on grpc's own errors.

    It is a `grpc.RpcError`, so `except grpc.RpcError` catches it too.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        """The gRPC status code (e.g. `grpc.StatusCode.NOT_FOUND`)."""
        return self._code

    def details(self) -> str:
        """The server's error message."""
        return self._details


def make_channel(target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """An insecure channel to `host:port` with the server's message-size limits."""
    return grpc.insecure_channel(target, options=[("grpc.max_send_message_length", max_message_bytes),
                                                  ("grpc.max_receive_message_length", max_message_bytes)])


def predict(stub_or_target: StubOrTarget, model: str, inputs: Mapping[str, np.ndarray],
            signature: str = "serving_default", version: Optional[int] = None, timeout: float = 10.0,
            output_filter: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Calls `Predict` on `model` and returns its outputs as numpy arrays (strings as bytes objects).

    `stub_or_target` is `host:port`, a `grpc.Channel` or a `PredictionServiceStub`; str inputs are
    sent as UTF-8 DT_STRING tensors.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))  # str -> UTF-8 DT_STRING
    request.output_filter.extend(output_filter or [])
    if isinstance(stub_or_target, str):
        with make_channel(stub_or_target) as channel:
            response = _call(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict, request, timeout)
    elif isinstance(stub_or_target, grpc.Channel):
        response = _call(prediction_service_pb2_grpc.PredictionServiceStub(stub_or_target).Predict, request, timeout)
    else:
        response = _call(stub_or_target.Predict, request, timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def _call(method: grpc.UnaryUnaryMultiCallable, request: object, timeout: float) -> object:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as e:
        raise ServingError(e.code(), e.details() or "") from e


def retrieve(stub_or_target: StubOrTarget, history: Sequence[Sequence[str]], k: int, exclude_history: bool = True,
             model: str = RETRIEVAL_MODEL, timeout: float = 10.0,
             pad_to: Optional[int] = None) -> list[list[tuple[str, float]]]:
    """Top-k items for each history (oldest first) from a retrieval model (`learn_retrieval` or `_bf`).

    `pad_to` pads every history with "" to that fixed width (needed when TF Serving batches requests;
    see docs/serving.md). Returns one list of (item_id, score) per history, best first, without the
    "" / -inf padding.

    Raises:
      ValueError: a history is longer than `pad_to`.
    """
    if not history:
        return []
    width = max(1, max(len(h) for h in history))
    if pad_to is not None:
        if width > pad_to:
            raise ValueError(f"a history has {width} items, more than pad_to={pad_to}; keep the most recent ones")
        width = pad_to
    padded = np.full((len(history), width), b"", dtype=object)
    for i, row in enumerate(history):
        for j, item in enumerate(row):
            padded[i, j] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    outputs = predict(stub_or_target, model, {
        "history": padded,
        "k": np.full(len(history), k, np.int32),
        "exclude_history": np.full(len(history), exclude_history, bool),
    }, timeout=timeout)
    ids, scores = outputs["item_ids"], outputs["scores"]
    result = []
    for row_ids, row_scores in zip(ids, scores):
        result.append([(i.decode("utf-8"), float(s)) for i, s in zip(row_ids, row_scores)
                       if i != b"" and np.isfinite(s)])
    return result


def model_status(target: str, model: str, version: Optional[int] = None, timeout: float = 10.0) -> dict[int, str]:
    """`GetModelStatus`: version -> state name (AVAILABLE, LOADING, END, ...), with the error for failed loads."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = int(version)
    with make_channel(target) as channel:
        response = _call(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, request, timeout)
    states = get_model_status_pb2.ModelVersionStatus.State
    result = {}
    for s in response.model_version_status:
        text = states.Name(s.state)
        if s.status.error_code:
            text += f" ({s.status.error_message})"
        result[int(s.version)] = text
    return result
