"""A local gRPC model server speaking TF Serving's API (`learn serve`).

Implements `tensorflow.serving.PredictionService` (`Predict`, `GetModelMetadata`)
and `tensorflow.serving.ModelService` (`GetModelStatus`) from the
tensorflow-serving-api protos, so unmodified TF Serving clients work against it
where the `tensorflow_model_server` binary cannot be installed.

Model base: `<base>/<model_name>/<version>/` SavedModel directories, listed by a
text-format `ModelServerConfig` (`models.config`) or, without one, every
subdirectory of the base. Each model serves its highest version that loaded
(latest-version policy). A background thread polls the base: a new version is
loaded (and warmed up from `assets.extra/tf_serving_warmup_requests`) off the
request path and swapped in atomically, so in-flight requests finish on the old
version. A version that fails to load is logged, reported by `GetModelStatus` as
END with its error, and never replaces the version being served. Version
directories whose names are not integers (e.g. an exporter's `.3.tmp-*`
directory) are ignored.

Errors use TF Serving's gRPC status codes: NOT_FOUND for an unknown model or
version, INVALID_ARGUMENT for a bad request (signature, input names, dtypes,
shapes, malformed tensors, output filter) or an InvalidArgument error raised in
the graph, INTERNAL for anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
_MAX_MESSAGE_CHARS = 2000  # error details longer than this are cut

_State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger("learn_tf.serving")


def _ensure_log_handler() -> None:
    """Logs go to stderr with timestamps unless the application configured the logger itself."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s serving: %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


_custom_ops_registered = False


def _register_custom_ops() -> None:
    """Imports ScaNN so its TF ops are registered before a SavedModel using them is loaded."""
    global _custom_ops_registered
    if _custom_ops_registered:
        return
    _custom_ops_registered = True
    try:
        import scann  # noqa: F401
    except ImportError:
        _log.info("scann is not installed: SavedModels with ScaNN ops will fail to load")
    except Exception as e:  # a broken op library must not stop the server serving other models
        _log.warning("importing scann failed (%s): SavedModels with ScaNN ops will fail to load", e)


class RequestError(Exception):
    """A request failure carrying the gRPC status code it is reported with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:_MAX_MESSAGE_CHARS]


# ---------------------------------------------------------------------------------------------
# Servables and models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    fn: Callable[..., Any]
    inputs: dict[str, tf.TensorSpec]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Servable:
    """One loaded version of a model: the loaded object (kept alive), its signatures and SignatureDefs."""

    name: str
    version: int
    path: str
    loaded: Any
    signatures: dict[str, _Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap


@dataclass
class _VersionStatus:
    state: int
    error_code: int = 0
    error_message: str = ""


@dataclass
class _Model:
    """A served model: its base path, the version being served and the status of every version seen."""

    name: str
    base_path: str
    version_labels: dict[str, int] = field(default_factory=dict)
    current: Optional[_Servable] = None
    statuses: dict[int, _VersionStatus] = field(default_factory=dict)
    failed: dict[int, tuple] = field(default_factory=dict)  # version -> fingerprint that failed
    missing_logged: bool = False


def _version_dirs(base_path: str) -> list[int]:
    """Integer-named version directories under a model's base path, highest first."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return []
    versions = []
    for n in names:
        if n.startswith(".") or not (n.isascii() and n.isdigit()):
            continue
        if not os.path.isdir(os.path.join(base_path, n)):
            continue
        versions.append(int(n))
    return sorted(versions, reverse=True)


def _fingerprint(path: str) -> tuple:
    """Changes when a version directory's graph file is (re)written, so a failed version is retried."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        try:
            st = os.stat(os.path.join(path, name))
            return (name, st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    try:
        return ("dir", os.stat(path).st_mtime_ns)
    except OSError:
        return ("missing",)


def _read_signature_defs(path: str) -> get_model_metadata_pb2.SignatureDefMap:
    """The serving MetaGraph's SignatureDefs, as TF Serving returns them in GetModelMetadata."""
    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as f, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # the protobuf parser only warns on some garbage
                saved_model.ParseFromString(f.read())
            if caught:
                raise DecodeError(str(caught[0].message))
        elif os.path.exists(pbtxt):
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved_model)
        else:
            raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {path}")
    except (DecodeError, text_format.ParseError) as e:
        raise ValueError(f"{path} does not hold a valid SavedModel: {e}") from e
    graphs: list[meta_graph_pb2.MetaGraphDef] = list(saved_model.meta_graphs)
    serve = [g for g in graphs if "serve" in g.meta_info_def.tags] or graphs
    if not serve:
        raise ValueError(f"{path} does not hold a valid SavedModel: no MetaGraph")
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in serve[0].signature_def.items():
        result.signature_def[key].CopyFrom(sig)
    return result


