"""The gRPC front end on asyncio (`grpc.aio`): TF Serving's services as coroutines on one event-loop thread.

The sync front end (`grpc.server` with a thread pool) hands every RPC to a pool
thread, which then blocks for the model call or its batch. Here the RPCs run as
coroutines on one event loop, on its own thread, next to the REST server's loop:
a Predict request is decoded and checked on the loop; with batching on, a
batchable request is enqueued with `BatchScheduler.submit` and the coroutine
awaits the batch's Future (the scheduler's threads run the batches), so a
waiting request holds no thread; a request that runs unbatched goes to a pool
of `num_threads` threads and is awaited. Status codes, messages and limits are
those of `serving.services`. The default front end (`--grpc_frontend aio`), on
uvloop when installed: at 1M items with batching it served 1.08-1.42x the requests
per second of the sync front end (docs/benchmarks.md, "Request batching", runs L to T).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_manager import ModelManager
from serving.predictor import Predictor
from serving.priority import lower_thread_priority
from serving.services import (
    RELOAD_UNIMPLEMENTED,
    metadata_response,
    predict_response,
    unimplemented_message,
)
from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError

_log = logging.getLogger("learn_tf.serving")


def _rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turns RequestError (and unexpected exceptions, as INTERNAL) into gRPC status codes."""

    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except RequestError as e:
            await context.abort(e.code, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the server stays up whatever a request does
            if isinstance(e, grpc.aio.AbortError):
                raise
            _log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"[:MAX_MESSAGE_CHARS])

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def new_event_loop(kind: str = "auto") -> tuple[asyncio.AbstractEventLoop, str]:
    """A new event loop and its kind: `uvloop` (libuv, in C), `asyncio` (the standard library's), or
    `auto`: uvloop when it is installed (a dependency on Linux and macOS), else asyncio.

    At 1M items with batching, uvloop served 1.05-1.20x the requests per second of asyncio's loop,
    with 8-14% less server CPU per request (docs/benchmarks.md, "Request batching", runs K and L).

    Raises:
      ValueError: an unknown kind. RuntimeError: `uvloop` asked for and not installed.
    """
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {kind!r}")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("the uvloop event loop needs the uvloop package (pip install uvloop)") from None
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


class LoopWaker:
    """Hands the results of `concurrent.futures.Future`s to awaitables on one event loop, waking it once per burst.

    `asyncio.wrap_future` wakes the loop once per future; the futures of one batch complete
    together, so here the first completion schedules one call on the loop and the others join it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future, Future]] = []
        self._scheduled = False

    def wrap(self, future: Future) -> asyncio.Future:
        """(On the loop.) An asyncio Future with `future`'s result or exception once it completes."""
        waiter = self._loop.create_future()
        future.add_done_callback(functools.partial(self._done, waiter))
        return waiter

    def _done(self, waiter: asyncio.Future, future: Future) -> None:
        with self._lock:
            self._pending.append((waiter, future))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the server has stopped, nobody awaits
            pass

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        for waiter, future in pending:
            if waiter.done():
                continue
            if future.cancelled():
                waiter.cancel()
            elif future.exception() is not None:
                waiter.set_exception(future.exception())
            else:
                waiter.set_result(future.result())


class AsyncPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` as coroutines: Predict and GetModelMetadata; the rest UNIMPLEMENTED."""

    def __init__(self, predictor: Predictor, executor: ThreadPoolExecutor, waker: "LoopWaker") -> None:
        self._predictor = predictor
        self._models = predictor.models
        self._executor = executor
        self._waker = waker

    @_rpc
    async def Predict(self, request: predict_pb2.PredictRequest,
                      context: grpc.aio.ServicerContext) -> predict_pb2.PredictResponse:
        p = self._predictor
        loop = asyncio.get_running_loop()
        servable, key, signature, arrays, wanted = p.decode_proto(request)
        future = p.submit(servable, key, signature, arrays, shapes_checked=True)
        if future is None:
            outputs = await loop.run_in_executor(self._executor, functools.partial(
                p.run, servable, key, signature, arrays, wanted, shapes_checked=True))
        else:
            waiter = self._waker.wrap(future)
            try:
                every = await waiter
            except asyncio.CancelledError:  # the client went away or its deadline passed
                future.cancel()
                raise
            outputs = {n: every[n] for n in wanted}
        return predict_response(servable, key, outputs)

    @_rpc
    async def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                               context: grpc.aio.ServicerContext) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return metadata_response(self._models, request)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("Classify"))

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("Regress"))

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented_message("MultiInference"))


class AsyncModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService` as coroutines: GetModelStatus; HandleReloadConfigRequest is UNIMPLEMENTED."""

    def __init__(self, models: ModelManager) -> None:
        self._models = models

    @_rpc
    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                             context: grpc.aio.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
        return self._models.status(request.model_spec)

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, RELOAD_UNIMPLEMENTED)


class AioGrpcServer:
    """A `grpc.aio` server with TF Serving's services, run on an event loop of its own thread.

    Mirrors the parts of `grpc.Server` that `serving.server.ModelServer` uses: `add_insecure_port`
    (binds, returns the port; 0 when binding failed), `start()`, and `stop(grace)`, which waits for
    the RPCs in flight (up to `grace` seconds) and ends the loop's thread. `num_threads` sizes the
    pool that runs unbatched model calls, at nice `compute_nice` (`serving.priority`; the loop's
    thread keeps its priority); `event_loop` picks the loop (`new_event_loop`; the kind used is
    `self.event_loop`).
    """

    def __init__(self, predictor: Predictor, options: Sequence[tuple[str, Any]], num_threads: int,
                 event_loop: str = "auto", compute_nice: int = 0) -> None:
        self._executor = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="serving-rpc",
                                            initializer=lower_thread_priority, initargs=(compute_nice,))
        self._loop, self.event_loop = new_event_loop(event_loop)
        self._thread = threading.Thread(target=self._run_loop, name="serving-grpc-loop", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server = self._call(self._create(predictor, list(options)))
        self._stopped = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro: Awaitable[Any]) -> Any:
        """Runs `coro` on the server's loop and returns its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _create(self, predictor: Predictor, options: list[tuple[str, Any]]) -> grpc.aio.Server:
        server = grpc.aio.server(options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            AsyncPredictionService(predictor, self._executor, LoopWaker(self._loop)), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(AsyncModelService(predictor.models), server)
        return server

    def add_insecure_port(self, address: str) -> int:
        """Binds `address` (`host:port`, port 0 picks one); returns the bound port (0: not bound).

        Raises:
          RuntimeError: gRPC could not bind the address.
        """

        async def bind() -> int:
            return self._server.add_insecure_port(address)

        return self._call(bind())

    def start(self) -> None:
        """Starts serving the bound port."""
        self._call(self._server.start())

    def stop(self, grace: Optional[float]) -> None:
        """Refuses new RPCs, lets those in flight finish for up to `grace` seconds, then ends the loop thread."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._call(self._server.stop(grace))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._executor.shutdown(wait=False, cancel_futures=True)
