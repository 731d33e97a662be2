"""The Vertex AI compile with the Trainer on Vertex AI Training worker pools (multi-worker)."""

import importlib.util
import json

import pytest

from learn_tf.config import load_config
from tfx_pipeline.components.trainer import vertex_training_config
from tfx_pipeline.kubeflow_v2_runner import compile_vertex_pipeline


def test_worker_pools_are_one_chief_and_the_other_workers():
    cfg = vertex_training_config("p", "europe-west4", "img:1", workers=3, machine_type="n1-highmem-8")
    pools = next(v for k, v in cfg.items() if isinstance(v, dict))["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 2]
    assert {p["machine_spec"]["machine_type"] for p in pools} == {"n1-highmem-8"}
    assert {p["container_spec"]["image_uri"] for p in pools} == {"img:1"}
    one = vertex_training_config("p", "r", "img:1", workers=1)
    assert [p["replica_count"] for p in next(v for v in one.values() if isinstance(v, dict))["worker_pool_specs"]] \
        == [1]


@pytest.mark.skipif(importlib.util.find_spec("kfp") is None,
                    reason="kfp-pipeline-spec (TFX's Kubeflow V2 compiler dependency) is not installed")
def test_vertex_compile_sets_the_trainers_worker_pools(tiny_config_factory, tmp_path):
    cfg = load_config(tiny_config_factory(pipeline={
        "gcp_project": "my-project", "gcp_region": "europe-west4", "gcs_root": "gs://my-bucket/learn"}))
    path = compile_vertex_pipeline(cfg, str(tmp_path), image="europe-docker.pkg.dev/p/r/learn:1",
                                   trainer_workers=4, trainer_machine_type="n1-standard-16")
    with open(path) as f:
        spec = json.load(f)["pipelineSpec"]
    trainer = next(v for k, v in spec["deploymentSpec"]["executors"].items() if "Trainer" in k)["container"]["args"]
    assert "tfx_pipeline.components.trainer.VertexLearnTrainerExecutor" in trainer
    params = json.dumps(spec["root"]["dag"]["tasks"]["Trainer"])
    assert "worker_pool_specs" in params and "n1-standard-16" in params and "my-project" in params
    # Without workers the Trainer trains inside its pipeline step, as before.
    plain = compile_vertex_pipeline(cfg, str(tmp_path / "plain"), image="europe-docker.pkg.dev/p/r/learn:1")
    with open(plain) as f:
        args = next(v for k, v in json.load(f)["pipelineSpec"]["deploymentSpec"]["executors"].items()
                    if "Trainer" in k)["container"]["args"]
    assert "tfx_pipeline.components.trainer.LearnTrainerExecutor" in args
