"""A local model server speaking TF Serving's gRPC and REST APIs (`learn serve`).

Implements `tensorflow.serving.PredictionService` (`Predict`, `GetModelMetadata`)
and `tensorflow.serving.ModelService` (`GetModelStatus`) from the
tensorflow-serving-api protos, and TF Serving's REST API on a second port, so
unmodified TF Serving clients work against it where the `tensorflow_model_server`
binary cannot be installed.

This module assembles the server: the gRPC server with its options and limits,
the REST server (`serving.rest`), the optional batch scheduler
(`serving.batching`), the lifecycle and signal handling, and the command line.
The models, their versions, labels and polling live in `serving.model_manager`
(config in `serving.model_config`); one Predict path for both APIs in
`serving.predictor`; request decoding, validation and status codes in
`serving.tensor_codec` and `serving.json_codec`; the servicers in `serving.services`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from typing import Any, Callable, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from learn_tf.config import ServingConfig
from serving.batching import BatchingParameters, BatchScheduler, read_batching_parameters
from serving.grpc_aio import EVENT_LOOPS, AioGrpcServer
from serving.model_manager import ModelManager
from serving.predictor import Predictor
from serving.priority import DEFAULT_COMPUTE_NICE, MAX_NICE, resolve_nice, start_tensorflow_at
from serving.priority import supported as supports_nice
from serving.rest import RestServer
from serving.services import ModelService, PredictionService

_log = logging.getLogger("learn_tf.serving")

# sync: grpc.server, a pool thread per RPC; aio: grpc.aio, RPCs as coroutines on one event loop (serving.grpc_aio).
GRPC_FRONTENDS = ("sync", "aio")


def _ensure_log_handler() -> None:
    """Logs go to stderr with timestamps unless the application configured the logger itself."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s serving: %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


class ModelServer:
    """Serves the SavedModels of a TF Serving model base over TF Serving's gRPC API.

    `models_config` is a text-format `ModelServerConfig` (re-read while serving); without it every
    subdirectory of `model_base` is a model (new subdirectories are picked up while running).
    `port=0` binds a free port; `start()` returns the bound gRPC port. `rest_port` serves TF
    Serving's REST API on the same models (None: no REST; 0: a free port). `batching` (parameters,
    e.g. from `read_batching_parameters`) turns on server-side batching for both APIs;
    `batching_early_run` lets a lone request compute its row during its batch's wait (see
    `serving.batching.BatchScheduler`). `grpc_frontend` is `aio` (default; `grpc_event_loop` picks
    its loop, see `serving.grpc_aio.new_event_loop`) or `sync`. `compute_nice`: the threads that run
    models (batch threads, the pools of unbatched and REST calls, the model poller, TensorFlow's
    pools when the server starts TensorFlow) run at this nice value, below the front end's event
    loops (`serving.priority`; None: 10 with batching, 0 without; 0: all alike; the sync front end's
    RPC threads, which decode, run and answer, keep the default). `models` is the `ModelManager`
    that loads, polls and swaps versions.
    """

    def __init__(self, model_base: str, models_config: Optional[str] = None, host: str = "127.0.0.1",
                 port: int = 8500, num_threads: int = 16, max_message_bytes: int = 4 << 20,
                 poll_seconds: float = 2.0, rest_port: Optional[int] = None,
                 batching: Optional[BatchingParameters] = None, batching_early_run: bool = True,
                 grpc_frontend: str = "aio", grpc_event_loop: str = "auto",
                 compute_nice: Optional[int] = None) -> None:
        _ensure_log_handler()
        self.compute_nice = resolve_nice(compute_nice, batching is not None)
        if grpc_frontend not in GRPC_FRONTENDS:
            raise ValueError(f"grpc_frontend must be one of {', '.join(GRPC_FRONTENDS)}, got {grpc_frontend!r}")
        if grpc_event_loop not in EVENT_LOOPS:
            raise ValueError(f"grpc_event_loop must be one of {', '.join(EVENT_LOOPS)}, got {grpc_event_loop!r}")
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
        self.models = ModelManager(model_base, models_config=models_config, max_elements=self.max_elements)
        self.batching = batching
        self.batching_early_run = batching_early_run
        self.grpc_frontend = grpc_frontend
        self.grpc_event_loop = grpc_event_loop  # the aio front end's loop; after start(), the kind in use
        self.scheduler: Optional[BatchScheduler] = None
        self.predictor = Predictor(self.models)
        self.rest: Optional[RestServer] = None
        if rest_port is not None:
            self.rest = RestServer(self.predictor, host=host, port=rest_port, max_body_bytes=max_message_bytes,
                                   num_threads=num_threads, compute_nice=self.compute_nice)
        self._server: Optional[Any] = None  # grpc.Server, or serving.grpc_aio.AioGrpcServer
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def address(self) -> str:
        """`host:port` the server is bound to (after `start()`)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def model_names(self) -> list[str]:
        """Names of the configured (or discovered) models."""
        return self.models.model_names

    def start(self) -> int:
        """Binds host:port, loads every model's latest version, starts serving and polling; returns the port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        start_tensorflow_at(self.compute_nice)
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not silently shared
        ]
        if self.grpc_frontend == "aio":
            server: Any = AioGrpcServer(self.predictor, options, self.num_threads, event_loop=self.grpc_event_loop,
                                        compute_nice=self.compute_nice)
            self.grpc_event_loop = server.event_loop
        else:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.num_threads,
                                                            thread_name_prefix="serving-rpc"), options=options)
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.predictor),
                                                                                server)
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.models), server)
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        try:
            bound = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError as e:
            server.stop(0)
            raise OSError(f"cannot bind {host}:{self.port}: {e}") from e
        if not bound:
            server.stop(0)
            raise OSError(f"cannot bind {host}:{self.port}")
        self.port = bound
        try:
            if self.rest is not None:
                self.rest.start()  # both ports are bound first, so a port in use fails before models load
            self.models.poll()
        except BaseException:
            server.stop(0)
            if self.rest is not None:
                self.rest.stop(0)
            raise
        if self.batching is not None:
            self.scheduler = self.predictor.scheduler = BatchScheduler(self.batching, early_run=self.batching_early_run,
                                                                       thread_nice=self.compute_nice)
        server.start()
        self._server = server
        self.models.start_polling(self.poll_seconds, thread_nice=self.compute_nice)
        _log.info("serving %s on %s%s (gRPC front end %s, threads %d at nice %d, max message %d bytes, poll every "
                  "%.1f s, batching %s)", ", ".join(self.model_names) or "no models", self.address,
                  f" and REST on {self.rest.url}" if self.rest else "",
                  self.grpc_frontend + (f" on {self.grpc_event_loop}" if self.grpc_frontend == "aio" else ""),
                  self.num_threads, self.compute_nice if supports_nice() else 0,
                  self.max_message_bytes, self.poll_seconds, self.batching or "off")
        return bound

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish for up to `grace` seconds, stops polling."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self.models.stop_polling()
            if self.rest is not None:
                self.rest.stop(grace)
            if self._server is not None:
                stopped = self._server.stop(grace)  # the aio front end returns once stopped
                if stopped is not None:
                    stopped.wait()
            if self.scheduler is not None:
                self.scheduler.stop(timeout=grace)
            self.models.join_poller(timeout=max(grace, 1.0))  # a load in progress may still finish (daemon)
            self._stopped.set()
            _log.info("server on %s stopped", self.address)

    def wait(self) -> None:
        """Blocks until the server has been stopped (by `stop()` or a signal handler)."""
        if self._server is None:
            raise RuntimeError("server not started")
        self._stopped.wait()


