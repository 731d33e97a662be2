"""Tests for serving/server.py against the stock tensorflow_serving.apis gRPC stubs and tiny SavedModels."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving.server import ModelServer, read_models_config

MODEL = "toy"
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Toy(tf.Module):
    """y = (x @ [1, 2, 3]) * version; asserts k <= 5 in the graph; a second string signature."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = tf.Variable(version, dtype=tf.int64, trainable=False)
        self.w = tf.Variable([[1.0], [2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int32, name="k")])
    def score(self, x: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_less_equal(k, 5, message="k must be at most 5")
        y = tf.matmul(x, self.w)[:, 0] * tf.cast(self.version, tf.float32)
        return {"y": y, "k2": k * 2, "version": tf.fill(tf.shape(k), self.version)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="words")])
    def join(self, words: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"joined": tf.strings.reduce_join(words, axis=1, separator=" ")}


def export_toy(model_dir: str, version: int, publish: bool = True,
               warmup: Optional[list[predict_pb2.PredictRequest]] = None) -> str:
    """Exports the toy model like the real exporter: into `.N.tmp-*`, then renamed to `N` if `publish`."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir)
    module = _Toy(version)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.score, "join": module.join})
    if warmup:
        os.makedirs(os.path.join(tmp, "assets.extra"))
        with tf.io.TFRecordWriter(os.path.join(tmp, "assets.extra", "tf_serving_warmup_requests")) as w:
            for r in warmup:
                w.write(prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=r)).SerializeToString())
    if not publish:
        return tmp
    final = os.path.join(model_dir, str(version))
    os.rename(tmp, final)
    return final


_DEFAULT: Any = object()


def request(model: str = MODEL, x: Any = _DEFAULT, k: Any = _DEFAULT, signature: str = "",
            version: Optional[int] = None, **extra: Any) -> predict_pb2.PredictRequest:
    """A PredictRequest for the toy model (x defaults to [[1, 2, 3]], k to [1]; None leaves an input out)."""
    r = predict_pb2.PredictRequest()
    r.model_spec.name = model
    r.model_spec.signature_name = signature
    if version is not None:
        r.model_spec.version.value = version
    inputs = {"x": np.array([[1, 2, 3]], np.float32) if x is _DEFAULT else x,
              "k": np.array([1], np.int32) if k is _DEFAULT else k, **extra}
    for name, value in inputs.items():
        if value is not None:
            r.inputs[name].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                    else tf.make_tensor_proto(value))
    return r


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Stubs:
    """Stock TF Serving stubs over one channel."""

    def __init__(self, port: int, max_send: int = 4 << 20) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", max_send), ("grpc.max_receive_message_length", 64 << 20)])
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def status(self, model: str = MODEL, version: Optional[int] = None) -> dict[int, Any]:
        r = get_model_status_pb2.GetModelStatusRequest()
        r.model_spec.name = model
        if version is not None:
            r.model_spec.version.value = version
        return {s.version: s for s in self.models.GetModelStatus(r, timeout=10).model_version_status}

    def served_version(self) -> int:
        return int(self.predict.Predict(request(), timeout=10).model_spec.version.value)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    b = str(tmp_path_factory.mktemp("model_base"))
    export_toy(os.path.join(b, MODEL), 1)
    return b


@pytest.fixture(scope="module")
def server(base: str):
    s = ModelServer(base, port=0, num_threads=8)
    s.start()
    yield s
    s.stop(grace=1.0)


@pytest.fixture(scope="module")
def stubs(server: ModelServer):
    st = Stubs(server.port, max_send=64 << 20)
    yield st
    st.channel.close()


def test_predict_matches_in_process(base: str, stubs: Stubs) -> None:
    loaded = tf.saved_model.load(os.path.join(base, MODEL, "1"))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    k = np.array([1, 2, 3, 5], np.int32)
    want = {n: t.numpy() for n, t in loaded.signatures["serving_default"](x=tf.constant(x), k=tf.constant(k)).items()}

    response = stubs.predict.Predict(request(x=x, k=k), timeout=10)
    got = {n: tf.make_ndarray(t) for n, t in response.outputs.items()}
    assert set(got) == {"y", "k2", "version"}
    for n in want:
        np.testing.assert_array_equal(got[n], want[n])
        assert got[n].dtype == want[n].dtype
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"

    # Explicit version, explicit signature name and an output filter.
    response = stubs.predict.Predict(request(x=x, k=k, version=1, signature="serving_default", **{}), timeout=10)
    assert response.model_spec.version.value == 1
    filtered = request(x=x, k=k)
    filtered.output_filter.append("y")
    response = stubs.predict.Predict(filtered, timeout=10)
    assert list(response.outputs) == ["y"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), want["y"])

    # A string signature.
    words = np.array([[b"a", "bé".encode(), b"c"], [b"x", b"", b"z"]], dtype=object)
    r = predict_pb2.PredictRequest()
    r.model_spec.name, r.model_spec.signature_name = MODEL, "join"
    r.inputs["words"].CopyFrom(tf.make_tensor_proto(words))
    response = stubs.predict.Predict(r, timeout=10)
    want_join = loaded.signatures["join"](words=tf.constant(words))["joined"].numpy()
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["joined"]), want_join)
    assert response.model_spec.signature_name == "join"


def test_get_model_metadata(base: str, stubs: Stubs) -> None:
    r = get_model_metadata_pb2.GetModelMetadataRequest()
    r.model_spec.name = MODEL
    r.metadata_field.append("signature_def")
    response = stubs.predict.GetModelMetadata(r, timeout=10)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigs)
    assert {"serving_default", "join"} <= set(sigs.signature_def)
    default = sigs.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert set(default.inputs) == {"x", "k"} and set(default.outputs) == {"y", "k2", "version"}
    assert default.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1, 3]
    assert default.outputs["version"].dtype == tf.int64.as_datatype_enum
    assert sigs.signature_def["join"].inputs["words"].dtype == tf.string.as_datatype_enum

    bad = get_model_metadata_pb2.GetModelMetadataRequest()
    bad.model_spec.name = MODEL
    bad.metadata_field.append("nope")
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.GetModelMetadata(bad, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in e.value.details()
    bad.ClearField("metadata_field")
    bad.metadata_field.append("signature_def")
    bad.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.GetModelMetadata(bad, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_model_status(stubs: Stubs) -> None:
    status = stubs.status()
    assert set(status) == {1}
    assert status[1].state == AVAILABLE and status[1].status.error_code == 0
    assert stubs.status(version=1)[1].state == AVAILABLE
    for kwargs, needle in (({"model": "nope"}, "nope"), ({"version": 7}, "version 7")):
        with pytest.raises(grpc.RpcError) as e:
            stubs.status(**kwargs)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and needle in e.value.details()


def test_unimplemented_methods(stubs: Stubs) -> None:
    r = classification_pb2.ClassificationRequest()
    r.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.Classify(r, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _malformed(too_many_values: bool = False) -> tensor_pb2.TensorProto:
    p = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
    if too_many_values:
        p.ClearField("tensor_content")
        p.float_val.extend(range(8))  # 8 values for 6 elements (fewer would repeat the last one, as in TF)
    else:
        p.tensor_content = p.tensor_content[:-4]  # 20 bytes for 6 floats
    return p


def _huge() -> tensor_pb2.TensorProto:
    p = tf.make_tensor_proto(np.zeros((1, 3), np.float32))
    p.ClearField("tensor_content")
    p.tensor_shape.dim[0].size = 1_000_000_000  # one value broadcast to 3e9 elements
    p.float_val.append(1.0)
    return p


def _filtered(name: str) -> predict_pb2.PredictRequest:
    r = request()
    r.output_filter.append(name)
    return r


BAD_REQUESTS = {
    "unknown_model": (lambda: request(model="nope"), grpc.StatusCode.NOT_FOUND, 'no model named "nope"'),
    "unknown_version": (lambda: request(version=9), grpc.StatusCode.NOT_FOUND, "Specific(toy, 9)"),
    "unknown_signature": (lambda: request(signature="nope"), grpc.StatusCode.INVALID_ARGUMENT,
                          'Serving signature key "nope" not found'),
    "missing_input": (lambda: request(k=None), grpc.StatusCode.INVALID_ARGUMENT, "missing input(s): k"),
    "extra_input": (lambda: request(z=np.zeros(1, np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                    "unexpected input(s): z"),
    "wrong_dtype": (lambda: request(x=np.zeros((1, 3), np.float64)), grpc.StatusCode.INVALID_ARGUMENT,
                    "input 'x' has dtype float64 but the signature expects float32"),
    "wrong_rank": (lambda: request(x=np.zeros(3, np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                   "input 'x' has shape [3] but the signature expects [None, 3]"),
    "wrong_fixed_dim": (lambda: request(x=np.zeros((2, 4), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
                        "input 'x' has shape [2, 4]"),
    "malformed_tensor": (lambda: request(x=_malformed(), k=np.ones(2, np.int32)), grpc.StatusCode.INVALID_ARGUMENT,
                         "input 'x' is a malformed TensorProto"),
    "too_many_values": (lambda: request(x=_malformed(True), k=np.ones(2, np.int32)),
                        grpc.StatusCode.INVALID_ARGUMENT, "input 'x' is a malformed TensorProto"),
    "huge_broadcast": (lambda: request(x=_huge()), grpc.StatusCode.INVALID_ARGUMENT, "elements"),
    "graph_assert": (lambda: request(k=np.array([1, 7], np.int32), x=np.zeros((2, 3), np.float32)),
                     grpc.StatusCode.INVALID_ARGUMENT, "k must be at most 5"),
    "unknown_output_filter": (lambda: _filtered("nope"), grpc.StatusCode.INVALID_ARGUMENT,
                              "output tensor alias(es) not found"),
    "no_model_name": (lambda: request(model=""), grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests(stubs: Stubs, case: str) -> None:
    make, code, needle = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.Predict(make(), timeout=10)
    assert e.value.code() == code, e.value.details()
    assert needle in e.value.details()
    assert "[[" not in e.value.details()  # no graph node traces
    assert stubs.served_version() == 1  # the server keeps answering


def test_oversize_message(stubs: Stubs) -> None:
    x = np.zeros((400_000, 3), np.float32)  # 4.8 MB > the default 4 MiB limit
    with pytest.raises(grpc.RpcError) as e:
        stubs.predict.Predict(request(x=x, k=np.ones(400_000, np.int32)), timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4194304" in e.value.details()
    assert stubs.served_version() == 1


def _listeners(port: int) -> list[str]:
    """Local addresses of the TCP sockets listening on `port` (from /proc/net/tcp{,6})."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        with open(name) as f:
            next(f)
            for line in f:
                fields = line.split()
                addr, state = fields[1], fields[3]
                host, p = addr.split(":")
                if int(p, 16) == port and state == "0A":  # LISTEN
                    found.append(host)
    return found


