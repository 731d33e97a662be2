"""TF Serving's REST API (`--rest_api_port`, 8501) over the same models and Predict path as the gRPC API.

Routes, as `tensorflow_serving/model_servers/http_rest_api_util.cc` matches them
(case-insensitive):

- `GET /v1/models/NAME[/versions/N | /labels/L]`: GetModelStatus as JSON;
- `GET /v1/models/NAME[/versions/N | /labels/L]/metadata`: model_spec and the signature_def map;
- `POST /v1/models/NAME[/versions/N | /labels/L]:predict`: row (`instances`) or columnar
  (`inputs`) JSON, see `serving.json_codec`; `:classify` / `:regress` are 501 (not implemented).

Errors are `{"error": "<message>"}` with TF Serving's status mapping (`http_status`):
INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE 400, NOT_FOUND 404,
RESOURCE_EXHAUSTED 429, UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
INTERNAL / UNKNOWN 500. A body above `max_body_bytes` is 413 (TF Serving sets no
limit; a 429 would invite retries of a request that can never succeed): it is
read and discarded without being buffered, up to 4x the limit, beyond which the
connection is closed. Responses carry the version that answered in the
`X-Served-Model-Version` header (an addition; TF Serving's JSON has no version).

The HTTP layer is tornado (an IOLoop on its own thread); requests run on a
thread pool of `num_threads`, so a slow model never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import grpc
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.json_codec import error_json, inputs_from_json, outputs_to_json, parse_body, signature_name
from serving.model_manager import ModelManager
from serving.predictor import Predictor
from serving.priority import lower_thread_priority
from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError, check_names, signature_of

_log = logging.getLogger("learn_tf.serving")

_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                      re.IGNORECASE)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                     re.IGNORECASE)
VERSION_HEADER = "X-Served-Model-Version"

_HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """TF Serving's HTTP status for a gRPC status code (`ToHTTPStatusCode` in http_server.cc)."""
    return _HTTP_STATUS.get(code, 500)


Reply = tuple[int, bytes, dict[str, str]]


class RestApi:
    """The REST routes as a plain function of (method, path, body) -> (HTTP status, JSON body, headers)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.models: ModelManager = predictor.models

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        """Answers one request; never raises (errors become TF Serving's `{"error": ...}` replies)."""
        try:
            return self._route(method, path, body)
        except RequestError as e:
            return http_status(e.code), error_json(e.message), {}
        except Exception as e:  # noqa: BLE001 - the server stays up whatever a request does
            _log.exception("REST %s %s failed", method, path)
            return 500, error_json(f"{type(e).__name__}: {e}"[:MAX_MESSAGE_CHARS]), {}

    @staticmethod
    def _spec(name: str, version: Optional[str], label: Optional[str]) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
        if version:
            try:
                spec.version.value = int(version)
            except ValueError:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Failed to convert version: {version} to numeric.") from None
        if label:
            spec.version_label = urllib.parse.unquote(label)
        return spec

    def _route(self, method: str, path: str, body: bytes) -> Reply:
        if not path.lower().startswith("/v1/") and path.lower() != "/v1":
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no API at {path}: TF Serving's REST API is under /v1/")
        malformed = RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT.fullmatch(path)
            if not m:
                raise malformed
            spec = self._spec(m.group(1), m.group(2), m.group(3))
            if m.group(4).lower() != "predict":
                raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{m.group(4).capitalize()} is not implemented by this server; use :predict")
            return self._predict(spec, body)
        if method == "GET":
            m = _STATUS.fullmatch(path)
            if not m:
                raise malformed
            if not m.group(1):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
            spec = self._spec(m.group(1), m.group(2), m.group(3))
            return self._metadata(spec) if m.group(4) else self._status(spec)
        raise malformed

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> Reply:
        doc = parse_body(body)
        spec.signature_name = signature_name(doc)
        servable = self.models.resolve(spec)
        key, signature = signature_of(servable, spec.signature_name)
        fmt, arrays = inputs_from_json(doc, signature.inputs)
        wanted = check_names(key, signature, arrays, [])
        outputs = self.predictor.run(servable, key, signature, arrays, wanted)
        return 200, outputs_to_json(outputs, fmt), {VERSION_HEADER: str(servable.version)}

    def _status(self, spec: model_pb2.ModelSpec) -> Reply:
        response = self.models.status(spec)
        body = json_format.MessageToJson(response, including_default_value_fields=True, indent=1)
        return 200, body.encode("utf-8"), {}

    def _metadata(self, spec: model_pb2.ModelSpec) -> Reply:
        servable = self.models.resolve(spec)
        out = {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(
                servable.signature_defs, preserving_proto_field_name=True, including_default_value_fields=True)},
        }
        return 200, json.dumps(out, indent=1).encode("utf-8"), {VERSION_HEADER: str(servable.version)}


