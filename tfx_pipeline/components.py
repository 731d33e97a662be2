"""LEARN's custom TFX components: DataGate, ItemEmbeddingGen, LearnTrainer, RetrievalEvaluator, ServingPusher.

Each is a Python-class component (ComponentSpec + executor) so that it
compiles for Vertex AI Pipelines as well as running under LocalDagRunner.
The executors are thin: the work is done by `learn_tf`, `beam.embed_pipeline`
and `serving.export`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_beam_component, base_beam_executor, base_component, base_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_pipeline import data_io

BLESSED_KEY = "blessed"  # the custom property TFX's Pusher and Evaluator use
PUSHED_KEY = "pushed"


# --------------------------------------------------------------------------- artifact types


class DataReport(Artifact):
    """The data gate's verdict: anomalies and unknown-item counts (report.json / report.txt)."""

    # "namespace.Name", the form Vertex AI requires of custom types; values are custom properties
    # because Vertex's generic artifact schema admits no declared properties.
    TYPE_NAME = "learn.DataReport"


class ItemEmbeddings(Artifact):
    """Frozen-LLM item embeddings: `items.parquet` (the catalogue) + `embeddings/` (a published manifest).

    Custom properties (from the manifest): count, dim, input_dim, model_id,
    checksum, embedding_run_id, postprocess, forward_passes.
    """

    TYPE_NAME = "learn.ItemEmbeddings"


def _write_text(path: str, text: str) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- DataGate


class DataValidationError(RuntimeError):
    """The input data failed validation; the message is the readable report."""