def test_binds_loopback_by_default(server: ModelServer) -> None:
    assert server.host == "127.0.0.1" and server.address == f"127.0.0.1:{server.port}"
    listeners = _listeners(server.port)
    assert listeners, "no listening socket found"
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 (v4, v4-mapped v6)
    assert set(listeners) <= loopback, listeners


def test_port_in_use_is_an_error(server: ModelServer, base: str) -> None:
    other = ModelServer(base, port=server.port)
    with pytest.raises(OSError, match="cannot bind"):
        other.start()


def test_models_config(base: str, tmp_path: Any) -> None:
    config = tmp_path / "models.config"
    rel = os.path.relpath(os.path.join(base, MODEL), tmp_path)
    config.write_text('model_config_list {\n'
                      f'  config {{ name: "alias" base_path: "{rel}" model_platform: "tensorflow" }}\n'
                      f'  config {{ name: "absolute" base_path: "{os.path.join(base, MODEL)}" '
                      'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } }\n}\n')
    assert [n for n, _, _ in read_models_config(str(config))] == ["alias", "absolute"]
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
        time.sleep(0.3)  # a few more polls: the failed versions are not retried while unchanged
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
    total, concurrency, swap_at = 10_000, 32, 2_000
    lock = threading.Lock()
    counter = iter(range(total))
    results: list[tuple[float, float, int]] = []  # (start, end, served version)
    failures: list[str] = []
    channel = grpc.insecure_channel(f"127.0.0.1:{s.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = np.array([[1, 2, 3]], np.float32)
    req = request(x=x)

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if i == swap_at:
                os.rename(staged, os.path.join(model_dir, "2"))
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


def test_sigterm_shuts_down_gracefully(base: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "serving.server", "--model_base", base, "--port", "0",
                             "--grace", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the server did not start within 120 s"
        line = proc.stdout.readline()  # "serving toy on 127.0.0.1:PORT" once requests are accepted
        assert line.startswith(f"serving {MODEL} on 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        st = Stubs(int(line.strip().rsplit(":", 1)[1]))
        assert st.served_version() == 1
        st.channel.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "received SIGTERM" in err and "stopped" in err
        assert "model toy version 1 is AVAILABLE" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