class _Inflight:
    """Counts requests being answered, so a shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self) -> None:
        with self.idle:
            self.count += 1

    def __exit__(self, *exc: Any) -> None:
        with self.idle:
            self.count -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is running, False after `timeout` seconds."""
        with self.idle:
            return self.idle.wait_for(lambda: self.count == 0, timeout=timeout)


@tornado.web.stream_request_body
class _Handler(tornado.web.RequestHandler):
    """Every path: streams the body in (bounded), then runs `RestApi.handle` on the worker pool."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def initialize(self, api: RestApi, executor: ThreadPoolExecutor, max_body_bytes: int,
                   inflight: "_Inflight") -> None:  # noqa: D102
        self.api, self.executor, self.max_body_bytes, self.inflight = api, executor, max_body_bytes, inflight
        self.chunks: list[bytes] = []
        self.received = 0

    def prepare(self) -> None:  # noqa: D102
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > 4 * self.max_body_bytes:
            self._reply(413, error_json(f"request body of {length} bytes exceeds the limit of "
                                        f"{self.max_body_bytes} bytes"), {})

    def data_received(self, chunk: bytes) -> None:  # noqa: D102
        self.received += len(chunk)
        if self.received <= self.max_body_bytes:
            self.chunks.append(chunk)
        else:
            self.chunks = []  # counted and dropped: memory stays bounded by the limit

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        for k, v in headers.items():
            self.set_header(k, v)
        self.finish(body)

    async def _serve(self) -> None:
        if self.received > self.max_body_bytes:
            self._reply(413, error_json(f"request body of {self.received} bytes exceeds the limit of "
                                        f"{self.max_body_bytes} bytes"), {})
            return
        body = b"".join(self.chunks)
        loop = asyncio.get_running_loop()
        with self.inflight:
            status, out, headers = await loop.run_in_executor(self.executor, self.api.handle, self.request.method,
                                                              self.request.path, body)
            self._reply(status, out, headers)

    get = post = put = delete = patch = options = _serve


class RestServer:
    """TF Serving's REST API on `host:port` (0 picks a free port), on a tornado IOLoop thread.

    `max_body_bytes` bounds a request body (413 above it); `num_threads` requests run at once, on
    pool threads at nice `compute_nice` (`serving.priority`; the IOLoop's thread keeps its priority).
    """

    def __init__(self, predictor: Predictor, host: str = "127.0.0.1", port: int = 8501,
                 max_body_bytes: int = 4 << 20, num_threads: int = 16, compute_nice: int = 0) -> None:
        if max_body_bytes < 1 or num_threads < 1:
            raise ValueError(f"max_body_bytes and num_threads must be >= 1, got {max_body_bytes}, {num_threads}")
        self.api = RestApi(predictor)
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes
        self.executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="serving-rest",
                                           initializer=lower_thread_priority, initargs=(compute_nice,))
        self._loop: Optional[tornado.ioloop.IOLoop] = None
        self._server: Optional[tornado.httpserver.HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._inflight = _Inflight()

    @property
    def url(self) -> str:
        """`http://host:port` (after `start()`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        """Binds the port (OSError if in use) and serves on a daemon thread; returns the bound port."""
        sockets = tornado.netutil.bind_sockets(self.port, address=self.host, reuse_port=False)
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = tornado.ioloop.IOLoop.current()
            app = tornado.web.Application([(r"/.*", _Handler, {
                "api": self.api, "executor": self.executor, "max_body_bytes": self.max_body_bytes,
                "inflight": self._inflight})])
            self._server = tornado.httpserver.HTTPServer(app, max_body_size=4 * self.max_body_bytes,
                                                         idle_connection_timeout=300)
            self._server.add_sockets(sockets)
            ready.set()
            self._loop.start()
            self._loop.close(all_fds=True)

        self._thread = threading.Thread(target=run, name="serving-rest-loop", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=60):
            raise RuntimeError("the REST server's event loop did not start")
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting connections, lets running requests finish (up to `grace` s), stops the loop."""
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server
        loop.add_callback(server.stop)  # no new connections
        self._inflight.wait_idle(grace)  # running requests finish

        async def close() -> None:
            try:
                await asyncio.wait_for(server.close_all_connections(), timeout=1.0)
            finally:
                loop.stop()

        loop.add_callback(close)
        if self._thread is not None:
            self._thread.join(timeout=grace + 5)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._loop = None