class DataGateSpec(ComponentSpec):
    """DataGate: anomalies + examples in, a report out."""

    PARAMETERS = {
        "max_unknown_item_fraction": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {
        "report": ChannelParameter(type=DataReport),
    }


def _anomaly_lines(anomalies_artifact: Artifact) -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    lines = []
    splits = json.loads(anomalies_artifact.split_names or "[]")
    for split in splits:
        path = os.path.join(anomalies_artifact.uri, f"Split-{split}", "SchemaDiff.pb")
        if not os.path.exists(path):
            continue
        a = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            a.ParseFromString(f.read())
        for feature, info in sorted(a.anomaly_info.items()):
            lines.append(f"  [{split}] feature '{feature}': {info.short_description} ({info.description})")
        if a.HasField("dataset_anomaly_info"):
            info = a.dataset_anomaly_info
            lines.append(f"  [{split}] dataset: {info.short_description} ({info.description})")
    return lines


class DataGateExecutor(base_executor.BaseExecutor):
    """Stops the run with a readable report on schema anomalies or too many unknown items."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Checks the data; raises DataValidationError (so nothing downstream runs) when it fails."""
        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        anomalies = artifact_utils.get_single_instance(input_dict["anomalies"])
        report_artifact = artifact_utils.get_single_instance(output_dict["report"])
        limit = float(exec_properties["max_unknown_item_fraction"])

        items = data_io.read_items(examples_uri)
        interactions = data_io.read_interactions(examples_uri)
        problems = []
        anomaly_lines = _anomaly_lines(anomalies)
        if anomaly_lines:
            problems.append(f"schema anomalies ({len(anomaly_lines)}):")
            problems.extend(anomaly_lines)
        dup = items["item_id"][items["item_id"].duplicated()]
        if len(dup):
            problems.append(f"{len(dup):,} duplicate item ids in the catalogue, e.g. {dup.iloc[0]!r}")
        if len(items) == 0 or len(interactions) == 0:
            problems.append(f"empty input: {len(items):,} items, {len(interactions):,} interactions")
        unknown = ~interactions["item_id"].isin(set(items["item_id"]))
        n_unknown = int(unknown.sum())
        fraction = n_unknown / len(interactions) if len(interactions) else 0.0
        if fraction > limit:
            examples = interactions.loc[unknown, "item_id"].value_counts().head(5)
            shown = ", ".join(f"{k!r} ({v:,} rows)" for k, v in examples.items())
            problems.append(
                f"{n_unknown:,} of {len(interactions):,} interactions ({fraction:.2%}) reference items that are "
                f"not in the catalogue of {len(items):,} items (limit pipeline.max_unknown_item_fraction "
                f"{limit:.2%}); most frequent unknown ids: {shown}")
        report = {"items": len(items), "interactions": len(interactions), "unknown_item_interactions": n_unknown,
                  "unknown_item_fraction": fraction, "max_unknown_item_fraction": limit,
                  "anomalies": anomaly_lines, "problems": problems, "ok": not problems}
        _write_text(os.path.join(report_artifact.uri, "report.json"), json.dumps(report, indent=2))
        text = "Data validation " + ("passed" if not problems else "FAILED") + (
            f": {len(items):,} items, {len(interactions):,} interactions, {n_unknown:,} with unknown items\n")
        text += "".join(f"  - {p}\n" if not p.startswith("  ") else f"  {p}\n" for p in problems)
        _write_text(os.path.join(report_artifact.uri, "report.txt"), text)
        report_artifact.set_int_custom_property("anomalies", len(anomaly_lines))
        report_artifact.set_float_custom_property("unknown_item_fraction", fraction)
        if problems:
            raise DataValidationError(text + "The run stopped before embedding and training; fix the input data "
                                      "or the curated schema (pipeline.schema_path). Report: "
                                      + os.path.join(report_artifact.uri, "report.txt"))


class DataGate(base_component.BaseComponent):
    """Fails the run (before embedding and training) on schema anomalies or unknown items."""

    SPEC_CLASS = DataGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(DataGateExecutor)

    def __init__(self, examples: types.BaseChannel, anomalies: types.BaseChannel,
                 max_unknown_item_fraction: float) -> None:
        """Args: ExampleGen examples (items + interactions splits), ExampleValidator anomalies, the limit."""
        super().__init__(spec=DataGateSpec(examples=examples, anomalies=anomalies,
                                           max_unknown_item_fraction=float(max_unknown_item_fraction),
                                           report=types.Channel(type=DataReport)))


# --------------------------------------------------------------------------- ItemEmbeddingGen


class ItemEmbeddingGenSpec(ComponentSpec):
    """ItemEmbeddingGen: items examples in, ItemEmbeddings out."""

    PARAMETERS = {
        "model": ExecutionParameter(type=str),
        "template": ExecutionParameter(type=str),
        "pooling": ExecutionParameter(type=str),
        "max_tokens": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
        "postprocess": ExecutionParameter(type=str),
        "whiten_dim": ExecutionParameter(type=int, optional=True),
        "num_shards": ExecutionParameter(type=int),
        "cache_dir": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "data_report": ChannelParameter(type=DataReport),
    }
    OUTPUTS = {
        "embeddings": ChannelParameter(type=ItemEmbeddings),
    }


class ItemEmbeddingGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Runs `beam.embed_pipeline.run_embedding_job` with the pipeline's Beam args, incrementally."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Embeds the catalogue into the persistent cache dir, then snapshots the published files."""
        from beam.embed_pipeline import run_embedding_job

        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        out = artifact_utils.get_single_instance(output_dict["embeddings"])
        os.makedirs(out.uri, exist_ok=True)
        items = data_io.read_items(examples_uri)
        items_path = os.path.join(out.uri, data_io.ITEMS_FILE)
        items.sort_values("item_id", kind="mergesort").reset_index(drop=True).to_parquet(items_path, index=False)
        cache_dir = exec_properties["cache_dir"]
        os.makedirs(cache_dir, exist_ok=True)
        p = exec_properties
        result = run_embedding_job(
            items_path, cache_dir, model=p["model"], template=p["template"], pooling=p["pooling"],
            max_tokens=int(p["max_tokens"]), batch_size=int(p["batch_size"]), postprocess_method=p["postprocess"],
            whiten_dim=p.get("whiten_dim"), num_shards=int(p["num_shards"]),
            beam_args=list(self._beam_pipeline_args) or ["--direct_running_mode=in_memory"])
        m = result.manifest
        # Snapshot the published files: the cache directory moves on, the artifact must not.
        dest = os.path.join(out.uri, data_io.EMBEDDINGS_SUBDIR)
        os.makedirs(dest, exist_ok=True)
        from learn_tf.embeddings import store

        for name in [store.MANIFEST, m["transform_file"], *[f for g in m["files"].values() for f in g]]:
            shutil.copy2(os.path.join(cache_dir, name), os.path.join(dest, name))
        for key in ("count", "dim", "input_dim"):
            out.set_int_custom_property(key, int(m[key]))
        for key in ("model_id", "checksum", "postprocess"):
            out.set_string_custom_property(key, str(m[key]))
        out.set_string_custom_property("embedding_run_id", str(m["run_id"]))
        out.set_int_custom_property("forward_passes", int(result.counters.get("forward_passes", 0)))


class ItemEmbeddingGen(base_beam_component.BaseBeamComponent):
    """LEARN's content embedding generation: the frozen LLM over item text (Beam job, incremental cache)."""

    SPEC_CLASS = ItemEmbeddingGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ItemEmbeddingGenExecutor)

    def __init__(self, examples: types.BaseChannel, data_report: types.BaseChannel, model: str, template: str,
                 cache_dir: str, pooling: str = "mean", max_tokens: int = 128, batch_size: int = 32,
                 postprocess: str = "center", whiten_dim: Optional[int] = None, num_shards: int = 2) -> None:
        """Args: ExampleGen examples (items split), the DataGate report (ordering), embedding settings."""
        super().__init__(spec=ItemEmbeddingGenSpec(
            examples=examples, data_report=data_report, model=model, template=template, pooling=pooling,
            max_tokens=max_tokens, batch_size=batch_size, postprocess=postprocess, whiten_dim=whiten_dim,
            num_shards=num_shards, cache_dir=cache_dir, embeddings=types.Channel(type=ItemEmbeddings)))


