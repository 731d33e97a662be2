"""Version policies (latest N, all, specific), labels over both APIs, and hot reload of models.config."""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

import learn_tf  # noqa: F401

import grpc
import pytest
import requests

from serving.model_config import VersionPolicy, read_models_config
from serving.server import ModelServer
from serving.testing import AVAILABLE, END, MODEL, Stubs, export_toy, request, wait_for


def _config(path: str, model_dir: str, policy: str, labels: Optional[dict[str, int]] = None,
            extra: str = "") -> None:
    label_text = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{model_dir}" '
                f'model_platform: "tensorflow" model_version_policy {{ {policy} }}{label_text} }} {extra}}}\n')
    os.replace(tmp, path)  # as an editor or a deploy tool would: never half-written


@pytest.fixture(scope="module")
def three_versions(base: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("three") / MODEL)
    shutil.copytree(os.path.join(base, MODEL, "1"), os.path.join(d, "1"))
    export_toy(d, 2)
    export_toy(d, 3)
    return d


def _version(st: Stubs, version: Optional[int] = None, label: str = "") -> int:
    r = request(version=version)
    if label:
        r.model_spec.version_label = label  # version and version_label are a oneof
    return int(st.predict.Predict(r, timeout=30).model_spec.version.value)


def _rest_version(url: str, suffix: str = "") -> tuple[int, Any]:
    r = requests.post(f"{url}/v1/models/{MODEL}{suffix}:predict", json={"inputs": {"x": [[1, 2, 3]], "k": [1]}},
                      timeout=60)
    return r.status_code, r.json()


def test_read_policies(tmp_path: Any, three_versions: str) -> None:
    path = str(tmp_path / "models.config")
    for text, want in [("latest { num_versions: 2 }", VersionPolicy("latest", 2)), ("all {}", VersionPolicy("all")),
                       ("specific { versions: 3 versions: 1 }", VersionPolicy("specific", versions=(1, 3)))]:
        _config(path, three_versions, text)
        assert read_models_config(path)[0].policy == want
    _config(path, three_versions, "specific { versions: 1 }", {"canary": 2})
    with pytest.raises(ValueError, match="label 'canary' names version 2"):
        read_models_config(path)


def test_policies_labels_and_hot_reload(tmp_path: Any, three_versions: str) -> None:
    path = str(tmp_path / "models.config")
    _config(path, three_versions, "specific { versions: 1 versions: 2 }", {"stable": 1, "canary": 2})
    s = ModelServer(str(tmp_path), models_config=path, port=0, rest_port=0, poll_seconds=0.05)
    s.start()
    st = Stubs(s.port)
    url = s.rest.url
    try:
        # specific {1, 2}: both served, latest is 2, 3 is never loaded; labels over gRPC and REST.
        status = st.status()
        assert {v: x.state for v, x in status.items()} == {1: AVAILABLE, 2: AVAILABLE}
        assert _version(st) == 2 and _version(st, 1) == 1 and _version(st, label="stable") == 1
        assert _version(st, label="canary") == 2
        code, body = _rest_version(url, "/labels/stable")
        assert code == 200 and body["outputs"]["version"] == [1]
        assert _rest_version(url, "/labels/canary")[1]["outputs"]["version"] == [2]
        assert _rest_version(url, "/versions/1")[1]["outputs"]["version"] == [1]
        label_status = requests.get(f"{url}/v1/models/{MODEL}/labels/canary", timeout=30).json()
        assert label_status["model_version_status"][0]["version"] == "2"
        code, body = _rest_version(url, "/labels/nope")
        assert code == 400 and "Unrecognized servable version label: nope" in body["error"]
        code, body = _rest_version(url, "/versions/3")
        assert code == 404
        with pytest.raises(grpc.RpcError) as e:
            _version(st, label="nope")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Hot reload: the label moves (stable -> 2), canary names 3, which the new policy allows.
        _config(path, three_versions, "specific { versions: 2 versions: 3 }", {"stable": 2, "canary": 3})
        wait_for(lambda: s.models.labels(MODEL) == {"stable": 2, "canary": 3}, what="labels moved")
        assert _version(st, label="stable") == 2 and _rest_version(url, "/labels/canary")[1]["outputs"]["version"] == [3]
        wait_for(lambda: st.status()[1].state == END, what="version 1 unloaded")

        # A label whose version is not served yet keeps its old version until the new one is AVAILABLE.
        _config(path, three_versions, "all {}", {"stable": 2, "canary": 4})
        wait_for(lambda: st.status()[1].state == AVAILABLE, what="all: version 1 served again")
        assert s.models.labels(MODEL)["canary"] == 3
        export_toy(three_versions, 4)
        wait_for(lambda: s.models.labels(MODEL).get("canary") == 4, what="canary -> 4 once 4 is AVAILABLE")
        assert _version(st) == 4 and {v for v, x in st.status().items() if x.state == AVAILABLE} == {1, 2, 3, 4}

        # latest {2}: only the two highest.
        _config(path, three_versions, "latest { num_versions: 2 }", {"stable": 3})
        wait_for(lambda: {v for v, x in st.status().items() if x.state == AVAILABLE} == {3, 4}, what="latest 2")
        wait_for(lambda: s.models.labels(MODEL) == {"stable": 3}, what="labels of the latest-2 config")
        code, body = _rest_version(url, "/labels/canary")
        assert code == 400  # canary is no longer configured

        # A broken edit is logged and ignored: the last good config keeps serving.
        polls = s.models.polls
        with open(path, "w") as f:
            f.write("model_config_list { this is not valid")
        wait_for(lambda: s.models.polls >= polls + 3, what="polls after a bad edit")
        assert _version(st) == 4 and _version(st, label="stable") == 3

        # Removing the model from the config stops serving it.
        with open(path + ".tmp", "w") as f:
            f.write("model_config_list { }\n")
        os.replace(path + ".tmp", path)
        wait_for(lambda: s.model_names == [], what="model removed")
        assert _rest_version(url)[0] == 404
    finally:
        st.channel.close()
        s.stop(grace=0.5)