def serve_main(model_base: str, models_config: Optional[str] = None, host: str = "127.0.0.1", port: int = 8500,
               num_threads: int = 16, max_message_bytes: int = 4 << 20, poll_seconds: float = 2.0,
               grace: float = 5.0, on_start: Optional[Callable[[ModelServer], None]] = None,
               rest_port: Optional[int] = None, batching: Optional[BatchingParameters] = None,
               batching_early_run: bool = True, grpc_frontend: str = "aio", grpc_event_loop: str = "auto",
               compute_nice: Optional[int] = None) -> int:
    """Runs a ModelServer until SIGINT/SIGTERM, then shuts down gracefully; returns the exit code (0).

    Prints `serving <models> on <host>:<port>` to stdout once requests are accepted, then
    `REST API on http://<host>:<rest port>` when REST is on.
    """
    server = ModelServer(model_base, models_config=models_config, host=host, port=port, num_threads=num_threads,
                         max_message_bytes=max_message_bytes, poll_seconds=poll_seconds, rest_port=rest_port,
                         batching=batching, batching_early_run=batching_early_run, grpc_frontend=grpc_frontend,
                         grpc_event_loop=grpc_event_loop, compute_nice=compute_nice)
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
        if server.rest is not None:
            print(f"REST API on {server.rest.url}", flush=True)
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
    p.add_argument("--port", type=int, default=8500, help="gRPC port; 0 picks a free port")
    p.add_argument("--rest_api_port", type=int, default=8501,
                   help="REST API port (TF Serving's default 8501); 0 picks a free port, -1 turns REST off")
    p.add_argument("--enable_batching", action="store_true", help="batch concurrent requests server-side")
    p.add_argument("--batching_parameters_file", default=None,
                   help="text-format BatchingParameters (default: <model_base>/batching_parameters.txt if it "
                        "exists, else TF's defaults)")
    p.add_argument("--no_batching_early_run", action="store_true",
                   help="with batching, a lone request waits idle for its batch's timeout instead of computing "
                        "its row meanwhile (see serving.batching.BatchScheduler)")
    p.add_argument("--grpc_frontend", choices=GRPC_FRONTENDS, default="aio",
                   help="aio (default): grpc.aio, RPCs as coroutines on one event loop, batched requests awaiting "
                        "their batch (serving.grpc_aio); sync: grpc.server, every RPC on a pool thread")
    p.add_argument("--grpc_event_loop", choices=EVENT_LOOPS, default="auto",
                   help="the aio front end's event loop: auto (default: uvloop when installed, else asyncio), "
                        "uvloop, or asyncio")
    p.add_argument("--compute_nice", type=int, default=None, choices=range(MAX_NICE + 1),
                   metavar=f"0..{MAX_NICE}",
                   help=f"nice value of the threads that run models, so the front end's event loops win the CPU "
                        f"from them (default: {DEFAULT_COMPUTE_NICE} with batching, 0 without; serving.priority; "
                        "Linux)")
    p.add_argument("--num_threads", type=int, default=16)
    p.add_argument("--max_message_bytes", type=int, default=4 << 20)
    p.add_argument("--poll_seconds", type=float, default=2.0)
    p.add_argument("--grace", type=float, default=5.0)
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads of one op (TF Serving's flag; 0: TensorFlow's choice, the number of cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="threads running independent ops (TF Serving's flag; 0: TensorFlow's choice)")
    args = p.parse_args(argv)
    set_tensorflow_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    config = args.models_config
    if config is None and os.path.exists(os.path.join(args.model_base, "models.config")):
        config = os.path.join(args.model_base, "models.config")
    return serve_main(args.model_base, models_config=config, host=args.host, port=args.port,
                      num_threads=args.num_threads, max_message_bytes=args.max_message_bytes,
                      poll_seconds=args.poll_seconds, grace=args.grace,
                      rest_port=None if args.rest_api_port < 0 else args.rest_api_port,
                      batching=batching_from_flags(args.model_base, args.enable_batching,
                                                   args.batching_parameters_file),
                      batching_early_run=not args.no_batching_early_run, grpc_frontend=args.grpc_frontend,
                      grpc_event_loop=args.grpc_event_loop, compute_nice=args.compute_nice)