# --------------------------------------------------------------------------- LearnTrainer


class LearnTrainerSpec(ComponentSpec):
    """TFX's TrainerSpec plus the item embeddings input."""

    PARAMETERS = dict(standard_component_specs.TrainerSpec.PARAMETERS)
    INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
              "item_embeddings": ChannelParameter(type=ItemEmbeddings)}
    OUTPUTS = dict(standard_component_specs.TrainerSpec.OUTPUTS)
    TYPE_ANNOTATION = standard_component_specs.TrainerSpec.TYPE_ANNOTATION


class LearnTrainerExecutor(trainer_executor.GenericExecutor):
    """TFX's generic Trainer executor; `custom_config["item_embeddings_uri"]` names the embeddings artifact."""

    def _GetFnArgs(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
                   exec_properties: dict[str, Any]) -> Any:
        """FnArgs of the generic Trainer, with the item embeddings' URI in custom_config."""
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        fn_args.custom_config = dict(fn_args.custom_config or {})
        fn_args.custom_config["item_embeddings_uri"] = artifact_utils.get_single_uri(input_dict["item_embeddings"])
        return fn_args


class LearnTrainer(base_component.BaseComponent):
    """A TFX Trainer (run_fn, train/eval args, custom_config) that also consumes ItemEmbeddings."""

    SPEC_CLASS = LearnTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(LearnTrainerExecutor)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel, schema: types.BaseChannel,
                 item_embeddings: types.BaseChannel, run_fn: str, custom_config: dict[str, Any],
                 train_args: Any, eval_args: Any) -> None:
        """Args as TFX's Trainer (`run_fn` a module path), plus `item_embeddings`."""
        from tfx.utils import json_utils

        super().__init__(spec=LearnTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema, item_embeddings=item_embeddings,
            train_args=train_args, eval_args=eval_args, run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun)))


# --------------------------------------------------------------------------- RetrievalEvaluator


