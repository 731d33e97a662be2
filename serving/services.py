"""TF Serving's gRPC servicers: `PredictionService` (Predict, GetModelMetadata) and `ModelService` (GetModelStatus).

Both answer from a `ModelManager` (Predict through a `serving.predictor.Predictor`,
which batches when batching is on); a `RequestError` becomes its gRPC status and
any other exception INTERNAL, so the server keeps serving whatever a request does.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_manager import ModelManager
from serving.predictor import Predictor
from serving.servable import Servable
from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError, tensor_proto

SIGNATURE_DEF_FIELD = "signature_def"
RELOAD_UNIMPLEMENTED = ("HandleReloadConfigRequest is not implemented; edit models.config instead (it is "
                        "re-read while serving)")

_log = logging.getLogger("learn_tf.serving")


def unimplemented_message(method: str) -> str:
    """The UNIMPLEMENTED message of a PredictionService method other than Predict and GetModelMetadata."""
    return f"{method} is not implemented by this server; use Predict"


def predict_response(servable: Servable, key: str, outputs: Mapping[str, np.ndarray]) -> predict_pb2.PredictResponse:
    """The PredictResponse of `servable`'s signature `key` carrying `outputs`."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = key
    for name, value in outputs.items():
        tensor_proto(value, out=response.outputs[name])
    return response


def metadata_response(models: ModelManager, request: get_model_metadata_pb2.GetModelMetadataRequest
                      ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: the signature_def map of the version `request.model_spec` names.

    Raises:
      RequestError: no or unsupported metadata fields (INVALID_ARGUMENT), as `ModelManager.resolve`.
    """
    if not request.metadata_field:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
    for f in request.metadata_field:
        if f != SIGNATURE_DEF_FIELD:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {f} is not supported (supported: {SIGNATURE_DEF_FIELD})")
    servable = models.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_defs)
    return response


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turns RequestError (and unexpected exceptions, as INTERNAL) into gRPC status codes."""

    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except RequestError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # the server stays up whatever a request does
            _log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"[:MAX_MESSAGE_CHARS])

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: Predict and GetModelMetadata; the other methods are UNIMPLEMENTED."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._models = predictor.models

    @_rpc
    def Predict(self, request: predict_pb2.PredictRequest,
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        servable, key, outputs = self._predictor.predict_proto(request, timeout=context.time_remaining())
        return predict_response(servable, key, outputs)

    @_rpc
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return metadata_response(self._models, request)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("Classify"))

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("Regress"))

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("MultiInference"))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: GetModelStatus; HandleReloadConfigRequest is UNIMPLEMENTED."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models

    @_rpc
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return self._models.status(request.model_spec)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, RELOAD_UNIMPLEMENTED)
