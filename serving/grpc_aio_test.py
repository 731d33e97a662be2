"""The asyncio gRPC front end: LoopWaker hand-offs, deadlines and stopping (the services run in services_test,
server_test and batching_test once per front end)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from concurrent.futures import Future

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest

import serving.predictor
from serving.batching import BatchingParameters
from serving.grpc_aio import LoopWaker, new_event_loop
from serving.server import ModelServer
from serving.testing import Stubs, request, wait_for

WAIT = 120


def test_loop_waker_hands_results_errors_and_cancellations_to_the_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        waker = LoopWaker(loop)
        futures = [Future() for _ in range(4)]

        async def wrap_all() -> list[asyncio.Future]:
            return [waker.wrap(f) for f in futures]

        waiters = asyncio.run_coroutine_threadsafe(wrap_all(), loop).result(WAIT)
        futures[0].set_result({"y": 1})
        futures[1].set_exception(ValueError("bad row"))
        assert futures[2].cancel()
        futures[3].set_result({"y": 3})

        async def gather() -> list[object]:
            return await asyncio.gather(*waiters, return_exceptions=True)

        got = asyncio.run_coroutine_threadsafe(gather(), loop).result(WAIT)
        assert got[0] == {"y": 1} and got[3] == {"y": 3}
        assert isinstance(got[1], ValueError) and isinstance(got[2], asyncio.CancelledError)

        done = Future()
        done.set_result(7)  # already complete when wrapped: still delivered on the loop

        async def wrap_done() -> object:
            return await waker.wrap(done)

        assert asyncio.run_coroutine_threadsafe(wrap_done(), loop).result(WAIT) == 7
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


def test_unknown_front_end_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="grpc_frontend"):
        ModelServer(base, port=0, grpc_frontend="nope")


def test_the_default_front_end_is_aio(base: str) -> None:
    assert ModelServer(base, port=0).grpc_frontend == "aio"
    assert ModelServer(base, port=0, batching=BatchingParameters()).grpc_frontend == "aio"
    assert ModelServer(base, port=0, grpc_frontend="sync").grpc_frontend == "sync"


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto is uvloop when it is installed (a dependency here), else asyncio's loop; uvloop without it fails."""
    loops = []
    try:
        loop, kind = new_event_loop("asyncio")
        loops.append(loop)
        assert kind == "asyncio" and type(loop).__module__.startswith("asyncio")
        loop, kind = new_event_loop("auto")
        loops.append(loop)
        installed = importlib.util.find_spec("uvloop") is not None
        assert kind == ("uvloop" if installed else "asyncio")
        assert type(loop).__module__.startswith(kind)
        with pytest.raises(ValueError, match="event loop must be one of"):
            new_event_loop("trio")
        monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: import fails
        loop, kind = new_event_loop("auto")
        loops.append(loop)
        assert kind == "asyncio"
        with pytest.raises(RuntimeError, match="needs the uvloop package"):
            new_event_loop("uvloop")
    finally:
        for loop in loops:
            loop.close()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_aio_front_end_serves_on_either_event_loop(base: str, event_loop: str) -> None:
    if event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    with pytest.raises(ValueError, match="grpc_event_loop"):
        ModelServer(base, port=0, grpc_frontend="aio", grpc_event_loop="trio")
    s = ModelServer(base, port=0, grpc_frontend="aio", grpc_event_loop=event_loop,
                    batching=BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1))
    s.start()
    st = Stubs(s.port)
    try:
        assert s.grpc_event_loop == event_loop
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        got = st.predict.Predict(request(x=x, k=np.array([1, 2], np.int32)), timeout=WAIT)
        assert got.model_spec.version.value == 1 and set(got.outputs)
        with pytest.raises(grpc.RpcError) as e:
            st.predict.Predict(request(x=np.ones((1, 3), np.int32)), timeout=WAIT)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        st.channel.close()
        s.stop(grace=1.0)


def test_aio_deadline_and_graceful_stop(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request past its deadline gets DEADLINE_EXCEEDED and its rows are not computed; stop lets a
    request in flight finish."""
    started, release = threading.Event(), threading.Event()
    real = serving.predictor.run_signature
    rows: list[int] = []

    def blocking(key, signature, inputs):  # type: ignore[no-untyped-def]
        rows.append(len(inputs["x"]))
        started.set()
        assert release.wait(WAIT)
        return real(key, signature, inputs)

    monkeypatch.setattr(serving.predictor, "run_signature", blocking)
    s = ModelServer(base, port=0, grpc_frontend="aio",
                    batching=BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1))
    s.start()
    st = Stubs(s.port)
    try:
        first = st.predict.Predict.future(request(x=np.ones((4, 3), np.float32), k=np.ones(4, np.int32)),
                                          timeout=WAIT)
        assert started.wait(WAIT)  # the only run slot is busy: the next request waits in the queue
        with pytest.raises(grpc.RpcError) as e:
            st.predict.Predict(request(), timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        def abandoned() -> bool:  # the server cancelled the late request's coroutine, and with it its task
            with s.scheduler._cond:
                tasks = [t for q in s.scheduler._queues.values() for b in q.batches for t in b.tasks]
            return len(tasks) == 1 and tasks[0].future.cancelled()

        wait_for(abandoned, timeout=WAIT, what="the late request's task cancelled")
        stopper = threading.Thread(target=s.stop, args=(WAIT,))
        stopper.start()  # waits for the request in flight
        release.set()
        assert first.result(timeout=WAIT).model_spec.version.value == 1
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert rows == [4]  # the request that gave up was not run
    finally:
        release.set()
        st.channel.close()
        s.stop(grace=1.0)