class RetrievalEvaluatorSpec(ComponentSpec):
    """RetrievalEvaluator: model + raw examples + embeddings in; evaluation + blessing out."""

    PARAMETERS = {
        "config_json": ExecutionParameter(type=str),
        "min_ndcg_at_10": ExecutionParameter(type=float),
        "must_beat_content_knn": ExecutionParameter(type=int),
        "split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "item_embeddings": ChannelParameter(type=ItemEmbeddings),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class RetrievalEvaluatorExecutor(base_executor.BaseExecutor):
    """Full-catalogue Recall/NDCG/MRR per segment with learn_tf.evaluation; blesses or not."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Evaluates the trained model and content-kNN on the held-out split; writes results and the blessing."""
        from learn_tf.baselines import ContentKNNBaseline
        from learn_tf.config import config_from_dict
        from learn_tf.evaluation.evaluator import evaluate_models
        from learn_tf.evaluation.report import format_table, write_report
        from learn_tf.models.catalogue import TowerScorer
        from learn_tf.training.jobs import load_towers
        from tfx_pipeline.training_data import load_pipeline_data

        cfg = config_from_dict(json.loads(exec_properties["config_json"]), "<pipeline config>")
        split = exec_properties["split"]
        model_uri = artifact_utils.get_single_uri(input_dict["model"])
        data = load_pipeline_data(
            cfg, data_io.read_interactions(artifact_utils.get_single_uri(input_dict["examples"])),
            artifact_utils.get_single_uri(input_dict["item_embeddings"]))
        towers, model_cat, meta = load_towers(data_io.trained_towers_dir(model_uri))
        cat = data["catalogue"]
        if list(model_cat.item_ids) != list(cat.item_ids):
            raise ValueError("the model was trained on a different catalogue than the evaluation data")
        name = meta.get("name", "learn")
        scorers = {name: TowerScorer(towers, cat, int(meta["max_len"])).score,
                   "content_knn": ContentKNNBaseline(cat.item_ids, data["content"]).score}
        results = evaluate_models(scorers, data["cases"](split), cat.item_ids)
        results["split"] = split
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        write_report(results, evaluation.uri, plots=False)
        print(format_table(results))

        def ndcg(model: str) -> float:
            return float(results["models"][model]["masked"]["overall"]["metrics"]["ndcg@10"] or 0.0)

        min_ndcg = float(exec_properties["min_ndcg_at_10"])
        must_beat = bool(exec_properties["must_beat_content_knn"])
        reasons = []
        if ndcg(name) < min_ndcg:
            reasons.append(f"NDCG@10 {ndcg(name):.4f} < pipeline.min_ndcg_at_10 {min_ndcg:.4f}")
        if must_beat and ndcg(name) <= ndcg("content_knn"):
            reasons.append(f"NDCG@10 {ndcg(name):.4f} does not beat content-kNN {ndcg('content_knn'):.4f}")
        blessed = not reasons
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        os.makedirs(blessing.uri, exist_ok=True)
        _write_text(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "")
        _write_text(os.path.join(blessing.uri, "verdict.json"), json.dumps(
            {"blessed": blessed, "reasons": reasons, "ndcg@10": ndcg(name), "content_knn_ndcg@10": ndcg("content_knn"),
             "min_ndcg_at_10": min_ndcg, "must_beat_content_knn": must_beat, "split": split}, indent=2))
        blessing.set_int_custom_property(BLESSED_KEY, 1 if blessed else 0)
        blessing.set_string_custom_property("current_model", model_uri)
        blessing.set_float_custom_property("ndcg_at_10", ndcg(name))
        blessing.set_float_custom_property("content_knn_ndcg_at_10", ndcg("content_knn"))
        if reasons:
            blessing.set_string_custom_property("reasons", "; ".join(reasons))
        print(f"[learn pipeline] model {'BLESSED' if blessed else 'NOT blessed'}"
              + (": " + "; ".join(reasons) if reasons else ""))


class RetrievalEvaluator(base_component.BaseComponent):
    """Retrieval evaluation over the full catalogue (TFMA cannot) with a blessing threshold."""

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RetrievalEvaluatorExecutor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, item_embeddings: types.BaseChannel,
                 config_json: str, min_ndcg_at_10: float = 0.0, must_beat_content_knn: bool = False,
                 split: str = "test") -> None:
        """Args: the Trainer's model, raw examples, embeddings, the config (JSON) and the blessing rule."""
        super().__init__(spec=RetrievalEvaluatorSpec(
            model=model, examples=examples, item_embeddings=item_embeddings, config_json=config_json,
            min_ndcg_at_10=float(min_ndcg_at_10), must_beat_content_knn=int(bool(must_beat_content_knn)),
            split=split, evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))


