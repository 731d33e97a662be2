"""The server assembly: message limits, binding, the command line and graceful shutdown on SIGTERM."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import learn_tf  # noqa: F401

import grpc
import numpy as np
import pytest

from serving.server import ModelServer
from serving.testing import MODEL, Stubs, request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_sigterm_shuts_down_gracefully(base: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "serving.server", "--model_base", base, "--port", "0",
                             "--grace", "1", "--tensorflow_intra_op_parallelism", "1",
                             "--tensorflow_inter_op_parallelism", "1", "--enable_batching"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the server did not start within 120 s"
        line = proc.stdout.readline()  # "serving toy on 127.0.0.1:PORT" once requests are accepted
        assert line.startswith(f"serving {MODEL} on 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        st = Stubs(int(line.strip().rsplit(":", 1)[1]))
        assert st.served_version() == 1
        out = st.predict.Predict(request(x=np.array([[1, 1, 1]], np.float32), k=np.ones(1, np.int32)), timeout=60)
        assert out.model_spec.version.value == 1  # served through the batch scheduler
        st.channel.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "received SIGTERM" in err and "stopped" in err
        assert "model toy version 1 is AVAILABLE" in err
        assert "TensorFlow threads: intra-op 1, inter-op 1" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tensorflow_thread_counts_are_checked() -> None:
    from serving.server import set_tensorflow_threads

    with pytest.raises(ValueError, match="intra_op parallelism must be >= 0"):
        set_tensorflow_threads(-1, 0)
    set_tensorflow_threads(0, 0)  # TensorFlow's defaults: nothing to set, fine after TF started
