"""Model manager: models.config, version discovery, broken versions, atomic swaps under load, ScaNN SavedModels."""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.model_manager import read_models_config
from serving.server import ModelServer
from serving.testing import AVAILABLE, END, MODEL, Stubs, export_toy, request, wait_for


def test_models_config(base: str, tmp_path: Any) -> None:
    config = tmp_path / "models.config"
    rel = os.path.relpath(os.path.join(base, MODEL), tmp_path)
    config.write_text('model_config_list {\n'
                      f'  config {{ name: "alias" base_path: "{rel}" model_platform: "tensorflow" }}\n'
                      f'  config {{ name: "absolute" base_path: "{os.path.join(base, MODEL)}" '
                      'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } }\n}\n')
    assert [c.name for c in read_models_config(str(config))] == ["alias", "absolute"]
    s = ModelServer(base, models_config=str(config), port=0)
    s.start()
    try:
        st = Stubs(s.port)
        assert st.predict.Predict(request(model="alias"), timeout=10).model_spec.version.value == 1
        labelled = request(model="absolute")
        labelled.model_spec.version_label = "stable"
        assert st.predict.Predict(labelled, timeout=10).model_spec.version.value == 1
        with pytest.raises(grpc.RpcError) as e:  # only configured models are served
            st.predict.Predict(request(model=MODEL), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        st.channel.close()
    finally:
        s.stop(grace=0.5)

    bad = tmp_path / "bad.config"
    bad.write_text('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }')
    with pytest.raises(ValueError, match="pytorch"):
        read_models_config(str(bad))
    bad.write_text("model_config_list { nonsense: 1 }")
    with pytest.raises(ValueError, match="bad.config"):
        read_models_config(str(bad))


def test_new_versions_are_picked_up_and_broken_ones_never_served(base: str, tmp_path: Any) -> None:
    model_dir = str(tmp_path / MODEL)
    shutil.copytree(os.path.join(base, MODEL, "1"), os.path.join(model_dir, "1"))
    s = ModelServer(str(tmp_path), port=0, poll_seconds=0.1)
    s.start()
    st = Stubs(s.port)
    try:
        assert st.served_version() == 1
        # Ignored: an exporter's temp dir, a non-integer name.
        export_toy(model_dir, 5, publish=False)
        os.makedirs(os.path.join(model_dir, "latest"))
        # A new version appears by rename and is served without a restart.
        export_toy(model_dir, 2)
        wait_for(lambda: st.served_version() == 2, what="version 2 to be served")
        status = st.status()
        assert status[2].state == AVAILABLE and status[1].state == END
        assert 5 not in status
        with pytest.raises(grpc.RpcError) as e:
            st.predict.Predict(request(version=1), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        # Broken versions: garbage saved_model.pb; no saved_model.pb; a warmup request that fails.
        os.makedirs(os.path.join(model_dir, "3"))
        with open(os.path.join(model_dir, "3", "saved_model.pb"), "wb") as f:
            f.write(b"this is not a SavedModel")
        os.makedirs(os.path.join(model_dir, "4", "variables"))
        export_toy(model_dir, 6, warmup=[request(k=np.array([9], np.int32))])
        wait_for(lambda: all(getattr(st.status().get(v), "state", None) == END for v in (3, 4, 6)),
                 what="the broken versions to be tried")
        status = st.status()
        for v in (3, 4, 6):
            assert status[v].state == END and status[v].status.error_code != 0 and status[v].status.error_message
        assert "k must be at most 5" in status[6].status.error_message
        assert "no saved_model.pb" in status[4].status.error_message
        assert "does not hold a valid SavedModel" in status[3].status.error_message
        assert status[2].state == AVAILABLE
        assert st.served_version() == 2
        with pytest.raises(grpc.RpcError) as e:
            st.predict.Predict(request(version=6), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND

        # A good version with a good warmup request replaces 2 even though broken versions sit below it.
        export_toy(model_dir, 7, warmup=[request()])
        wait_for(lambda: st.served_version() == 7, what="version 7 to be served")
        polls = s.models.polls
        wait_for(lambda: s.models.polls >= polls + 3, what="three more polls")  # broken ones not retried
        assert st.status()[7].state == AVAILABLE and st.status()[6].state == END

        # Deleting the served version falls back to the highest version that loads (2; 6, 4 and 3 are broken).
        shutil.rmtree(os.path.join(model_dir, "7"))
        wait_for(lambda: st.served_version() == 2, what="fallback to version 2")
        assert st.status()[2].state == AVAILABLE and st.status()[7].state == END
    finally:
        st.channel.close()
        s.stop(grace=0.5)


def test_10k_requests_with_a_version_swap(base: str, tmp_path: Any) -> None:
    model_dir = str(tmp_path / MODEL)
    shutil.copytree(os.path.join(base, MODEL, "1"), os.path.join(model_dir, "1"))
    staged = export_toy(model_dir, 2, publish=False)  # published by rename mid-run
    s = ModelServer(str(tmp_path), port=0, poll_seconds=0.1, num_threads=16)
    s.start()
    total, concurrency, swap_at, hold_from = 10_000, 32, 2_000, 3_000
    swapped = threading.Event()  # requests from hold_from on wait until version 2 is served: both are seen
    lock = threading.Lock()
    counter = iter(range(total))
    results: list[tuple[float, float, int]] = []  # (start, end, served version)
    failures: list[str] = []
    channel = grpc.insecure_channel(f"127.0.0.1:{s.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = np.array([[1, 2, 3]], np.float32)
    req = request(x=x)
    status_stubs = Stubs(s.port)

    def st_status(version: int) -> Any:
        return getattr(status_stubs.status().get(version), "state", None)

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if i == swap_at:
                os.rename(staged, os.path.join(model_dir, "2"))
                threading.Thread(target=lambda: (wait_for(lambda: st_status(2) == AVAILABLE,
                                                          what="version 2 AVAILABLE"), swapped.set()),
                                 daemon=True).start()
            if i >= hold_from and not swapped.wait(timeout=300):
                with lock:
                    failures.append("version 2 was not served within 300 s")
                continue
            t0 = time.monotonic()
            try:
                r = stub.Predict(req, timeout=30)
                version = int(r.model_spec.version.value)
                assert int(tf.make_ndarray(r.outputs["version"])[0]) == version
                assert float(tf.make_ndarray(r.outputs["y"])[0]) == 14.0 * version
            except Exception as e:  # noqa: BLE001 - every failure is counted
                with lock:
                    failures.append(repr(e))
                continue
            with lock:
                results.append((t0, time.monotonic(), version))

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    channel.close()
    status_stubs.channel.close()
    s.stop(grace=1.0)

    assert not failures, failures[:5]
    assert len(results) == total
    versions = [v for _, _, v in results]
    assert set(versions) == {1, 2}, f"swap not observed in {elapsed:.1f} s"
    first_v2_done = min(end for _, end, v in results if v == 2)
    late = [v for t0, _, v in results if t0 > first_v2_done]
    assert late and set(late) == {2}  # once version 2 answered, every later request is served by it
    print(f"\n10k requests at concurrency {concurrency}: {elapsed:.1f} s, "
          f"{versions.count(1)} by v1, {versions.count(2)} by v2")


def test_scann_savedmodel_is_served(tmp_path: Any) -> None:
    pytest.importorskip("scann")
    tfrs = pytest.importorskip("tensorflow_recommenders")
    ids = tf.constant([f"i{j}" for j in range(200)])
    emb = tf.constant(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32))
    index = tfrs.layers.factorized_top_k.ScaNN(k=5, num_leaves=10, num_leaves_to_search=10,
                                                num_reordering_candidates=50)
    index.index(emb, ids)

    class Search(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.index = index

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="query")])
        def search(self, query: tf.Tensor) -> dict[str, tf.Tensor]:
            scores, found = self.index(query, k=5)
            return {"scores": scores, "item_ids": found}

    module = Search()
    path = str(tmp_path / "scann" / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.search},
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    query = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    want = tf.saved_model.load(path).signatures["serving_default"](query=tf.constant(query))
    s = ModelServer(str(tmp_path), port=0)
    s.start()
    try:
        st = Stubs(s.port)
        r = predict_pb2.PredictRequest()
        r.model_spec.name = "scann"
        r.inputs["query"].CopyFrom(tf.make_tensor_proto(query))
        response = st.predict.Predict(r, timeout=10)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["item_ids"]), want["item_ids"].numpy())
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), want["scores"].numpy(), rtol=1e-6)
        st.channel.close()
    finally:
        s.stop(grace=0.5)


