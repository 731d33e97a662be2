"""learn_tf.utils.io on a local folder, TensorFlow's ram:// and gs:// (a GCS emulator on 127.0.0.1)."""

import os

import pandas as pd
import pytest

from learn_tf.utils import emulators, io

BUCKET = "learn-io-test"


@pytest.fixture(scope="module")
def gcs():
    with emulators.gcs_bucket(BUCKET) as root:
        yield root


def _roundtrip(root: str, scratch: str) -> None:
    d = f"{root}/a"
    io.write_json(f"{d}/x.json", {"b": 1, "a": [1, 2]})
    assert io.read_json(f"{d}/x.json") == {"a": [1, 2], "b": 1}
    io.write_bytes(f"{d}/.run-1/s.bin", b"\x00\x01")
    io.write_parquet(pd.DataFrame({"k": ["u", "v"]}), f"{d}/t.parquet")
    assert io.read_parquet(f"{d}/t.parquet")["k"].tolist() == ["u", "v"]
    assert io.listdir(d) == [".run-1", "t.parquet", "x.json"]
    assert io.list_files(d) == [".run-1/s.bin", "t.parquet", "x.json"]
    assert io.isdir(f"{d}/.run-1") and not io.isdir(f"{d}/x.json") and io.exists(f"{d}/x.json")
    assert io.glob(f"{d}/*.json") == [f"{d}/x.json"]
    io.rename(f"{d}/x.json", f"{d}/y.json")
    assert not io.exists(f"{d}/x.json") and io.read_json(f"{d}/y.json")["b"] == 1
    copied = io.copy_tree(d, f"{root}/b", last=("y.json",))
    assert copied[-1] == "y.json" and io.list_files(f"{root}/b") == io.list_files(d)
    with io.local_copy(f"{root}/b") as local:
        assert sorted(os.listdir(local)) == [".run-1", "t.parquet", "y.json"]
    with io.staged_dir(f"{root}/c", last=("m.json",)) as out:
        with open(os.path.join(out, "m.json"), "w") as f:
            f.write("{}")
    assert io.read_json(f"{root}/c/m.json") == {}
    io.rmtree(f"{d}/.run-1")
    io.remove(f"{d}/t.parquet")
    assert io.listdir(d) == ["y.json"]
    assert io.sha256_file(f"{d}/y.json") == io.sha256_file(f"{root}/b/y.json")
    with pytest.raises(RuntimeError):
        with io.atomic_open(f"{d}/z.json") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert not io.exists(f"{d}/z.json")  # a crashed write leaves nothing under the final name


def test_local_paths(tmp_path):
    _roundtrip(str(tmp_path / "root"), str(tmp_path))


def test_tensorflow_uri():
    _roundtrip("ram://io_test", "")


def test_gcs_through_beam_filesystems(gcs, tmp_path):
    _roundtrip(f"{gcs}/root", str(tmp_path))
    assert io.is_uri(gcs) and not io.is_uri(str(tmp_path))