def _load_servable(name: str, version: int, path: str) -> _Servable:
    """Loads one SavedModel version and indexes its signatures (raises on any failure)."""
    _register_custom_ops()
    signature_defs = _read_signature_defs(path)
    loaded = tf.saved_model.load(path, tags=["serve"])
    signatures: dict[str, _Signature] = {}
    for key, fn in loaded.signatures.items():
        args, kwargs = fn.structured_input_signature
        if args:
            raise ValueError(f"signature {key!r} takes positional inputs; serving signatures take named inputs")
        outputs = fn.structured_outputs
        if not isinstance(outputs, dict):
            raise ValueError(f"signature {key!r} does not return a dict of named outputs")
        signatures[key] = _Signature(fn=fn, inputs=dict(kwargs), outputs=tuple(sorted(outputs)))
    if not signatures:
        raise ValueError(f"SavedModel at {path} has no signatures")
    return _Servable(name, version, path, loaded, signatures, signature_defs)


def read_models_config(path: str) -> list[tuple[str, str, dict[str, int]]]:
    """Parses a text-format `ModelServerConfig` into (name, absolute base path, version labels) triples.

    Relative base paths are resolved against the config file's directory. Raises ValueError with the
    file name on a parse error, a custom model config, a non-TensorFlow platform or a duplicate name.
    """
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a text-format ModelServerConfig: {e}") from e
    if config.HasField("custom_model_config"):
        raise ValueError(f"{path}: custom_model_config is not supported; use model_config_list")
    here = os.path.dirname(os.path.abspath(path))
    result, seen = [], set()
    for c in config.model_config_list.config:
        if not c.name or not c.base_path:
            raise ValueError(f"{path}: every config needs a name and a base_path (got {c.name!r}, {c.base_path!r})")
        if c.name in seen:
            raise ValueError(f"{path}: model {c.name!r} is configured twice")
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {c.name!r} has model_platform {c.model_platform!r}; "
                             "only \"tensorflow\" is served")
        if c.HasField("model_version_policy") and c.model_version_policy.WhichOneof("policy_choice") not in (
                None, "latest"):
            _log.warning("%s: model %s asks for a %s version policy; this server serves the latest version only",
                         path, c.name, c.model_version_policy.WhichOneof("policy_choice"))
        seen.add(c.name)
        base = c.base_path if os.path.isabs(c.base_path) else os.path.join(here, c.base_path)
        result.append((c.name, os.path.normpath(base), dict(c.version_labels)))
    return result


# ---------------------------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------------------------


def _tensor_from_proto(name: str, proto: Any, spec: tf.TensorSpec, max_elements: int) -> tf.Tensor:
    """Validates one input TensorProto against its TensorSpec and converts it."""
    want = spec.dtype
    if proto.dtype != want.as_datatype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"unknown dtype {proto.dtype}"
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has dtype {got} but the signature expects {want.name}")
    if proto.tensor_shape.unknown_rank:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' has an unknown shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' has a negative dimension: {dims}")
    if int(np.prod(dims, dtype=np.float64)) > max_elements:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has shape {dims}: more than {max_elements} elements")
    if not spec.shape.is_compatible_with(dims):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has shape {dims} but the signature expects "
                           f"{_shape_str(spec.shape)} (rank {spec.shape.rank})")
    try:
        value = tf.make_ndarray(proto)
    except Exception as e:  # ValueError / TypeError from values that do not fill the shape, etc.
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' is a malformed TensorProto: {e}") from e
    if list(value.shape) != dims:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' is a malformed TensorProto: values do not fill shape {dims}")
    try:
        return tf.convert_to_tensor(value, dtype=want)
    except Exception as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' cannot be converted: {e}") from e


