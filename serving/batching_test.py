"""Server-side batching: parameters file, merge and split, full queue, isolation of bad requests, both APIs.

No test depends on timing: batches close because they are full (timeouts are set far above any run
time) and waits are on events and futures with generous deadlines.
"""

from __future__ import annotations

import json
import os
import threading
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
from serving.server import ModelServer, batching_from_flags
from serving.tensor_codec import RequestError
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


@pytest.fixture
def batching_server(base: str) -> Any:
    s = ModelServer(base, port=0, rest_port=0, num_threads=8,
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
