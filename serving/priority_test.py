"""Thread priorities: the model threads run at `compute_nice`, the front end's event loops keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import learn_tf  # noqa: F401

import numpy as np
import pytest
import requests

from serving import priority
from serving.batching import BatchingParameters, BatchScheduler
from serving.server import ModelServer, main
from serving.testing import MODEL, Stubs, request, wait_for

pytestmark = pytest.mark.skipif(not priority.supported(), reason="thread nice values are a Linux feature")
WAIT = 120


def _nice_of(native_id: int) -> int:
    """A thread's nice value from /proc (field 19 of its stat line)."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def _threads(prefix: str, since: frozenset = frozenset()) -> list[threading.Thread]:
    """Live threads named `prefix...`, leaving out those in `since` (e.g. an earlier server's, not yet collected)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t not in since]


def test_check_nice_bounds_and_the_default_by_batching(base: str) -> None:
    assert priority.check_nice(0) == 0 and priority.check_nice(19) == 19
    assert priority.resolve_nice(None, batching=True) == priority.DEFAULT_COMPUTE_NICE > 0
    assert priority.resolve_nice(None, batching=False) == 0
    assert priority.resolve_nice(3, batching=False) == 3 and priority.resolve_nice(0, batching=True) == 0
    assert ModelServer(base, port=0).compute_nice == 0
    assert ModelServer(base, port=0, batching=BatchingParameters()).compute_nice == priority.DEFAULT_COMPUTE_NICE
    assert ModelServer(base, port=0, batching=BatchingParameters(), compute_nice=0).compute_nice == 0
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="0..19"):
            priority.check_nice(bad)
        with pytest.raises(ValueError, match="0..19"):
            ModelServer(base, port=0, compute_nice=bad)
    with pytest.raises(SystemExit):  # the command line refuses it too
        main(["--model_base", "/nonexistent", "--compute_nice", "25"])


def test_lower_thread_priority_affects_only_the_calling_thread_and_never_raises_it() -> None:
    before = priority.thread_nice()
    seen: dict[str, int] = {}

    def run() -> None:
        priority.lower_thread_priority(before + 4)
        seen["after"] = priority.thread_nice()
        priority.lower_thread_priority(before + 2)  # lower than now: unchanged, never raised back
        seen["again"] = priority.thread_nice()
        child = threading.Thread(target=lambda: seen.setdefault("child", priority.thread_nice()))
        child.start()
        child.join()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"after": before + 4, "again": before + 4, "child": before + 4}
    assert priority.thread_nice() == before  # the caller's thread is untouched


def test_batch_scheduler_threads_run_at_their_nice_value() -> None:
    s = BatchScheduler(BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=2),
                       thread_nice=priority.thread_nice() + 3)
    try:
        out = s.submit("q", lambda inputs: {"y": inputs["x"] * 2}, {"x": np.ones((1, 2), np.float32)}).result(WAIT)
        np.testing.assert_array_equal(out["y"], [[2.0, 2.0]])
        ids = [t.native_id for t in s._threads]
        assert len(ids) == 2 and all(_nice_of(i) == priority.thread_nice() + 3 for i in ids)
    finally:
        s.stop()


def test_server_runs_model_threads_below_its_event_loops(base: str) -> None:
    """Batch threads, the unbatched and REST pools and the poller at compute_nice; the gRPC and REST loops not."""
    own = priority.thread_nice()
    before = frozenset(threading.enumerate())
    s = ModelServer(base, port=0, rest_port=0, num_threads=2, compute_nice=own + 5,
                    batching=BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1))
    s.start()
    st = Stubs(s.port)
    try:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        st.predict.Predict(request(x=x, k=np.array([1, 2], np.int32)), timeout=WAIT)  # batched
        # dimension 0 differs between the inputs: not batchable, so it runs on the pool of unbatched calls
        st.predict.Predict(request(x=x, k=np.array([1], np.int32)), timeout=WAIT)
        got = requests.post(f"{s.rest.url}/v1/models/{MODEL}:predict", json={"instances": [
            {"x": [1.0, 2.0, 3.0], "k": 1}]}, timeout=WAIT)
        assert got.status_code == 200, got.text
        wait_for(lambda: bool(_threads("serving-poller", before)), WAIT, "the poller")
        for prefix in ("serving-batch-", "serving-rpc", "serving-rest_", "serving-poller"):
            threads = _threads(prefix, before)
            assert threads, prefix
            assert all(_nice_of(t.native_id) == own + 5 for t in threads), prefix
        for prefix in ("serving-grpc-loop", "serving-rest-loop"):
            assert [_nice_of(t.native_id) for t in _threads(prefix, before)] == [own], prefix
    finally:
        st.channel.close()
        s.stop(grace=1.0)


def test_tensorflow_pools_started_by_the_server_inherit_the_nice_value() -> None:
    """In a fresh process (TensorFlow not started yet), TF's pool threads run at the nice value; the
    main thread keeps its own; a second call changes nothing."""
    code = (
        "import os, threading\n"
        "import learn_tf\n"
        "import tensorflow as tf\n"
        "from serving import priority\n"
        "def nices():\n"
        "    out = {}\n"
        "    for tid in os.listdir('/proc/self/task'):\n"
        "        with open(f'/proc/self/task/{tid}/stat') as f:\n"
        "            out[int(tid)] = int(f.read().rsplit(')', 1)[1].split()[16])\n"
        "    return out\n"
        "own = priority.thread_nice()\n"
        "before = set(nices())\n"
        "assert priority.start_tensorflow_at(own + 6)\n"
        "tf.reduce_sum(tf.matmul(tf.ones([64, 64]), tf.ones([64, 64]))).numpy()\n"
        "new = {t: n for t, n in nices().items() if t not in before}\n"
        "assert new and set(new.values()) == {own + 6}, new\n"
        "assert priority.thread_nice() == own\n"
        "assert not priority.start_tensorflow_at(own + 6)\n"
        "print('ok', len(new))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]