def _shape_str(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "<unknown rank>"
    return "[" + ", ".join("None" if d is None else str(d) for d in shape.as_list()) + "]"


def _clean_tf_message(message: str) -> str:
    """An op error's own message, without TensorFlow's "Graph execution error" preamble and node trace."""
    message = message.split("\n\t [[")[0].strip()
    if "<stack traces unavailable>\n" in message:
        message = message.split("<stack traces unavailable>\n", 1)[1]
    elif message.startswith("Graph execution error:") and "Detected at node" in message:
        message = message.strip().splitlines()[-1]
    return message.strip()


def _graph_error(e: tf.errors.OpError) -> RequestError:
    """Maps an error raised while running a signature to the status TF Serving would return."""
    message = _clean_tf_message(e.message)
    codes = {
        tf.errors.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
        tf.errors.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
        tf.errors.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
        tf.errors.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    return RequestError(codes.get(e.error_code, grpc.StatusCode.INTERNAL), message)


def _run_predict(servable: _Servable, request: predict_pb2.PredictRequest,
                 max_elements: int) -> dict[str, np.ndarray]:
    """Runs a PredictRequest's signature on one servable; returns the (filtered) outputs as arrays."""
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f'Serving signature key "{key}" not found. Signatures of model {servable.name} '
                           f"version {servable.version}: {', '.join(sorted(servable.signatures))}")
    sent, expected = set(request.inputs), set(signature.inputs)
    if sent != expected:
        missing, extra = sorted(expected - sent), sorted(sent - expected)
        parts = []
        if missing:
            parts.append(f"missing input(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected input(s): {', '.join(extra)}")
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input names do not match signature \"{key}\": {'; '.join(parts)} "
                           f"(expected: {', '.join(sorted(expected))})")
    wanted = list(request.output_filter) or list(signature.outputs)
    unknown = sorted(set(wanted) - set(signature.outputs))
    if unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output tensor alias(es) not found in signature \"{key}\": {', '.join(unknown)} "
                           f"(outputs: {', '.join(signature.outputs)})")
    tensors = {n: _tensor_from_proto(n, request.inputs[n], spec, max_elements) for n, spec in signature.inputs.items()}
    try:
        outputs = signature.fn(**tensors)
    except tf.errors.OpError as e:
        raise _graph_error(e) from e
    except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"signature \"{key}\" rejected the inputs: {e}") from e
    return {n: outputs[n].numpy() for n in dict.fromkeys(wanted)}


