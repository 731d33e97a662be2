"""TF Serving's REST API: routes, both JSON formats equal to gRPC, error bodies and codes, body limit, loopback."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any, Iterator

import learn_tf  # noqa: F401

import numpy as np
import pytest
import requests
import tensorflow as tf

from serving.client import RestError, rest_predict
from serving.rest import VERSION_HEADER
from serving.server import ModelServer
from serving.testing import MODEL, Stubs, request


@pytest.fixture(scope="module")
def rest_server(base: str) -> Iterator[ModelServer]:
    s = ModelServer(base, port=0, rest_port=0, num_threads=4, max_message_bytes=1 << 20)
    s.start()
    yield s
    s.stop(grace=1.0)


@pytest.fixture(scope="module")
def url(rest_server: ModelServer) -> str:
    assert rest_server.rest is not None
    return rest_server.rest.url


def _post(url: str, path: str, body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url + path, data=data, timeout=60)


def test_row_and_columnar_formats_equal_grpc(rest_server: ModelServer, url: str) -> None:
    x = np.array([[1, 2, 3], [0.5, -1, 2]], np.float32)
    k = np.array([1, 4], np.int32)
    st = Stubs(rest_server.port)
    g = st.predict.Predict(request(x=x, k=k), timeout=10)
    want = {n: tf.make_ndarray(v) for n, v in g.outputs.items()}
    st.channel.close()

    row = _post(url, f"/v1/models/{MODEL}:predict",
                {"instances": [{"x": x[i].tolist(), "k": int(k[i])} for i in range(2)]})
    assert row.status_code == 200, row.text
    assert row.headers["Content-Type"] == "application/json" and row.headers[VERSION_HEADER] == "1"
    preds = row.json()["predictions"]
    assert [set(p) for p in preds] == [{"y", "k2", "version"}] * 2
    np.testing.assert_array_equal(np.array([p["y"] for p in preds], np.float32), want["y"])
    np.testing.assert_array_equal([p["k2"] for p in preds], want["k2"])

    col = _post(url, f"/v1/models/{MODEL}/versions/1:predict", {"inputs": {"x": x.tolist(), "k": k.tolist()}})
    assert col.status_code == 200, col.text
    out = col.json()["outputs"]
    np.testing.assert_array_equal(np.array(out["y"], np.float32), want["y"])
    np.testing.assert_array_equal(out["version"], want["version"])

    # One input and one output: bare values, strings as UTF-8 or {"b64": ...}.
    words = [["héllo", {"b64": base64.b64encode(b"world").decode()}], ["a", "b"]]
    one = _post(url, f"/v1/models/{MODEL}:predict", {"signature_name": "join", "instances": words})
    assert one.json() == {"predictions": ["héllo world", "a b"]}
    one = _post(url, f"/v1/models/{MODEL}:predict", {"signature_name": "join", "inputs": [["x", "y"]]})
    assert one.json() == {"outputs": ["x y"]}


def test_status_and_metadata(url: str) -> None:
    r = requests.get(f"{url}/v1/models/{MODEL}", timeout=30)
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                  "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(f"{url}/v1/models/{MODEL}/versions/1", timeout=30).json()["model_version_status"][0][
        "version"] == "1"
    meta = requests.get(f"{url}/v1/MODELS/{MODEL}/metadata", timeout=30).json()  # paths are case-insensitive
    assert meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) >= {"serving_default", "join"}
    assert sigs["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"


@pytest.mark.parametrize("method,path,body,code,message", [
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "nope"),
    ("POST", f"/v1/models/{MODEL}/versions/9:predict", {"instances": [1]}, 404, "Specific(toy, 9)"),
    ("POST", f"/v1/models/{MODEL}/labels/stable:predict", {"instances": [1]}, 400,
     "Unrecognized servable version label: stable"),
    ("GET", "/v1/models/nope", None, 404, "nope"),
    ("GET", f"/v1/models/{MODEL}/versions/9", None, 404, "version 9"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("POST", f"/v1/models/{MODEL}:predict", {"signature_name": "nope", "instances": [1]}, 400,
     'Serving signature key "nope" not found'),
    ("POST", f"/v1/models/{MODEL}:predict", {"instances": [{"x": [1, 2, 3], "k": 1, "z": 2}]}, 400,
     "does not have named input: z"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2, 3]], "k": [1], "z": [2]}}, 400,
     "unexpected input(s) in 'inputs' object: z"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2, 3]]}}, 400, "Missing named input: k"),
    ("POST", f"/v1/models/{MODEL}:predict", {"instances": [{"x": [1, 2, 3], "k": 1.5}]}, 400,
     "is not of expected type: int32"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [["a", 2, 3]], "k": [1]}}, 400,
     "is not of expected type: float32"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2]], "k": [1]}}, 400,
     "input 'x' has shape [1, 2] but the signature expects [None, 3]"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2, 3], [1, 2]], "k": [1, 1]}}, 400,
     "Encountered list at unexpected size"),
    ("POST", f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2, 3]], "k": [9]}}, 400, "k must be at most 5"),
    ("POST", f"/v1/models/{MODEL}:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", f"/v1/models/{MODEL}:predict", b"", 400, "The document is empty"),
    ("POST", f"/v1/models/{MODEL}:predict", {"instances": [1], "inputs": [1]}, 400, "only one of"),
    ("POST", f"/v1/models/{MODEL}:predict", {"x": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", f"/v1/models/{MODEL}:classify", {"examples": []}, 501, "not implemented"),
    ("PUT", f"/v1/models/{MODEL}", b"{}", 400, "Malformed request"),
    ("POST", f"/v1/models/{MODEL}:explode", {"instances": [1]}, 400, "Malformed request"),
    ("GET", "/nothing/here", None, 404, "REST API is under /v1/"),
])
def test_errors_have_tf_serving_codes_and_bodies(rest_server: ModelServer, url: str, method: str, path: str,
                                                 body: Any, code: int, message: str) -> None:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    r = requests.request(method, url + path, data=data, timeout=60)
    assert r.status_code == code, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.json()
    assert requests.get(f"{url}/v1/models/{MODEL}", timeout=30).status_code == 200  # still up


def test_body_limit(rest_server: ModelServer, url: str) -> None:
    limit = rest_server.max_message_bytes
    big = {"inputs": {"x": [[1.0, 2.0, 3.0]] * (limit // 10), "k": [1] * (limit // 10)}}
    data = json.dumps(big).encode()
    assert limit < len(data) < 4 * limit
    r = requests.post(f"{url}/v1/models/{MODEL}:predict", data=data, timeout=60)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
    # Far above the limit: refused from the Content-Length header alone, without reading the body.
    with socket.create_connection((rest_server.host, rest_server.rest.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {100 * limit}\r\n\r\n".encode())
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    ok = _post(url, f"/v1/models/{MODEL}:predict", {"inputs": {"x": [[1, 2, 3]], "k": [1]}})
    assert ok.status_code == 200 and ok.json()["outputs"]["y"] == [14.0]


def test_rest_binds_loopback_and_nan_round_trips(rest_server: ModelServer, url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    r = requests.post(f"{url}/v1/models/{MODEL}:predict", data=b'{"inputs": {"x": [[NaN, 1, -Infinity]], "k": [1]}}',
                      timeout=30)
    assert r.status_code == 200
    assert "NaN" in r.text or "Infinity" in r.text
    assert np.isnan(r.json()["outputs"]["y"][0]) or np.isinf(r.json()["outputs"]["y"][0])


def test_rest_port_in_use_is_an_error(rest_server: ModelServer, base: str) -> None:
    other = ModelServer(base, port=0, rest_port=rest_server.rest.port)
    with pytest.raises(OSError):
        other.start()


def test_client_rest_predict(url: str) -> None:
    x, k = np.array([[1, 2, 3], [0, 0, 1]], np.float32), np.array([1, 2], np.int32)
    col = rest_predict(url, MODEL, {"x": x, "k": k})
    row = rest_predict(url, MODEL, {"x": x, "k": k}, row_format=True, version=1)
    np.testing.assert_array_equal(col["y"], [14.0, 3.0])
    np.testing.assert_array_equal(row["k2"], [2, 4])
    assert rest_predict(url, MODEL, {"words": [["a", "b"]]}, signature="join")["output"].tolist() == ["a b"]
    with pytest.raises(RestError) as e:
        rest_predict(url, MODEL, {"x": x, "k": np.array([9, 9], np.int32)})
    assert e.value.http_status == 400 and e.value.code().name == "INVALID_ARGUMENT"
    assert "k must be at most 5" in e.value.details()
