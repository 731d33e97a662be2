"""Construction tests: the DAG, the Vertex AI (Kubeflow V2) JSON, the pusher's layout, module contracts."""

import importlib.util
import json
import os

import pytest

import learn_tf  # noqa: F401
from learn_tf.config import load_config
from tfx_pipeline.pipeline import COMPONENT_IDS, create_pipeline, pipeline_name, resolve_schema_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(ROOT, "configs", "interactions_schema.pbtxt")


def _upstream(pipeline, node_id):
    node = next(c for c in pipeline.components if c.id == node_id)
    return {u.id for u in node.upstream_nodes}


def test_create_pipeline_wires_every_component(tiny_config_factory, tmp_path):
    cfg = load_config(tiny_config_factory())
    p = create_pipeline(cfg, data_dir=str(tmp_path / "data"))
    assert [c.id for c in p.components] != [] and {c.id for c in p.components} == set(COMPONENT_IDS)
    assert p.pipeline_info.pipeline_name == pipeline_name(cfg) == "learn-tiny"
    assert p.beam_pipeline_args == list(cfg.pipeline.beam_args)
    assert "--direct_running_mode=in_memory" in p.beam_pipeline_args
    assert {"ExampleValidator", "ExampleGen"} <= _upstream(p, "DataGate")
    assert "DataGate" in _upstream(p, "ItemEmbeddingGen") and "DataGate" in _upstream(p, "Transform")
    assert {"Transform", "ItemEmbeddingGen", "SchemaGen"} <= _upstream(p, "Trainer")
    assert {"Trainer", "ExampleGen", "ItemEmbeddingGen"} <= _upstream(p, "Evaluator")
    assert {"Trainer", "Evaluator"} == _upstream(p, "Pusher")
    trainer = next(c for c in p.components if c.id == "Trainer")
    custom = json.loads(trainer.exec_properties["custom_config"])
    assert custom["config"]["model"]["d_model"] == 16 and custom["model_kind"] == "learn"
    assert trainer.exec_properties["run_fn"] == "tfx_pipeline.trainer_module.run_fn"
    schema_gen = next(c for c in p.components if c.id == "SchemaGen")
    assert type(schema_gen).__name__ == "SchemaGen"


def test_curated_schema_uses_import_schema_gen(tiny_config_factory, tmp_path):
    cfg = load_config(tiny_config_factory(pipeline={"schema_path": "configs/interactions_schema.pbtxt"}))
    path = resolve_schema_path(cfg)
    assert path == SCHEMA
    p = create_pipeline(cfg, data_dir=str(tmp_path / "data"), schema_path=path)
    schema_gen = next(c for c in p.components if c.id == "SchemaGen")
    assert type(schema_gen).__name__ == "ImportSchemaGen"
    assert schema_gen.exec_properties["schema_file"] == SCHEMA
    missing = load_config(tiny_config_factory(pipeline={"schema_path": "configs/nope.pbtxt"}))
    with pytest.raises(FileNotFoundError, match="nope.pbtxt"):
        resolve_schema_path(missing)


def test_trainer_module_exposes_only_run_fn():
    import tfx_pipeline.trainer_module as m

    public = [n for n in vars(m) if not n.startswith("_") and n != "annotations"]
    assert public == ["run_fn"]
    assert m.__all__ == ["run_fn"]


@pytest.mark.skipif(importlib.util.find_spec("kfp") is None,
                    reason="kfp-pipeline-spec (TFX's Kubeflow V2 compiler dependency) is not installed")
