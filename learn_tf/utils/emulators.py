"""Object-store emulators for tests: a GCS emulator (Beam's gs://) and an S3 server (TF's and Beam's s3://).

Both run as child processes on 127.0.0.1 from PyPI packages installed with the
`test` extra (`gcp-storage-emulator`, `moto[server]`; TensorFlow's s3:// needs
`tensorflow-io`). Start one, point the clients at it with `env()` (and, for
Beam's S3 IO, `beam_args()`), and always `stop()` it (a context manager does).

TensorFlow's own gs:// has no endpoint setting, so only Beam's gs:// (through
google-cloud-storage, `STORAGE_EMULATOR_HOST`) reaches the GCS emulator.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator, Optional, Sequence

HOST = "127.0.0.1"
S3_KEY = "testing"  # moto accepts any credentials
S3_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    """A console script of this Python environment (the emulators' launchers)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):  # the venv's bin folder, a local path
        raise FileNotFoundError(f"{path} not found: install the test extra (pip install -e '.[test]')")
    return path


class Emulator:
    """One emulator process on 127.0.0.1; `url` is its endpoint."""

    def __init__(self, kind: str, argv: Sequence[str], port: int, timeout: float = 60.0) -> None:
        """Starts `argv` and waits until `port` accepts connections (or raises RuntimeError)."""
        self.kind, self.port = kind, port
        self.url = f"http://{HOST}:{port}"
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the {kind} emulator did not start on {self.url}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stops the process (terminate, then kill after 10 s); idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- GCS (Beam's gs://)


def start_gcs() -> Emulator:
    """gcp-storage-emulator, in memory."""
    port = free_port()
    return Emulator("gcs", [_tool("gcp-storage-emulator"), "start", f"--host={HOST}", f"--port={port}",
                            "--in-memory"], port)


def gcs_env(url: str) -> dict[str, str]:
    """Environment that sends google-cloud-storage (Beam's gs://) to the emulator."""
    return {"STORAGE_EMULATOR_HOST": url, "GOOGLE_CLOUD_PROJECT": "test-project"}


def create_gcs_bucket(url: str, bucket: str) -> None:
    """Creates `bucket` in the GCS emulator at `url`."""
    from google.auth.credentials import AnonymousCredentials  # test-only client libraries
    from google.cloud import storage

    os.environ["STORAGE_EMULATOR_HOST"] = url
    storage.Client(project="test-project", credentials=AnonymousCredentials()).create_bucket(bucket)


def anonymous_beam_gcs() -> None:
    """Makes Beam's GCS client connect anonymously at once.

    Beam first looks for Google default credentials with retries and
    exponential back-off (about 30 s) before "Connecting anonymously"; a test
    machine has none, so the look-up is marked done with no credentials.
    """
    from apache_beam.internal.gcp import auth  # Beam's GCP auth state (test-only shortcut)

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


@contextlib.contextmanager
def gcs_bucket(bucket: str) -> Iterator[str]:
    """A running GCS emulator holding `bucket`, with this process pointed at it; yields `gs://bucket`.

    The environment variables it sets are restored (or removed) afterwards.
    """
    before = {k: os.environ.get(k) for k in gcs_env("")}
    with start_gcs() as emu:
        os.environ.update(gcs_env(emu.url))
        create_gcs_bucket(emu.url, bucket)
        anonymous_beam_gcs()
        try:
            yield f"gs://{bucket}"
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# --------------------------------------------------------------------------- S3 (TF's and Beam's s3://)


def start_s3() -> Emulator:
    """moto's S3 server."""
    port = free_port()
    return Emulator("s3", [_tool("moto_server"), "-H", HOST, "-p", str(port)], port)


def s3_env(url: str) -> dict[str, str]:
    """Environment for TensorFlow's s3:// (tensorflow-io) and boto3 against the server at `url`."""
    return {"S3_ENDPOINT": url, "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0", "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY, "AWS_REGION": S3_REGION,
            "AWS_DEFAULT_REGION": S3_REGION}


def s3_beam_args(url: str) -> list[str]:
    """Beam pipeline options for its S3 IO against the server at `url`."""
    return [f"--s3_endpoint_url={url}", f"--s3_access_key_id={S3_KEY}", f"--s3_secret_access_key={S3_KEY}",
            f"--s3_region_name={S3_REGION}"]


def create_s3_bucket(url: str, bucket: str) -> None:
    """Creates `bucket` in the S3 server at `url`."""
    import boto3  # test-only client library

    boto3.client("s3", endpoint_url=url, region_name=S3_REGION, aws_access_key_id=S3_KEY,
                 aws_secret_access_key=S3_KEY).create_bucket(Bucket=bucket)
