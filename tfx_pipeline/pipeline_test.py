"""Construction tests: the DAG, config sections per component, the Vertex AI (Kubeflow V2) JSON, the pusher."""

import dataclasses
import importlib.util
import inspect
import json
import os

import pytest
from tfx.types import standard_artifacts

import learn_tf  # noqa: F401
from beam.embed_pipeline import run_embedding_job
from learn_tf.config import load_config
import tfx_pipeline.trainer_module
from tfx_pipeline.components import ServingPusherExecutor, Split, push_models, serving_pusher
from tfx_pipeline.components.item_embedding_gen import embedding_job_args
from tfx_pipeline.components.trainer import read_custom_config
from tfx_pipeline.kubeflow_v2_runner import PIPELINE_FILE, compile_vertex_pipeline, dataflow_beam_args
from tfx_pipeline.metadata import connection_config
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
    assert {"ExampleGen", "DataGate"} == _upstream(p, "SplitGen")
    assert {"Transform", "ItemEmbeddingGen", "SchemaGen", "SplitGen"} <= _upstream(p, "Trainer")
    assert {"Trainer", "SequenceGen", "ItemEmbeddingGen", "SplitGen"} <= _upstream(p, "Evaluator")
    assert {"SequenceGen"} <= _upstream(p, "Trainer")
    # The Pusher exports (Transform graph inside every model, ScaNN tuned on the split's histories), then pushes.
    assert {"Trainer", "Evaluator", "Transform", "SplitGen"} == _upstream(p, "Pusher")
    trainer = next(c for c in p.components if c.id == "Trainer")
    custom = json.loads(trainer.exec_properties["custom_config"])
    assert custom["config"]["model"]["d_model"] == 16 and custom["model_kind"] == "learn"
    assert trainer.exec_properties["run_fn"] == "tfx_pipeline.trainer_module.run_fn"
    schema_gen = next(c for c in p.components if c.id == "SchemaGen")
    assert type(schema_gen).__name__ == "SchemaGen"


def _exec_properties(cfg, tmp_path):
    p = create_pipeline(cfg, data_dir=str(tmp_path / "data"), pipeline_root=str(tmp_path / "root"))
    return {c.id: dict(c.exec_properties) for c in p.components}


def test_each_component_gets_only_its_config_sections(tiny_config_factory, tmp_path):
    """Editing serving.* leaves every execution property but the Pusher's unchanged, so TFX's cache holds."""
    cfg = load_config(tiny_config_factory())
    edited = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, port=9999, host="0.0.0.0",
                                                                  max_k=7, num_threads=3))
    before, after = _exec_properties(cfg, tmp_path), _exec_properties(edited, tmp_path)
    for node in ("DataGate", "SplitGen", "ItemEmbeddingGen", "Transform", "Trainer", "Evaluator"):
        assert before[node] == after[node], node
    assert before["Pusher"] != after["Pusher"]
    assert json.loads(after["Pusher"]["serving_config"])["max_k"] == 7
    # The Trainer reads only the model and train sections; SplitGen only the split section.
    custom = json.loads(before["Trainer"]["custom_config"])
    assert set(custom) == {"config", "model_kind"} and set(custom["config"]) == {"model", "train"}
    assert json.loads(before["SplitGen"]["split_config"]) == dataclasses.asdict(cfg.split)
    assert set(before["Evaluator"]) == {"model_name", "min_ndcg_at_10", "must_beat_content_knn", "eval_split"}
    assert before["Evaluator"]["model_name"] == "learn_a"
    # A change to what a component does read reaches it.
    retrain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    assert _exec_properties(retrain, tmp_path)["Trainer"] != before["Trainer"]
    resplit = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, seed=7))
    changed = _exec_properties(resplit, tmp_path)
    assert changed["SplitGen"] != before["SplitGen"] and changed["Trainer"] == before["Trainer"]


def test_embedding_speed_settings_reach_the_embedding_job(tiny_config_factory, tmp_path):
    """embedding.fast_tokenizer / jit_compile are ItemEmbeddingGen properties and reach run_embedding_job."""
    cfg = load_config(tiny_config_factory())
    before = _exec_properties(cfg, tmp_path)["ItemEmbeddingGen"]
    args = embedding_job_args(before)
    assert (args["fast_tokenizer"], args["jit_compile"]) == (cfg.embedding.fast_tokenizer, cfg.embedding.jit_compile)
    edited = dataclasses.replace(cfg, embedding=dataclasses.replace(
        cfg.embedding, fast_tokenizer=not cfg.embedding.fast_tokenizer, jit_compile=not cfg.embedding.jit_compile))
    after = _exec_properties(edited, tmp_path)["ItemEmbeddingGen"]
    assert after != before
    args = embedding_job_args(after)
    assert args["fast_tokenizer"] is (not cfg.embedding.fast_tokenizer)
    assert args["jit_compile"] is (not cfg.embedding.jit_compile)
    # Every key of the job's settings comes from the embedding section (none left at the job's default).
    params = inspect.signature(run_embedding_job).parameters
    assert set(args) <= set(params)
    assert {"fast_tokenizer", "jit_compile", "model", "template", "pooling", "max_tokens", "batch_size",
            "postprocess_method", "whiten_dim", "num_shards"} == set(args)


