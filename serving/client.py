"""A small typed client of TF Serving's gRPC stubs and REST API (works with `learn serve` and `tensorflow_model_server`).

    from serving.client import predict, retrieve, rest_predict
    out = predict("127.0.0.1:8500", "learn_user", {"history": np.array([["i1", "i2"]], object)})
    recs = retrieve("127.0.0.1:8500", [["i1", "i2"], ["i7"]], k=10)   # [[(item_id, score), ...], ...]
    recs = retrieve("http://127.0.0.1:8501", [["i1", "i2"]], k=10)    # the same over REST
    out = rest_predict("http://127.0.0.1:8501", "learn_user", {"history": [["i1", "i2"]]})

gRPC calls accept a `host:port` target (a channel is opened and closed per call), a
`grpc.Channel` or a `PredictionServiceStub` (reuse one for many calls; see `make_channel`);
`retrieve` sends an `http://` / `https://` target over REST. Failures raise `ServingError`
(a `grpc.RpcError`) with the status code and the server's message; over REST a `RestError`,
which also carries the HTTP status.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence, Union

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
import requests
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


_GRPC_CODE = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.ABORTED,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              499: grpc.StatusCode.CANCELLED, 501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE,
              504: grpc.StatusCode.DEADLINE_EXCEEDED}


class RestError(ServingError):
    """A failed REST call: `http_status`, plus the gRPC code TF Serving maps to it and the `error` message."""

    def __init__(self, http_status: int, details: str) -> None:
        super().__init__(_GRPC_CODE.get(http_status, grpc.StatusCode.INTERNAL), details)
        self.http_status = http_status


def _json_ready(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "SU":
        return np.frompyfunc(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), 1, 1)(array).tolist()
    return array.tolist()


def rest_predict(url: str, model: str, inputs: Mapping[str, Any], signature: str = "",
                 version: Optional[int] = None, label: Optional[str] = None, row_format: bool = False,
                 timeout: float = 10.0, session: Optional[requests.Session] = None) -> dict[str, np.ndarray]:
    """POSTs `:predict` to TF Serving's REST API at `url` (`http://host:port`); returns the outputs as arrays.

    Columnar (`inputs`) by default; `row_format` sends `instances` (one object per row of the inputs'
    dimension 0). String outputs come back as str. Reuse a `requests.Session` for many calls.

    Raises:
      RestError: the server answered with an error (HTTP status and TF Serving's message).
    """
    path = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version is not None else "") + \
        (f"/labels/{label}" if label else "") + ":predict"
    body: dict[str, Any] = {"signature_name": signature} if signature else {}
    values = {n: _json_ready(v) for n, v in inputs.items()}
    if row_format:
        rows = len(next(iter(values.values())))
        body["instances"] = [{n: v[i] for n, v in values.items()} for i in range(rows)]
    else:
        body["inputs"] = values
    response = (session or requests).post(url.rstrip("/") + path, data=json.dumps(body), timeout=timeout,
                                          headers={"Content-Type": "application/json"})
    try:
        doc = response.json()
    except ValueError:
        raise RestError(response.status_code, response.text[:2000]) from None
    if response.status_code != 200:
        raise RestError(response.status_code, str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc))
    if row_format:
        preds = doc["predictions"]
        if preds and isinstance(preds[0], dict):
            return {n: np.array([p[n] for p in preds]) for n in preds[0]}
        return {"output": np.array(preds)}
    outputs = doc["outputs"]
    return {n: np.array(v) for n, v in outputs.items()} if isinstance(outputs, dict) else {"output": np.array(outputs)}


def is_rest_target(target: Any) -> bool:
    """Whether `target` is a REST URL (`http://...` or `https://...`) rather than a gRPC target."""
    return isinstance(target, str) and target.startswith(("http://", "https://"))


def retrieve(stub_or_target: StubOrTarget, history: Sequence[Sequence[str]], k: int, exclude_history: bool = True,
             model: str = RETRIEVAL_MODEL, timeout: float = 10.0,
             pad_to: Optional[int] = None,
             user_ids: Optional[Sequence[str]] = None) -> list[list[tuple[str, float]]]:
    """Top-k items for each history (oldest first) from a retrieval model (`learn_retrieval` or `_bf`).

    `user_ids` (one per history, "" for none) is sent as the `user_id` input, which `cllm4rec_retrieval`
    takes; the LEARN models take no user input.

    `stub_or_target` is a gRPC target (see `predict`) or a REST URL `http://host:port`. `pad_to`
    pads every history with "" to that fixed width (needed when TF Serving batches requests;
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
    inputs = {"history": padded, "k": np.full(len(history), k, np.int32),
              "exclude_history": np.full(len(history), exclude_history, bool)}
    if user_ids is not None:
        if len(user_ids) != len(history):
            raise ValueError(f"{len(user_ids)} user ids for {len(history)} histories")
        inputs["user_id"] = np.asarray([str(u).encode("utf-8") for u in user_ids], dtype=object)
    if is_rest_target(stub_or_target):
        outputs = rest_predict(str(stub_or_target), model, inputs, timeout=timeout)
    else:
        outputs = predict(stub_or_target, model, inputs, timeout=timeout)
    ids, scores = outputs["item_ids"], outputs["scores"]
    result = []
    for row_ids, row_scores in zip(ids, scores):
        row_ids = [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in row_ids]
        result.append([(i, float(s)) for i, s in zip(row_ids, row_scores) if i != "" and np.isfinite(s)])
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