def set_tensorflow_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Sizes TensorFlow's intra-op and inter-op thread pools (0 leaves TensorFlow's default).

    Must run before TensorFlow executes anything in the process (as TF Serving's
    `--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism`, it is a process setting).

    Raises:
      ValueError: a negative count.
      RuntimeError: TensorFlow already started its thread pools with other sizes.
    """
    for name, n in (("intra_op", intra_op), ("inter_op", inter_op)):
        if n < 0:
            raise ValueError(f"tensorflow {name} parallelism must be >= 0, got {n}")
    if intra_op and tf.config.threading.get_intra_op_parallelism_threads() != intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op and tf.config.threading.get_inter_op_parallelism_threads() != inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    if intra_op or inter_op:
        _ensure_log_handler()
        _log.info("TensorFlow threads: intra-op %d, inter-op %d", tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads())


def batching_from_flags(model_base: str, enable: bool, parameters_file: Optional[str]) -> Optional[BatchingParameters]:
    """The batching parameters `--enable_batching [--batching_parameters_file F]` ask for (None: off).

    Without a file, `<model_base>/batching_parameters.txt` is used when it exists, else TF's defaults.
    """
    if not enable:
        if parameters_file:
            raise ValueError("--batching_parameters_file needs --enable_batching")
        return None
    if parameters_file is None:
        default = os.path.join(model_base, "batching_parameters.txt")
        parameters_file = default if os.path.exists(default) else None
    return read_batching_parameters(parameters_file) if parameters_file else BatchingParameters()


BATCHING_KEYS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")


def batching_from_config(model_base: str, serving: ServingConfig, enable: Optional[bool] = None,
                         parameters_file: Optional[str] = None) -> Optional[BatchingParameters]:
    """The batching parameters of the config's serving section, command-line flags overriding it (None: off).

    `enable` (`--enable-batching` / `--no-enable-batching`, None: not given) overrides
    `serving.enable_batching`, `parameters_file` overrides `serving.batching_parameters_file`; the
    parameters are read as `batching_from_flags` reads them, then every serving key of
    `BATCHING_KEYS` that is set replaces the file's value.

    Raises:
      ValueError: a parameters file without batching, or a bad file or value.
    """
    on = serving.enable_batching if enable is None else enable
    file = parameters_file if parameters_file is not None else serving.batching_parameters_file
    if not on:
        if parameters_file:
            raise ValueError("--batching-parameters-file needs batching (--enable-batching or "
                             "serving.enable_batching: true)")
        return None
    params = batching_from_flags(model_base, True, file)
    changes = {k: getattr(serving, k) for k in BATCHING_KEYS if getattr(serving, k) is not None}
    return dataclasses.replace(params, **changes) if changes else params


if __name__ == "__main__":
    sys.exit(main())
