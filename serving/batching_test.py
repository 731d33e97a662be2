"""Server-side batching: parameters file, merge and split, full queue, isolation of bad requests, both APIs.

No test depends on timing (one checks only that a lone request waits at least its timeout): batches
close because they are full (timeouts are set far above any run time) and waits are on events and
futures with generous deadlines.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf

import serving.predictor
from serving.batching import BatchingParameters, BatchScheduler, read_batching_parameters
from serving.layout import write_models_config
from serving.rest import http_status
from serving.servable import load_servable
from serving.server import ModelServer, batching_from_flags
from serving.tensor_codec import RequestError, run_signature
from serving.testing import MODEL, Stubs, request, wait_for

WAIT = 120  # seconds: generous deadlines for a busy machine; nothing sleeps


def test_read_batching_parameters(tmp_path: Any) -> None:
    write_models_config(str(tmp_path), names=["a"])  # the exporter's file
    p = read_batching_parameters(str(tmp_path / "batching_parameters.txt"))
    assert p == BatchingParameters(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=256,
                                   num_batch_threads=2)
    assert batching_from_flags(str(tmp_path), True, None) == p
    assert batching_from_flags(str(tmp_path), False, None) is None
    bad = tmp_path / "bad.txt"
    for text, match in [("max_batch_size { value: x }", "integer"), ("frobnicate { value: 1 }", "unknown"),
                        ("pad_variable_length_inputs: true", "not supported"), ("max_batch_size { value: 0 }", ">= 1")]:
        bad.write_text(text + "\n")
        with pytest.raises(ValueError, match=match):
            read_batching_parameters(str(bad))


def _recording_run(calls: list) -> Any:
    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        calls.append(len(x))
        if (x > 100).any():
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "x must be <= 100")
        return {"y": x * 2, "rows": np.full(len(x), len(x))}
    return run


def test_concurrent_tasks_merge_into_one_call_and_split_back() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=600_000_000, num_batch_threads=2))
    calls: list[int] = []
    run = _recording_run(calls)
    try:
        futures = [s.submit("q", run, {"x": np.array([i, i + 10])}) for i in range(4)]  # 8 rows: full
        results = [f.result(timeout=WAIT) for f in futures]
        assert calls == [8]
        for i, r in enumerate(results):
            np.testing.assert_array_equal(r["y"], [2 * i, 2 * (i + 10)])
            np.testing.assert_array_equal(r["rows"], [8, 8])
        # A bad row fails only its own request: the merged batch is re-run request by request.
        calls.clear()
        futures = [s.submit("q", run, {"x": np.array([v, v])}) for v in (1, 500, 3, 4)]
        assert futures[0].result(timeout=WAIT)["y"].tolist() == [2, 2]
        with pytest.raises(RequestError, match="x must be <= 100"):
            futures[1].result(timeout=WAIT)
        assert [f.result(timeout=WAIT)["y"][0] for f in futures[2:]] == [6, 8]
        assert calls == [8, 2, 2, 2, 2] and s.stats["split_retries"] == 1
        with pytest.raises(RequestError, match="larger than maximum input batch size 8") as e:
            s.submit("q", run, {"x": np.zeros(9)})
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        s.stop()


def test_timeout_closes_a_partial_batch() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=100, batch_timeout_micros=1000, num_batch_threads=1))
    try:
        calls: list[int] = []
        assert s.submit("q", _recording_run(calls), {"x": np.array([1])}).result(timeout=WAIT)["y"].tolist() == [2]
        assert calls == [1]
    finally:
        s.stop()


def test_full_queue_is_unavailable_and_nothing_hangs() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1))
    started, release = threading.Event(), threading.Event()

    def blocking(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.set()
        assert release.wait(WAIT)
        return {"y": inputs["x"]}

    try:
        a = s.submit("q", blocking, {"x": np.array([1])})
        assert started.wait(WAIT)  # the only batch thread is busy with a
        b = s.submit("q", blocking, {"x": np.array([2])})  # one enqueued batch: the queue is full
        with pytest.raises(RequestError, match="batch scheduling queue to which this task was submitted is full") as e:
            s.submit("q", blocking, {"x": np.array([3])})
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and http_status(e.value.code) == 503
        other = s.submit("other queue", blocking, {"x": np.array([4])})  # queues are per model/signature
        release.set()
        assert [f.result(timeout=WAIT)["y"][0] for f in (a, b, other)] == [1, 2, 4]
    finally:
        release.set()
        s.stop()
    with pytest.raises(RequestError) as e:
        s.submit("q", blocking, {"x": np.array([1])})
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.fixture(params=["sync", "aio"])
def batching_server(base: str, request: pytest.FixtureRequest) -> Any:
    s = ModelServer(base, port=0, rest_port=0, num_threads=8, grpc_frontend=request.param,
                    batching=BatchingParameters(max_batch_size=4, batch_timeout_micros=600_000_000,
                                                max_enqueued_batches=4, num_batch_threads=1))
    s.start()
    yield s
    s.stop(grace=1.0)


def test_grpc_and_rest_requests_share_batches(batching_server: ModelServer) -> None:
    st = Stubs(batching_server.port)
    url = batching_server.rest.url

    def grpc_call(v: float) -> float:
        r = st.predict.Predict(request(x=np.array([[v, 0, 0]], np.float32)), timeout=WAIT)
        return float(tf.make_ndarray(r.outputs["y"])[0])

    def rest_call(v: float) -> float:
        r = requests.post(f"{url}/v1/models/{MODEL}:predict", timeout=WAIT,
                          data=json.dumps({"instances": [{"x": [v, 0, 0], "k": 1}]}))
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]["y"]

    before = dict(batching_server.scheduler.stats)
    with ThreadPoolExecutor(4) as pool:  # 4 one-row requests fill one batch of max_batch_size 4
        futures = [pool.submit(grpc_call if i % 2 else rest_call, float(i + 1)) for i in range(4)]
        assert [f.result(timeout=WAIT) for f in futures] == [1.0, 2.0, 3.0, 4.0]
    stats = batching_server.scheduler.stats
    assert stats["batches"] - before.get("batches", 0) == 1 and stats["tasks"] - before.get("tasks", 0) == 4
    st.channel.close()


def test_full_queue_over_both_apis(batching_server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    real = serving.predictor.run_signature

    def blocking(*args: Any) -> Any:
        started.set()
        assert release.wait(WAIT)
        return real(*args)

    monkeypatch.setattr(serving.predictor, "run_signature", blocking)
    st = Stubs(batching_server.port)
    url = batching_server.rest.url
    four = np.ones((4, 3), np.float32)  # one full batch per request
    pool = ThreadPoolExecutor(8)
    try:
        running = pool.submit(st.predict.Predict, request(x=four, k=np.ones(4, np.int32)), timeout=WAIT)
        assert started.wait(WAIT)
        queued = [pool.submit(st.predict.Predict, request(x=four, k=np.ones(4, np.int32)), timeout=WAIT)
                  for _ in range(4)]  # max_enqueued_batches 4
        sched = batching_server.scheduler

        def queue_full() -> bool:
            with sched._cond:
                return sum(len(q.batches) for q in sched._queues.values()) == 4

        wait_for(queue_full, timeout=WAIT, what="4 batches enqueued")
        with pytest.raises(grpc.RpcError) as e:
            st.predict.Predict(request(x=four, k=np.ones(4, np.int32)), timeout=WAIT)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "is full" in e.value.details()
        r = requests.post(f"{url}/v1/models/{MODEL}:predict", timeout=WAIT,
                          data=json.dumps({"inputs": {"x": four.tolist(), "k": [1] * 4}}))
        assert r.status_code == 503 and "is full" in r.json()["error"]
        release.set()
        for f in [running, *queued]:
            assert f.result(timeout=WAIT).model_spec.version.value == 1
    finally:
        release.set()
        pool.shutdown(wait=True)
        st.channel.close()


def test_batching_flag_reads_the_base_file(base: str) -> None:
    assert not os.path.exists(os.path.join(base, "batching_parameters.txt"))
    assert batching_from_flags(base, True, None) == BatchingParameters()


def test_a_batch_runs_on_the_thread_of_its_first_caller() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=600_000_000, num_batch_threads=1))
    threads: list[str] = []
    calls: list[int] = []
    record = _recording_run(calls)

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.current_thread().name)
        return record(inputs)

    def call(v: int) -> tuple[str, list[int]]:
        out = s.execute("q", run, {"x": np.array([v])}, timeout=WAIT)
        return threading.current_thread().name, out["y"].tolist()

    try:
        with ThreadPoolExecutor(4, thread_name_prefix="caller") as pool:
            futures = [pool.submit(call, v) for v in (1, 2, 3, 4)]  # 4 one-row tasks fill one batch
            results = [f.result(timeout=WAIT) for f in futures]
        assert calls == [4] and [r[1] for r in results] == [[2], [4], [6], [8]]
        assert len(threads) == 1 and threads[0].startswith("caller")  # not handed to a scheduler thread
        assert threads[0] == results[0][0]  # the caller that opened the batch ran it
        assert s.stats["batches"] == 1 and s.stats["tasks"] == 4
    finally:
        s.stop()


def test_a_lone_task_runs_on_its_own_inputs() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1))
    seen: list[Mapping[str, np.ndarray]] = []

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs)
        return {"y": inputs["x"] + 1}

    try:
        inputs = {"x": np.array([1, 2])}
        out = s.execute("q", run, inputs, timeout=WAIT)
        assert seen[0] is inputs and out["y"].tolist() == [2, 3]  # not merged, not split
    finally:
        s.stop()


def test_split_outputs_are_views_of_the_batch_outputs() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=600_000_000, num_batch_threads=1))
    produced: list[np.ndarray] = []

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        produced.append(inputs["x"] * 10)
        return {"y": produced[-1]}

    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(s.execute, "q", run, {"x": np.array([v, v])}, WAIT) for v in (1, 2)]
            outs = [f.result(timeout=WAIT)["y"] for f in futures]
        assert len(produced) == 1 and sorted(o.tolist() for o in outs) == [[10, 10], [20, 20]]
        assert all(np.shares_memory(o, produced[0]) for o in outs)
    finally:
        s.stop()


def test_at_most_num_batch_threads_batches_run_at_once() -> None:
    for threads in (1, 2):
        s = BatchScheduler(BatchingParameters(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=threads,
                                              max_enqueued_batches=100))
        lock = threading.Lock()
        running, peak = [0], [0]
        both = threading.Barrier(threads, timeout=WAIT)

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            if threads == 2 and inputs["x"][0] < 2:
                both.wait()  # the first two batches (queues 0 and 1) must run side by side
            with lock:
                running[0] -= 1
            return {"y": inputs["x"]}

        try:
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(s.execute, f"q{i}", run, {"x": np.array([i])}, WAIT) for i in range(8)]
                assert sorted(int(f.result(timeout=WAIT)["y"][0]) for f in futures) == list(range(8))
            assert peak[0] == threads
        finally:
            s.stop()


def test_a_caller_past_its_deadline_leaves_the_batch_and_hands_on_the_lead() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=3, batch_timeout_micros=600_000_000, num_batch_threads=1))
    calls: list[int] = []
    run = _recording_run(calls)
    started, release = threading.Event(), threading.Event()

    def blocking(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.set()
        assert release.wait(WAIT)
        return {"y": inputs["x"]}

    def tasks_in_q() -> int:
        with s._cond:
            q = s._queues.get("q")
            return len(q.batches[0].tasks) if q and q.batches else 0

    pool = ThreadPoolExecutor(6)
    try:
        busy = pool.submit(s.execute, "other", blocking, {"x": np.array([0, 0, 0])}, WAIT)  # holds the only slot
        assert started.wait(WAIT)
        first = pool.submit(s.execute, "q", run, {"x": np.array([1])}, 3.0)  # leads q's batch, then times out
        wait_for(lambda: tasks_in_q() == 1, timeout=WAIT, what="the first task enqueued")
        second = pool.submit(s.execute, "q", run, {"x": np.array([2])}, WAIT)
        wait_for(lambda: tasks_in_q() == 2, timeout=WAIT, what="the second task enqueued")
        with pytest.raises(RequestError, match="deadline") as e:
            first.result(timeout=WAIT)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert tasks_in_q() == 1  # its row left the batch; the second caller leads it now
        with s._cond:
            batch = s._queues["q"].batches[0]
            assert batch.driver is batch.tasks[0] and batch.tasks[0].inputs["x"][0] == 2
        rest = [pool.submit(s.execute, "q", run, {"x": np.array([v])}, WAIT) for v in (3, 4)]  # full: 3 rows
        release.set()
        assert busy.result(timeout=WAIT)["y"].tolist() == [0, 0, 0]
        assert [f.result(timeout=WAIT)["y"][0] for f in (second, *rest)] == [4, 6, 8]
        assert calls == [3]  # the batch ran without the row of the caller that left
    finally:
        release.set()
        pool.shutdown(wait=True)
        s.stop()


def test_stop_runs_the_waiting_batches_then_refuses() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=600_000_000, num_batch_threads=1))
    calls: list[int] = []
    run = _recording_run(calls)
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(s.execute, "q", run, {"x": np.array([5])}, WAIT)
        detached = s.submit("r", run, {"x": np.array([6])})

        def enqueued() -> bool:
            with s._cond:
                return "q" in s._queues and "r" in s._queues

        wait_for(enqueued, timeout=WAIT, what="both tasks enqueued")
        s.stop(timeout=WAIT)
        assert waiting.result(timeout=WAIT)["y"].tolist() == [10]
        assert detached.result(timeout=WAIT)["y"].tolist() == [12]
    with pytest.raises(RequestError) as e:
        s.execute("q", run, {"x": np.array([1])})
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_server_batches_run_on_request_threads_of_the_real_model(batching_server: ModelServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = serving.predictor.run_signature
    threads: list[str] = []

    def observed(*args: Any) -> Any:  # the real signature, with the thread that runs it recorded
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(serving.predictor, "run_signature", observed)
    st = Stubs(batching_server.port)
    try:
        def call(v: float) -> list[float]:
            r = st.predict.Predict(request(x=np.array([[v, 1, 0]], np.float32)), timeout=WAIT)
            return tf.make_ndarray(r.outputs["y"]).tolist()

        with ThreadPoolExecutor(4) as pool:  # max_batch_size 4: one batch of 4 rows, y = x @ [1, 2, 3]
            got = [f.result(timeout=WAIT) for f in [pool.submit(call, float(v)) for v in range(4)]]
        assert got == [[2.0], [3.0], [4.0], [5.0]]
        assert len(threads) == 1
        # sync: the first request's own RPC thread leads the batch; aio: requests await it, a scheduler thread runs it
        assert threads[0].startswith("serving-batch") == (batching_server.grpc_frontend == "aio")
    finally:
        st.channel.close()


def _toy_run(base: str) -> Any:
    servable = load_servable(MODEL, 1, os.path.join(base, MODEL, "1"))
    return functools.partial(run_signature, "serving_default", servable.signatures["serving_default"])


def test_an_early_run_gives_the_unbatched_and_the_batched_results(base: str) -> None:
    run = _toy_run(base)
    rows = [{"x": np.array([[1, 2, 3]], np.float32), "k": np.array([1], np.int32)},
            {"x": np.array([[4, 5, 6]], np.float32), "k": np.array([2], np.int32)},
            {"x": np.array([[0, -1, 7]], np.float32), "k": np.array([5], np.int32)}]
    unbatched = [run(r) for r in rows]
    merged = run({n: np.concatenate([r[n] for r in rows]) for n in rows[0]})
    calls: list[int] = []

    def counted(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return run(inputs)

    s = BatchScheduler(BatchingParameters(max_batch_size=2, batch_timeout_micros=600_000_000, num_batch_threads=1),
                       early_run_micros=0)
    try:
        with ThreadPoolExecutor(1) as pool:
            a = pool.submit(s.execute, "q", counted, rows[0], WAIT)
            wait_for(lambda: calls == [1], what="the early run")  # alone on an idle scheduler: runs at once
            assert not a.done()  # ... but still waits for its batch's timeout
            # The next batch, full (submitted: led by a scheduler thread, which runs nothing early, so both join it).
            later = [s.submit("q", counted, r) for r in rows[1:]]
            got = [f.result(timeout=WAIT) for f in later]
            assert not a.done() and calls == [1, 2]
            s.stop()  # a's batch is due now: a gets its early result, nothing runs again
            got.insert(0, a.result(timeout=WAIT))
        assert calls == [1, 2] and s.stats["early_runs"] == 1 and s.stats["batches"] == 2 and s.stats["tasks"] == 3
        for i in range(3):
            assert sorted(got[i]) == sorted(unbatched[i])
            for name in unbatched[i]:
                np.testing.assert_array_equal(got[i][name], unbatched[i][name])
                np.testing.assert_array_equal(got[i][name], merged[name][i:i + 1])
    finally:
        s.stop()


def test_a_lone_task_run_early_still_waits_the_batch_timeout() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1),
                       early_run_micros=0)
    calls: list[int] = []
    try:
        t0 = time.monotonic()
        assert s.execute("q", _recording_run(calls), {"x": np.array([3])}, timeout=WAIT)["y"].tolist() == [6]
        assert time.monotonic() - t0 >= 0.05  # no answer before the batch closes, as without the early run
        with pytest.raises(RequestError, match="x must be <= 100") as e:  # an early error is the caller's error
            s.execute("q", _recording_run(calls), {"x": np.array([101])}, timeout=WAIT)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert calls == [1, 1] and s.stats["early_runs"] == 2 and s.stats["batches"] == 2
    finally:
        s.stop()
    off = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=1),
                         early_run=False)
    try:
        assert off.execute("q", _recording_run(calls), {"x": np.array([3])}, timeout=WAIT)["y"].tolist() == [6]
        assert off.stats["early_runs"] == 0
    finally:
        off.stop()


def test_full_queue_is_unavailable_while_an_early_task_waits() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=2, batch_timeout_micros=600_000_000, max_enqueued_batches=1,
                                          num_batch_threads=1), early_run_micros=0)
    calls: list[int] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            a = pool.submit(s.execute, "q", _recording_run(calls), {"x": np.array([1])}, WAIT)
            wait_for(lambda: calls == [1], what="the early run")
            with pytest.raises(RequestError, match="is full") as e:  # a's batch takes no more: no room for another
                s.execute("q", _recording_run(calls), {"x": np.array([2])}, timeout=WAIT)
            assert e.value.code == grpc.StatusCode.UNAVAILABLE
            s.stop()  # closes a's batch: a gets its early result, nothing runs again
            assert a.result(timeout=WAIT)["y"].tolist() == [2] and calls == [1]
    finally:
        s.stop()


def test_the_server_can_turn_the_early_run_off(base: str) -> None:
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=1)
    for early_run in (True, False):
        s = ModelServer(base, port=0, num_threads=2, batching=params, batching_early_run=early_run)
        s.start()
        try:
            assert s.scheduler is not None and s.scheduler.early_run is early_run
        finally:
            s.stop(grace=1.0)


def test_a_submitted_task_may_run_early_and_completes_at_the_batch_timeout() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=8, batch_timeout_micros=600_000_000, num_batch_threads=1),
                       early_run_micros=0)
    calls: list[int] = []
    try:
        f = s.submit("q", _recording_run(calls), {"x": np.array([3])}, early_run=True)
        wait_for(lambda: calls == [1], what="the early run on a scheduler thread")
        assert not f.done()  # computed, but answered only when its batch is due
        later = s.submit("q", _recording_run(calls), {"x": np.array([4])})  # the sealed batch takes no more
        s.stop()
        assert f.result(timeout=WAIT)["y"].tolist() == [6] and later.result(timeout=WAIT)["y"].tolist() == [8]
        assert calls == [1, 1] and s.stats["early_runs"] == 1 and s.stats["batches"] == 2
    finally:
        s.stop()


def test_a_cancelled_task_is_not_computed() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=3, batch_timeout_micros=600_000_000, num_batch_threads=1))
    calls: list[int] = []
    try:
        run = _recording_run(calls)
        a = s.submit("q", run, {"x": np.array([1])})
        b = s.submit("q", run, {"x": np.array([2])})
        assert b.cancel()  # its caller went away before the batch ran
        c = s.submit("q", run, {"x": np.array([3])})  # fills the batch of 3 rows: it runs now
        assert a.result(timeout=WAIT)["y"].tolist() == [2] and c.result(timeout=WAIT)["y"].tolist() == [6]
        assert calls == [2] and s.stats["tasks"] == 3
    finally:
        s.stop()
