"""The tiny TFX pipeline with its data, pipeline root, embedding cache and model base on s3://.

An S3 server (moto) runs on 127.0.0.1; TensorFlow reaches it through
tensorflow-io's s3:// file system, Beam through its S3 IO (`--s3_endpoint_url`).
ML Metadata stays in a local sqlite file. The pipeline runs in a child process:
tensorflow-io's S3 client aborts the interpreter at exit ("pure virtual method
called"), so the child reports its findings as JSON and leaves with `os._exit`.
The same code paths (`learn_tf.utils.io`, tf.io.gfile, Beam FileSystems) serve
gs:// on GCP.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from learn_tf.testing import write_tiny_run_config
from learn_tf.utils import emulators

BUCKET = "learn-pipeline-test"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(config_path: str) -> dict:
    """Runs the pipeline twice (the second run cached) and reports what it finds on s3://."""
    from learn_app.pipeline_commands import run_pipeline_command
    from learn_tf.config import load_config
    from learn_tf.utils import io
    from serving.layout import SAVED_MODEL_FILE
    from tfx_pipeline.lineage import open_store, run_executions, run_ids

    cfg = load_config(config_path)
    layout = cfg.layout()
    report: dict = {"rc": [run_pipeline_command(cfg)]}
    store = open_store(layout.metadata_path)
    first = {e.node: e for e in run_executions(store, run_ids(store, "learn-tiny")[-1])}
    report["first"] = {n: e.state for n, e in first.items()}
    report["uris"] = sorted({a.uri for e in first.values() for arts in e.outputs.values() for a in arts})
    pushed = first["Pusher"].outputs["pushed_model"][0]
    report["pushed"] = pushed.properties.get("pushed")
    version = str(pushed.properties.get("pushed_version"))
    report["model_files"] = {n: io.exists(os.path.join(layout.model_base, n, version, SAVED_MODEL_FILE))
                             for n in ("learn_user", "learn_item", "learn_retrieval_bf")}
    report["models_config"] = io.exists(os.path.join(layout.model_base, "models.config"))
    emb = first["ItemEmbeddingGen"].outputs["embeddings"][0]
    report["embeddings"] = {"count": emb.properties.get("count"), "uri": emb.uri,
                            "files": io.listdir(os.path.join(emb.uri, "embeddings"))}
    report["rc"].append(run_pipeline_command(cfg))
    store = open_store(layout.metadata_path)
    runs = run_ids(store, "learn-tiny")
    report["runs"] = len(runs)
    report["second"] = {e.node: e.state for e in run_executions(store, runs[-1])}
    report["versions"] = io.listdir(os.path.join(layout.model_base, "learn_user"))
    return report


@pytest.fixture(scope="module")
def s3():
    """An S3 server on 127.0.0.1 with one bucket; yields (url, bucket URI)."""
    with emulators.start_s3() as emu:
        emulators.create_s3_bucket(emu.url, BUCKET)
        yield emu.url, f"s3://{BUCKET}"


@pytest.mark.e2e
def test_pipeline_on_s3_runs_then_hits_the_cache(s3, tmp_path, tiny_decoder_preset):
    url, bucket = s3
    overrides = {"train": {"epochs": 1}, "serving": {"warmup_requests": 1},
                 "embedding": {"batch_size": 32, "num_shards": 1},
                 "pipeline": {"metadata_path": str(tmp_path / "metadata.db"),
                              "beam_args": ["--direct_running_mode=in_memory", "--direct_num_workers=1",
                                            *emulators.s3_beam_args(url)]}}
    path = write_tiny_run_config(str(tmp_path), tiny_decoder_preset, overrides, filename="tiny_s3.yaml")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["output_dir"] = f"{bucket}/run"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f)
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, **emulators.s3_env(url), "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), path], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("S3_REPORT ")]
    assert lines, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    report = json.loads(lines[-1][len("S3_REPORT "):])

    assert report["rc"] == [0, 0]
    assert set(report["first"].values()) == {"COMPLETE"}, report["first"]
    assert all(u.startswith(f"{bucket}/run/tfx/") for u in report["uris"]), report["uris"]
    assert report["pushed"] == 1 and all(report["model_files"].values()) and report["models_config"]
    assert report["embeddings"]["count"] == 120 and "manifest.json" in report["embeddings"]["files"]
    assert report["runs"] == 2 and set(report["second"].values()) == {"CACHED"}, report["second"]
    assert len(report["versions"]) == 1  # nothing pushed twice
    assert os.listdir(work) == []  # no local folder named after a URI ("s3:") was created


if __name__ == "__main__":  # the child process of the test above
    result = _child(sys.argv[1])
    print("S3_REPORT " + json.dumps(result, default=str), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: tensorflow-io's S3 client aborts there