def test_vertex_pipeline_json_has_components_and_dataflow_args(tiny_config_factory, tmp_path):
    from tfx_pipeline.kubeflow_v2_runner import PIPELINE_FILE, compile_vertex_pipeline

    cfg = load_config(tiny_config_factory(pipeline={
        "gcp_project": "my-project", "gcp_region": "europe-west4", "gcs_root": "gs://my-bucket/learn",
        "dataflow_machine_type": "n1-highmem-4", "dataflow_max_workers": 5,
        "schema_path": "configs/interactions_schema.pbtxt"}))
    path = compile_vertex_pipeline(cfg, str(tmp_path / "out"), image="europe-docker.pkg.dev/p/r/learn:1")
    assert os.path.basename(path) == PIPELINE_FILE
    with open(path) as f:
        job = json.load(f)
    spec = job["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "learn-tiny"
    assert set(spec["root"]["dag"]["tasks"]) == set(COMPONENT_IDS)
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://my-bucket/learn/tfx/learn-tiny"
    executors = spec["deploymentSpec"]["executors"]
    want = {"--runner=DataflowRunner", "--project=my-project", "--region=europe-west4",
            "--temp_location=gs://my-bucket/learn/tmp", "--machine_type=n1-highmem-4", "--max_num_workers=5"}
    beam_nodes = [k for k in executors if any(n in k for n in ("ItemEmbeddingGen", "Transform", "StatisticsGen",
                                                                  "ExampleGen"))]
    assert len(beam_nodes) >= 4
    for key in beam_nodes:
        container = executors[key]["container"]
        assert want <= set(container["args"]), key
        assert container["image"] == "europe-docker.pkg.dev/p/r/learn:1"
    emb = next(v for k, v in executors.items() if "ItemEmbeddingGen" in k)["container"]["args"]
    assert "tfx_pipeline.components.ItemEmbeddingGenExecutor" in emb
    trainer = next(v for k, v in executors.items() if "Trainer" in k)["container"]["args"]
    assert "tfx_pipeline.components.LearnTrainerExecutor" in trainer
    # The data gate sits between validation and everything downstream.
    tasks = spec["root"]["dag"]["tasks"]
    assert "ExampleValidator" in tasks["DataGate"]["dependentTasks"]
    assert "DataGate" in tasks["Transform"]["dependentTasks"]
    assert "DataGate" in tasks["ItemEmbeddingGen"]["dependentTasks"]
    assert "ItemEmbeddingGen" in tasks["Trainer"]["dependentTasks"]
    assert "gs://my-bucket/learn/embedding_cache" in json.dumps(spec["root"]["dag"]["tasks"]["ItemEmbeddingGen"])


def test_vertex_compile_needs_gcp_settings(tiny_config_factory, tmp_path):
    from tfx_pipeline.kubeflow_v2_runner import compile_vertex_pipeline, dataflow_beam_args

    cfg = load_config(tiny_config_factory())
    with pytest.raises(ValueError, match="pipeline.gcp_project and pipeline.gcs_root"):
        dataflow_beam_args(cfg)
    with pytest.raises(ValueError, match="pipeline.gcp_project"):
        compile_vertex_pipeline(cfg, str(tmp_path))


def _fake_export(base, names, version=1):
    for n in names:
        d = os.path.join(base, n, str(version))
        os.makedirs(os.path.join(d, "variables"))
        with open(os.path.join(d, "saved_model.pb"), "w") as f:
            f.write(n)


def test_push_models_versions_and_layout(tmp_path):
    from tfx_pipeline.components import push_models

    export, base = str(tmp_path / "export"), str(tmp_path / "serving")
    names = ["learn_user", "learn_item", "learn_retrieval_bf"]
    _fake_export(export, names)
    v1, paths = push_models(export, base)
    v2, _ = push_models(export, base)
    assert (v1, v2) == (1, 2)
    for n in names:
        assert sorted(os.listdir(os.path.join(base, n))) == ["1", "2"]  # no temporary directories left
        assert os.path.exists(os.path.join(base, n, "2", "saved_model.pb"))
    assert paths["learn_user"] == os.path.join(base, "learn_user", "1")
    with open(os.path.join(base, "models.config")) as f:
        text = f.read()
    assert all(f'name: "{n}"' in text for n in names)
    with pytest.raises(FileNotFoundError):
        push_models(str(tmp_path / "empty"), base)


def test_metadata_connection_sqlite_and_mysql(tmp_path):
    from tfx_pipeline.local_runner import connection_config

    c = connection_config(str(tmp_path / "m" / "metadata.db"))
    assert c.sqlite.filename_uri.endswith("metadata.db") and (tmp_path / "m").is_dir()
    m = connection_config("mysql://learn:s%40cret@mlmd.internal:3307/learn_mlmd")
    assert (m.mysql.host, m.mysql.port, m.mysql.database, m.mysql.user, m.mysql.password) == (
        "mlmd.internal", 3307, "learn_mlmd", "learn", "s@cret")
    with pytest.raises(ValueError, match="mysql://"):
        connection_config("mysql://host-only")


def _artifact(cls, uri):
    a = cls()
    a.uri = str(uri)
    return a


def test_pusher_skips_unblessed_models_and_pushes_blessed_ones(tmp_path):
    from tfx.types import standard_artifacts

    from tfx_pipeline.components import ServingPusherExecutor

    model = _artifact(standard_artifacts.Model, tmp_path / "model")
    _fake_export(str(tmp_path / "model" / "Format-Serving" / "serving"), ["learn_user", "learn_item"])
    base = str(tmp_path / "serving")
    for blessed in (0, 1):
        blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / f"blessing{blessed}")
        blessing.set_int_custom_property("blessed", blessed)
        pushed = _artifact(standard_artifacts.PushedModel, tmp_path / f"pushed{blessed}")
        ServingPusherExecutor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                                   {"model_base": base})
        assert pushed.get_int_custom_property("pushed") == blessed
        if not blessed:
            assert not os.path.exists(base)
    assert pushed.get_int_custom_property("pushed_version") == 1
    assert sorted(os.listdir(base)) == ["batching_parameters.txt", "learn_item", "learn_user", "models.config",
                                        "models.stock.config"]
