"""Test helpers for the server tests: a toy SavedModel exported like the real exporter, requests, stock stubs."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable, Optional

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

MODEL = "toy"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


class ToyModule(tf.Module):
    """y = (x @ [1, 2, 3]) * version; asserts k <= 5 in the graph; a second string signature."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = tf.Variable(version, dtype=tf.int64, trainable=False)
        self.w = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int32, name="k")])
    def score(self, x: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_less_equal(k, 5, message="k must be at most 5")
        y = tf.matmul(x, self.w)[:, 0] * tf.cast(self.version, tf.float32)
        return {"y": y, "k2": k * 2, "version": tf.fill(tf.shape(k), self.version)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="words")])
    def join(self, words: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"joined": tf.strings.reduce_join(words, axis=1, separator=" ")}


def export_toy(model_dir: str, version: int, publish: bool = True,
               warmup: Optional[list[predict_pb2.PredictRequest]] = None) -> str:
    """Exports the toy model like the real exporter: into `.N.tmp-*`, then renamed to `N` if `publish`."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir)
    module = ToyModule(version)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.score, "join": module.join})
    if warmup:
        os.makedirs(os.path.join(tmp, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(tmp, "assets.extra", "tf_serving_warmup_requests")) as w:
            for r in warmup:
                w.write(prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=r)).SerializeToString())
    if not publish:
        return tmp
    final = os.path.join(model_dir, str(version))
    os.rename(tmp, final)
    return final


_DEFAULT: Any = object()


def request(model: str = MODEL, x: Any = _DEFAULT, k: Any = _DEFAULT, signature: str = "",
            version: Optional[int] = None, **extra: Any) -> predict_pb2.PredictRequest:
    """A PredictRequest for the toy model (x defaults to [[1, 2, 3]], k to [1]; None leaves an input out)."""
    r = predict_pb2.PredictRequest()
    r.model_spec.name = model
    r.model_spec.signature_name = signature
    if version is not None:
        r.model_spec.version.value = version
    inputs = {"x": np.array([[1, 2, 3]], np.float32) if x is _DEFAULT else x,
              "k": np.array([1], np.int32) if k is _DEFAULT else k, **extra}
    for name, value in inputs.items():
        if value is not None:
            r.inputs[name].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                    else tf.make_tensor_proto(value))
    return r


def wait_for(cond: Callable[[], bool], timeout: float = 180.0, what: str = "condition") -> None:
    """Polls `cond` until it holds; raises AssertionError naming `what` after `timeout` s (generous: busy CI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Stubs:
    """Stock TF Serving stubs over one channel."""

    def __init__(self, port: int, max_send: int = 4 << 20) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", max_send), ("grpc.max_receive_message_length", 64 << 20)])
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self, model: str = MODEL, version: Optional[int] = None) -> dict[int, Any]:
        r = get_model_status_pb2.GetModelStatusRequest()
        r.model_spec.name = model
        if version is not None:
            r.model_spec.version.value = version
        return {s.version: s for s in self.models.GetModelStatus(r, timeout=10).model_version_status}

    def served_version(self) -> int:
        return int(self.predict.Predict(request(), timeout=10).model_spec.version.value)