def test_heap_is_settled_after_a_swap_and_unloaded_versions_are_freed(base: str, tmp_path: Any) -> None:
    """After a poll that loads or unloads, the objects left are frozen out of the cyclic GC; an unloaded
    version is still freed (the next settle unfreezes and collects first); a poll that changes nothing
    does not settle; `freeze_heap=False` leaves the collector alone."""
    import gc
    import weakref

    from serving.model_manager import ModelManager

    model_dir = str(tmp_path / MODEL)
    shutil.copytree(os.path.join(base, MODEL, "1"), os.path.join(model_dir, "1"))
    gc.unfreeze()
    try:
        m = ModelManager(str(tmp_path))
        m.poll()
        assert gc.get_freeze_count() > 0  # version 1 loaded: settled
        served = m.resolve(request().model_spec)
        served.loaded.test_cycle = served  # a reference cycle through the version, as loaded graphs hold
        v1 = weakref.ref(served)
        del served
        gc.unfreeze()
        m.poll()  # nothing changed: no settle
        assert gc.get_freeze_count() == 0
        gc.freeze()
        export_toy(model_dir, 2)
        m.poll()  # version 2 loaded, version 1 unloaded (latest 1)
        assert m.resolve(request().model_spec).version == 2
        assert v1() is None  # not kept alive by the freeze
        gc.unfreeze()
        plain = ModelManager(str(tmp_path), freeze_heap=False)
        plain.poll()
        assert plain.resolve(request().model_spec).version == 2 and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