def test_cllm4rec_model_kind_gives_the_trainer_only_its_section(tiny_config_factory, tmp_path):
    """pipeline.model_kind cllm4rec: the Trainer gets the cllm4rec section and the item-text template only."""
    cfg = load_config(tiny_config_factory(pipeline={"model_kind": "cllm4rec"}))
    before = _exec_properties(cfg, tmp_path)
    custom = json.loads(before["Trainer"]["custom_config"])
    assert custom["model_kind"] == "cllm4rec" and set(custom["config"]) == {"cllm4rec", "template"}
    assert custom["config"]["cllm4rec"] == dataclasses.asdict(cfg.cllm4rec)
    assert read_custom_config(custom).cllm4rec == cfg.cllm4rec
    assert before["Evaluator"]["model_name"] == "cllm4rec"
    retrain = dataclasses.replace(cfg, cllm4rec=dataclasses.replace(cfg.cllm4rec, finetune_epochs=2))
    assert _exec_properties(retrain, tmp_path)["Trainer"] != before["Trainer"]
    towers_only = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    assert _exec_properties(towers_only, tmp_path)["Trainer"] == before["Trainer"]
    # The LEARN Trainer does not see the cllm4rec section.
    learn = load_config(tiny_config_factory())
    edited = dataclasses.replace(learn, cllm4rec=dataclasses.replace(learn.cllm4rec, finetune_epochs=2))
    assert _exec_properties(edited, tmp_path)["Trainer"] == _exec_properties(learn, tmp_path)["Trainer"]


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
    m = tfx_pipeline.trainer_module
    public = [n for n in vars(m) if not n.startswith("_") and n != "annotations"]
    assert public == ["run_fn"]
    assert m.__all__ == ["run_fn"]


@pytest.mark.skipif(importlib.util.find_spec("kfp") is None,
                    reason="kfp-pipeline-spec (TFX's Kubeflow V2 compiler dependency) is not installed")
def test_vertex_pipeline_json_has_components_and_dataflow_args(tiny_config_factory, tmp_path):
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
    assert "tfx_pipeline.components.item_embedding_gen.ItemEmbeddingGenExecutor" in emb
    trainer = next(v for k, v in executors.items() if "Trainer" in k)["container"]["args"]
    assert "tfx_pipeline.components.trainer.LearnTrainerExecutor" in trainer
    # The data gate sits between validation and everything downstream.
    tasks = spec["root"]["dag"]["tasks"]
    assert "ExampleValidator" in tasks["DataGate"]["dependentTasks"]
    assert "DataGate" in tasks["Transform"]["dependentTasks"]
    assert "DataGate" in tasks["ItemEmbeddingGen"]["dependentTasks"]
    assert "ItemEmbeddingGen" in tasks["Trainer"]["dependentTasks"]
    assert "gs://my-bucket/learn/embedding_cache" in json.dumps(spec["root"]["dag"]["tasks"]["ItemEmbeddingGen"])


def test_vertex_compile_needs_gcp_settings(tiny_config_factory, tmp_path):
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


def test_pusher_skips_unblessed_models_and_pushes_blessed_ones(tmp_path, monkeypatch):
    exports = []

    def fake_export(towers_dir, split_uri, transform_output, settings, out_dir):  # the real one: e2e_test
        exports.append((towers_dir, split_uri, transform_output, settings.max_k))
        _fake_export(out_dir, ["learn_user", "learn_item"])

    monkeypatch.setattr(serving_pusher, "export_models", fake_export)
    model = _artifact(standard_artifacts.Model, tmp_path / "model")
    inputs = {"model": [model], "transform_graph": [_artifact(standard_artifacts.TransformGraph, tmp_path / "tg")],
              "split": [_artifact(Split, tmp_path / "split")]}
    props = {"model_base": str(tmp_path / "serving"), "serving_config": json.dumps({"max_k": 5})}
    base = props["model_base"]
    for blessed in (0, 1):
        blessing = _artifact(standard_artifacts.ModelBlessing, tmp_path / f"blessing{blessed}")
        blessing.set_int_custom_property("blessed", blessed)
        pushed = _artifact(standard_artifacts.PushedModel, tmp_path / f"pushed{blessed}")
        ServingPusherExecutor().Do({**inputs, "model_blessing": [blessing]}, {"pushed_model": [pushed]}, props)
        assert len(exports) == blessed  # only a blessed model is exported
        assert pushed.get_int_custom_property("pushed") == blessed
        if not blessed:
            assert not os.path.exists(base)
    assert pushed.get_int_custom_property("pushed_version") == 1
    assert sorted(os.listdir(base)) == ["batching_parameters.txt", "learn_item", "learn_user", "models.config",
                                        "models.stock.config"]
