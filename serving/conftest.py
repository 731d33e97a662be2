"""Fixtures of the server tests: a model base holding version 1 of the toy model, a server over it, stubs."""

from __future__ import annotations

import os

import pytest

from serving.server import ModelServer
from serving.testing import MODEL, Stubs, export_toy


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    b = str(tmp_path_factory.mktemp("model_base"))
    export_toy(os.path.join(b, MODEL), 1)
    return b


@pytest.fixture(scope="module", params=["sync", "aio"])
def server(base: str, request: pytest.FixtureRequest):
    """A server over `base` with each gRPC front end (the tests using it run once per front end)."""
    s = ModelServer(base, port=0, num_threads=8, grpc_frontend=request.param)
    s.start()
    yield s
    s.stop(grace=1.0)


@pytest.fixture(scope="module")
def stubs(server: ModelServer):
    st = Stubs(server.port, max_send=64 << 20)
    yield st
    st.channel.close()