def _warm_up(servable: _Servable, max_elements: int) -> int:
    """Replays the version's warmup PredictRequests (as TF Serving does); raises if one fails."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warmup record {count}: only predict_log records are supported")
        try:
            _run_predict(servable, log.predict_log.request, max_elements)
        except RequestError as e:
            raise ValueError(f"warmup request {count} failed: {e.code.name}: {e.message}") from e
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# gRPC services
# ---------------------------------------------------------------------------------------------


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turns RequestError (and unexpected exceptions, as INTERNAL) into gRPC status codes."""

    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except RequestError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # the server stays up whatever a request does
            _log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"[:_MAX_MESSAGE_CHARS])

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: "ModelServer") -> None:
        self._server = server

    @_rpc
    def Predict(self, request: predict_pb2.PredictRequest,
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        servable = self._server._resolve(request.model_spec)
        outputs = _run_predict(servable, request, self._server.max_elements)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_rpc
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for f in request.metadata_field:
            if f != SIGNATURE_DEF_FIELD:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Metadata field {f} is not supported (supported: {SIGNATURE_DEF_FIELD})")
        servable = self._server._resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_defs)
        return response

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by this server; use Predict")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server; use Predict")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by this server; use Predict")


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: "ModelServer") -> None:
        self._server = server

    @_rpc
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return self._server._status(request.model_spec)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "HandleReloadConfigRequest is not implemented; restart the server with a new models.config")


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class ModelServer:
    """Serves the SavedModels of a TF Serving model base over TF Serving's gRPC API.

    `models_config` is a text-format `ModelServerConfig`; without it every subdirectory of
    `model_base` is a model (new subdirectories are picked up while running). `port=0` binds a
    free port; `start()` returns the bound port.
    """

    def __init__(self, model_base: str, models_config: Optional[str] = None, host: str = "127.0.0.1",
                 port: int = 8500, num_threads: int = 16, max_message_bytes: int = 4 << 20,
                 poll_seconds: float = 2.0) -> None:
        _ensure_log_handler()
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1, got {max_message_bytes}")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.model_base = os.path.abspath(model_base)
        self.models_config = models_config
        self.host, self.port = host, port
        self.num_threads = num_threads
        self.max_message_bytes = max_message_bytes
        # A tensor in a request of at most max_message_bytes has at most that many elements, except a
        # single value broadcast to a shape; this bound keeps a tiny request from allocating gigabytes.
        self.max_elements = max(max_message_bytes, 1 << 16)
        self.poll_seconds = poll_seconds
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()  # guards _models and statuses (current is swapped atomically)
        if models_config is not None:
            for name, base, labels in read_models_config(models_config):
                self._models[name] = _Model(name, base, labels)
        elif not os.path.isdir(self.model_base):
            raise FileNotFoundError(f"model base {self.model_base} is not a directory")
        self._server: Optional[grpc.Server] = None
        self._poller: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._poll_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` the server is bound to (after `start()`)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def model_names(self) -> list[str]:
        """Names of the configured (or discovered) models."""
        with self._lock:
            return sorted(self._models)

    def start(self) -> int:
        """Binds host:port, loads every model's latest version, starts serving and polling; returns the port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not silently shared
        ]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.num_threads,
                                                        thread_name_prefix="serving-rpc"), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            bound = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError as e:
            raise OSError(f"cannot bind {host}:{self.port}: {e}") from e
        if not bound:
            raise OSError(f"cannot bind {host}:{self.port}")
        self.port = bound
        try:
            self.poll()  # the port is bound first, so a port in use fails before models load
        except BaseException:
            server.stop(0)
            raise
        server.start()
        self._server = server
        self._poller = threading.Thread(target=self._poll_loop, name="serving-poller", daemon=True)
        self._poller.start()
        _log.info("serving %s on %s (threads %d, max message %d bytes, poll every %.1f s)",
                  ", ".join(self.model_names) or "no models", self.address, self.num_threads,
                  self.max_message_bytes, self.poll_seconds)
        return bound

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish for up to `grace` seconds, stops polling."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stop_event.set()
            if self._server is not None:
                self._server.stop(grace).wait()
            if self._poller is not None and self._poller is not threading.current_thread():
                self._poller.join(timeout=max(grace, 1.0))  # a load in progress may still finish (daemon)
            self._stopped.set()
            _log.info("server on %s stopped", self.address)

    def wait(self) -> None:
        """Blocks until the server has been stopped (by `stop()` or a signal handler)."""
        if self._server is None:
            raise RuntimeError("server not started")
        self._server.wait_for_termination()
        self._stopped.wait()

    # -- model loading -----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop_event.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything the filesystem does
                _log.exception("polling the model base failed")

    def poll(self) -> None:
        """One pass over the model base: discovers models, loads and swaps in new versions."""
        with self._poll_lock:  # one loader at a time
            if self.models_config is None:
                self._discover_models()
            with self._lock:
                models = list(self._models.values())
            for model in models:
                if self._stop_event.is_set():
                    return
                self._poll_model(model)

    def _discover_models(self) -> None:
        try:
            names = sorted(os.listdir(self.model_base))
        except OSError as e:
            _log.warning("cannot list model base %s: %s", self.model_base, e)
            return
        for n in names:
            path = os.path.join(self.model_base, n)
            if n.startswith(".") or not os.path.isdir(path):
                continue
            with self._lock:
                if n not in self._models:
                    self._models[n] = _Model(n, path)
                    _log.info("found model %s at %s", n, path)

    def _set_status(self, model: _Model, version: int, state: int, code: int = 0, message: str = "") -> None:
        with self._lock:
            model.statuses[version] = _VersionStatus(state, code, message[:_MAX_MESSAGE_CHARS])

    def _poll_model(self, model: _Model) -> None:
        versions = _version_dirs(model.base_path)
        if not versions and not model.missing_logged:
            _log.warning("no versions of model %s found under %s", model.name, model.base_path)
            model.missing_logged = True
        elif versions:
            model.missing_logged = False
        current = model.current
        for version in versions:  # highest first: stop at the first one that is (or becomes) served
            if current is not None and version == current.version:
                return
            path = os.path.join(model.base_path, str(version))
            fingerprint = _fingerprint(path)
            if model.failed.get(version) == fingerprint:
                continue
            servable = self._load(model, version, path, fingerprint)
            if servable is not None:
                self._swap(model, servable)
                return
        if current is not None and current.version not in versions:
            model.current = None
            self._set_status(model, current.version, _State.END)
            _log.warning("unloaded model %s version %d: its directory is gone and no other version loads",
                         model.name, current.version)

    def _load(self, model: _Model, version: int, path: str, fingerprint: tuple) -> Optional[_Servable]:
        self._set_status(model, version, _State.LOADING)
        _log.info("loading model %s version %d from %s", model.name, version, path)
        try:
            servable = _load_servable(model.name, version, path)
            warmed = _warm_up(servable, self.max_elements)
        except Exception as e:
            code = e.error_code if isinstance(e, tf.errors.OpError) else 2  # tensorflow.error.UNKNOWN
            message = f"{type(e).__name__}: {_clean_tf_message(str(e))}"
            model.failed[version] = fingerprint
            self._set_status(model, version, _State.END, code, message)
            _log.error("model %s version %d failed to load and will not be served: %s",
                       model.name, version, message)
            return None
        if warmed:
            _log.info("model %s version %d: %d warmup request(s) ok", model.name, version, warmed)
        model.failed.pop(version, None)
        return servable

    def _swap(self, model: _Model, servable: _Servable) -> None:
        old = model.current
        model.current = servable  # atomic: requests that already hold `old` finish on it
        self._set_status(model, servable.version, _State.AVAILABLE)
        if old is None:
            _log.info("model %s version %d is AVAILABLE", model.name, servable.version)
        else:
            self._set_status(model, old.version, _State.END)
            _log.info("model %s: swapped version %d -> %d; unloaded version %d",
                      model.name, old.version, servable.version, old.version)

    # -- request helpers ---------------------------------------------------------------------

    def _model(self, name: str) -> _Model:
        with self._lock:
            model = self._models.get(name)
            known = sorted(self._models)
        if model is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({name}): no model named \"{name}\" "
                               f"(models: {', '.join(known) or 'none'})")
        return model

    def _label_version(self, model: _Model, label: str) -> int:
        if label not in model.version_labels:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label} (model {model.name})")
        return model.version_labels[label]

    def _resolve(self, spec: Any) -> _Servable:
        """The servable a ModelSpec names (latest when no version is given)."""
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is required")
        model = self._model(spec.name)
        current = model.current
        if spec.HasField("version") or spec.version_label:
            version = spec.version.value if spec.HasField("version") else self._label_version(model, spec.version_label)
            if current is None or current.version != version:
                serving = f"serving version {current.version}" if current else "no version is available"
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({spec.name}, {version}) ({serving})")
            return current
        if current is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({spec.name}): no version of model "
                               f"{spec.name} is available")
        return current

    def _status(self, spec: Any) -> get_model_status_pb2.GetModelStatusResponse:
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is required")
        with self._lock:
            model = self._models.get(spec.name)
            statuses = dict(model.statuses) if model is not None else {}
        if model is None or not statuses:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        if spec.HasField("version") or spec.version_label:
            version = spec.version.value if spec.HasField("version") else self._label_version(model, spec.version_label)
            if version not in statuses:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {spec.name}")
            statuses = {version: statuses[version]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(statuses, reverse=True):
            s = statuses[version]
            entry = response.model_version_status.add(version=version, state=s.state)
            entry.status.error_code = s.error_code
            entry.status.error_message = s.error_message
        return response


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def serve_main(model_base: str, models_config: Optional[str] = None, host: str = "127.0.0.1", port: int = 8500,
               num_threads: int = 16, max_message_bytes: int = 4 << 20, poll_seconds: float = 2.0,
               grace: float = 5.0, on_start: Optional[Callable[[ModelServer], None]] = None) -> int:
    """Runs a ModelServer until SIGINT/SIGTERM, then shuts down gracefully; returns the exit code (0).

    Prints `serving <models> on <host>:<port>` to stdout once requests are accepted.
    """
    server = ModelServer(model_base, models_config=models_config, host=host, port=port, num_threads=num_threads,
                         max_message_bytes=max_message_bytes, poll_seconds=poll_seconds)
    server.start()

    def on_signal(signum: int, frame: Any) -> None:
        _log.info("received %s: shutting down (grace %.1f s)", signal.Signals(signum).name, grace)
        threading.Thread(target=server.stop, args=(grace,), name="serving-shutdown", daemon=True).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        print(f"serving {', '.join(server.model_names) or 'no models'} on {server.address}", flush=True)
        if on_start is not None:
            on_start(server)
        server.wait()
    finally:
        server.stop(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m serving.server --model_base DIR [...]`: the same server without the project config."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_base", required=True, help="TF Serving model base: <base>/<model>/<version>/")
    p.add_argument("--models_config", default=None,
                   help="text-format ModelServerConfig (default: <model_base>/models.config if it exists, "
                        "else every subdirectory of the base)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    p.add_argument("--num_threads", type=int, default=16)
    p.add_argument("--max_message_bytes", type=int, default=4 << 20)
    p.add_argument("--poll_seconds", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=5.0)
    args = p.parse_args(argv)
    config = args.models_config
    if config is None and os.path.exists(os.path.join(args.model_base, "models.config")):
        config = os.path.join(args.model_base, "models.config")
    return serve_main(args.model_base, models_config=config, host=args.host, port=args.port,
                      num_threads=args.num_threads, max_message_bytes=args.max_message_bytes,
                      poll_seconds=args.poll_seconds, grace=args.grace)


if __name__ == "__main__":
    sys.exit(main())