# --------------------------------------------------------------------------- ServingPusher


class ServingPusherSpec(ComponentSpec):
    """ServingPusher: model + blessing in, PushedModel out."""

    PARAMETERS = {
        "model_base": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
    }


def exported_models(serving_dir: str) -> dict[str, str]:
    """{model name: version dir} of the SavedModels the Trainer exported under `serving_dir`."""
    found = {}
    if os.path.isdir(serving_dir):
        for name in sorted(os.listdir(serving_dir)):
            d = os.path.join(serving_dir, name)
            versions = sorted((v for v in os.listdir(d) if v.isdigit()), key=int) if os.path.isdir(d) else []
            if versions:
                found[name] = os.path.join(d, versions[-1])
    return found


def push_models(serving_dir: str, model_base: str) -> tuple[int, dict[str, str]]:
    """Copies every exported SavedModel to `<model_base>/<name>/<version>/`, atomically per model.

    All copies go to hidden temporary directories first; only when every copy
    is complete are they renamed into place (TF Serving ignores non-numeric
    directories), then `models.config` is rewritten.

    Returns:
      (version, {name: pushed path}).
    """
    models = exported_models(serving_dir)
    if not models:
        raise FileNotFoundError(f"no SavedModels under {serving_dir}")
    from serving.export import next_version, write_models_config

    version = next_version(model_base, list(models))  # one above any existing version of these models
    staged = {}
    try:
        for name, src in models.items():
            tmp = os.path.join(model_base, name, f".tmp-{version}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            staged[name] = tmp
        pushed = {}
        for name, tmp in staged.items():
            dst = os.path.join(model_base, name, str(version))
            os.rename(tmp, dst)
            pushed[name] = dst
    finally:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)
    write_models_config(model_base, list(models))
    return version, pushed


class ServingPusherExecutor(base_executor.BaseExecutor):
    """Pushes blessed models to the TF Serving model base; records `pushed` = 0 otherwise."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Copies the exported SavedModels when the blessing says so."""
        model_uri = artifact_utils.get_single_uri(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        base = exec_properties["model_base"]
        if not blessing.get_int_custom_property(BLESSED_KEY):
            pushed.set_int_custom_property(PUSHED_KEY, 0)
            print(f"[learn pipeline] model not blessed ({blessing.get_string_custom_property('reasons')}); "
                  "nothing pushed")
            return
        version, paths = push_models(data_io.exported_models_dir(model_uri), base)
        os.makedirs(pushed.uri, exist_ok=True)
        _write_text(os.path.join(pushed.uri, "pushed.json"), json.dumps(
            {"version": version, "model_base": base, "models": paths}, indent=2))
        pushed.set_int_custom_property(PUSHED_KEY, 1)
        pushed.set_string_custom_property("pushed_destination", base)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_models", ",".join(sorted(paths)))
        print(f"[learn pipeline] pushed version {version} of {', '.join(sorted(paths))} to {base}")


class ServingPusher(base_component.BaseComponent):
    """Pushes only blessed models to `<model_base>/<model_name>/<version>/` (several SavedModels at once)."""

    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingPusherExecutor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel, model_base: str) -> None:
        """Args: the Trainer's model, the RetrievalEvaluator's blessing, the TF Serving model base."""
        super().__init__(spec=ServingPusherSpec(model=model, model_blessing=model_blessing, model_base=model_base,
                                                pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
