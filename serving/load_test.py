"""Load test: 10,000 requests at concurrency 32 over gRPC and REST, with a version swap and a label move mid-run.

Every response must succeed and come from a version that was AVAILABLE (and, for a labelled
request, named by that label) at some moment while the request was in flight, judged from the
server's own state history. Marked large (about a minute on 2 busy cores): `pytest --run_large
serving/load_test.py -s` prints the figures recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from typing import Any

import learn_tf  # noqa: F401

import numpy as np
import pytest
import requests
import tensorflow as tf

from serving.batching import BatchingParameters
from serving.server import ModelServer
from serving.testing import MODEL, Stubs, export_toy, request, wait_for

TOTAL, CONCURRENCY, SWAP_AT, HOLD_FROM = 10_000, 32, 3_000, 5_000


def _write_config(path: str, model_dir: str, versions: tuple[int, ...], labels: dict[str, int]) -> None:
    text = "".join(f" versions: {v}" for v in versions)
    label_text = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    with open(path + ".tmp", "w") as f:
        f.write(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{model_dir}" model_platform: "tensorflow" '
                f"model_version_policy {{ specific {{{text} }} }}{label_text} }} }}\n")
    os.replace(path + ".tmp", path)


def _intervals(history: list, what: Any, start_state: str, end_states: tuple[str, ...]) -> list[tuple[float, float]]:
    """[start, end) spans during which `what` (a version, or a label's value) held, from the manager's history."""
    spans, opened = [], None
    for t, model, key, state in history:
        if model != MODEL:
            continue
        if key == what[0] and state == what[1] and opened is None:
            opened = t
        elif key == what[0] and opened is not None and state != what[1] and (
                state in end_states or state.startswith("label:")):
            spans.append((opened, t))
            opened = None
    if opened is not None:
        spans.append((opened, float("inf")))
    return spans


@pytest.mark.large
@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
def test_10k_requests_grpc_and_rest_across_a_swap_and_a_label_move(base: str, tmp_path: Any, batching: bool) -> None:
    model_dir = str(tmp_path / MODEL)
    shutil.copytree(os.path.join(base, MODEL, "1"), os.path.join(model_dir, "1"))
    export_toy(model_dir, 2)
    staged = export_toy(model_dir, 3, publish=False)  # published by rename mid-run
    config = str(tmp_path / "models.config")
    _write_config(config, model_dir, (1, 2), {"stable": 1, "canary": 2})
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=2000, max_enqueued_batches=1000,
                                num_batch_threads=1) if batching else None
    s = ModelServer(str(tmp_path), models_config=config, port=0, rest_port=0, poll_seconds=0.05, num_threads=16,
                    batching=params)
    s.start()
    url = s.rest.url
    stubs = Stubs(s.port)
    sessions = threading.local()
    lock = threading.Lock()
    counter = iter(range(TOTAL))
    swapped = threading.Event()
    results: list[tuple[float, float, str, str, int]] = []  # (start, end, api, label or "", version)
    failures: list[str] = []

    def swap() -> None:
        os.rename(staged, os.path.join(model_dir, "3"))
        _write_config(config, model_dir, (2, 3), {"stable": 2, "canary": 3})  # the swap and the label move
        wait_for(lambda: s.models.labels(MODEL) == {"stable": 2, "canary": 3}
                 and sorted(s.models._model(MODEL).served) == [2, 3], timeout=300, what="the new config applied")
        swapped.set()

    def call(i: int) -> tuple[str, str, int]:
        label = ("", "stable", "canary")[i % 3]
        x = [[float(i % 7), 1.0, 2.0]]
        if i % 2:
            r = request(x=np.array(x, np.float32))
            if label:
                r.model_spec.version_label = label
            out = stubs.predict.Predict(r, timeout=120)
            version = int(out.model_spec.version.value)
            assert int(tf.make_ndarray(out.outputs["version"])[0]) == version
            y = float(tf.make_ndarray(out.outputs["y"])[0])
            api = "grpc"
        else:
            if not hasattr(sessions, "s"):
                sessions.s = requests.Session()
            path = f"/v1/models/{MODEL}" + (f"/labels/{label}" if label else "") + ":predict"
            body = {"instances": [{"x": x[0], "k": 1}]} if i % 4 == 0 else {"inputs": {"x": x, "k": [1]}}
            resp = sessions.s.post(url + path, data=json.dumps(body), timeout=120)
            assert resp.status_code == 200, resp.text
            doc = resp.json()
            row = doc["predictions"][0] if "predictions" in doc else {k: v[0] for k, v in doc["outputs"].items()}
            version = int(resp.headers["X-Served-Model-Version"])
            assert row["version"] == version
            y = row["y"]
            api = "rest"
        assert y == pytest.approx((x[0][0] + 2 + 6) * version)
        return api, label, version

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if i == SWAP_AT:
                threading.Thread(target=swap, daemon=True).start()
            if i >= HOLD_FROM and not swapped.wait(timeout=300):
                with lock:
                    failures.append("the new config was not applied within 300 s")
                continue
            t0 = time.monotonic()
            try:
                api, label, version = call(i)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                with lock:
                    failures.append(f"request {i}: {e!r}"[:300])
                continue
            with lock:
                results.append((t0, time.monotonic(), api, label, version))

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    stats = dict(s.scheduler.stats) if s.scheduler else {}
    history = list(s.models.history)
    stubs.channel.close()
    s.stop(grace=1.0)

    assert not failures, failures[:5]
    assert len(results) == TOTAL
    available = {v: _intervals(history, (v, "AVAILABLE"), "AVAILABLE", ("END",)) for v in (1, 2, 3)}
    label_spans = {(lbl, v): _intervals(history, (lbl, f"label:{v}"), "", ()) for lbl in ("stable", "canary")
                   for v in (1, 2, 3)}
    bad = []
    for t0, t1, api, label, version in results:
        spans = available[version] if not label else label_spans[(label, version)]
        if not any(a <= t1 and t0 <= b for a, b in spans):
            bad.append((api, label, version, t0, t1))
    assert not bad, (bad[:5], available, label_spans)
    seen = Counter((label or "latest", version) for _, _, _, label, version in results)
    # Both sides of the swap and of the label move were observed, over both APIs.
    assert seen[("latest", 2)] and seen[("latest", 3)] and seen[("stable", 1)] and seen[("stable", 2)]
    assert seen[("canary", 2)] and seen[("canary", 3)] and not seen[("latest", 1)]
    assert Counter(api for _, _, api, _, _ in results) == {"grpc": TOTAL // 2, "rest": TOTAL // 2}
    p50, p99 = np.percentile([1000 * (t1 - t0) for t0, t1, *_ in results], [50, 99])
    print(f"\n[load test] batching {'on' if batching else 'off'}: {TOTAL} requests (gRPC {TOTAL // 2}, REST "
          f"{TOTAL // 2}) at concurrency {CONCURRENCY} in {elapsed:.1f} s ({TOTAL / elapsed:.0f}/s), p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms; 0 failed; responses by (label, version): {dict(sorted(seen.items()))}; "
          f"batches {stats.get('batches', '-')} for {stats.get('tasks', '-')} requests")
