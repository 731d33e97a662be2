"""ServingPusher: exports the blessed model (towers: serving.export; CLLM4Rec: serving.cllm4rec_export) and pushes
every SavedModel to the TF Serving base."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from learn_tf.config import ServingConfig
from learn_tf.data.splits import read_splits
from learn_tf.utils import io
from serving.cllm4rec_export import export_cllm4rec
from serving.export import export_trained
from serving.layout import SAVED_MODEL_FILE, next_version, write_models_config
from tfx_pipeline import data_io, sections
from tfx_pipeline.components.artifacts import Split
from tfx_pipeline.components.blessing import PUSHED_KEY, is_blessed, not_blessed_reasons

EXPORT_SUBDIR = "export"  # inside the PushedModel artifact: the SavedModels as exported, `<name>/1/`


class ServingPusherSpec(ComponentSpec):
    """ServingPusher: model + blessing + transform graph + split in, PushedModel out; the `serving` section."""

    PARAMETERS = {
        "model_base": ExecutionParameter(type=str),
        "serving_config": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
        "split": ChannelParameter(type=Split),
    }
    OUTPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
    }


def export_models(towers_dir: str, split_uri: str, transform_output: str, settings: ServingConfig,
                  out_dir: str) -> dict[str, Any]:
    """Exports the trained towers as `<out_dir>/<name>/1/` with `serving.export.export_trained`.

    ScaNN is tuned on the users' training histories of the run's split (the
    same queries as `learn export`); the Transform graph ships inside every
    model as the `transform_features` signature.
    """
    return export_trained(towers_dir, out_dir, settings, read_splits(split_uri).train, version=1,
                          transform_output=transform_output)


def export_cllm4rec_model(model_dir: str, split_uri: str, settings: ServingConfig, out_dir: str) -> dict[str, Any]:
    """Exports a trained CLLM4Rec as `<out_dir>/cllm4rec_retrieval/1/` with `serving.cllm4rec_export`.

    The serving prompt keeps the last `split.history_max_len` known items (the
    evaluation cases' history length, from the Split's manifest); `max_k` and
    the warmup requests come from the `serving` section.
    """
    max_history = int(read_splits(split_uri).summary["config"]["history_max_len"])
    return export_cllm4rec(model_dir, out_dir, max_k=settings.max_k, max_history=max_history, version=1,
                           warmup=settings.warmup_requests)


def exported_models(export_dir: str) -> dict[str, str]:
    """{model name: latest version dir} of the SavedModels exported under `export_dir`."""
    found = {}
    if io.isdir(export_dir):
        for name in io.listdir(export_dir):
            d = os.path.join(export_dir, name)
            versions = sorted((v for v in io.listdir(d) if v.isdigit()), key=int) if io.isdir(d) else []
            if versions:
                found[name] = os.path.join(d, versions[-1])
    return found


def push_models(export_dir: str, model_base: str) -> tuple[int, dict[str, str]]:
    """Copies every exported SavedModel to `<model_base>/<name>/<version>/`, atomically per model.

    Local model base: all copies go to hidden temporary directories first;
    only when every copy is complete are they renamed into place (TF Serving
    ignores non-numeric directories). Object store (no directory rename):
    each version is copied with `saved_model.pb` last, so it is loadable only
    once complete. Then `models.config` is rewritten (written last).

    Returns:
      (version, {name: pushed path}).
    """
    models = exported_models(export_dir)
    if not models:
        raise FileNotFoundError(f"no SavedModels under {export_dir}")
    version = next_version(model_base, list(models))  # one above any existing version of these models
    if io.is_uri(model_base):
        pushed = {}
        for name, src in models.items():
            dst = os.path.join(model_base, name, str(version))
            io.copy_tree(src, dst, last=(SAVED_MODEL_FILE,))
            pushed[name] = dst
        write_models_config(model_base, list(models))
        return version, pushed
    staged = {}  # local model base (`shutil`/`os.rename` below act on it only)
    try:
        for name, src in models.items():
            tmp = os.path.join(model_base, name, f".tmp-{version}")
            shutil.rmtree(tmp, ignore_errors=True)  # local model base
            io.copy_tree(src, tmp)
            staged[name] = tmp
        pushed = {}
        for name, tmp in staged.items():
            dst = os.path.join(model_base, name, str(version))
            os.rename(tmp, dst)  # local model base: atomic directory rename
            pushed[name] = dst
    finally:
        for tmp in staged.values():
            shutil.rmtree(tmp, ignore_errors=True)  # local model base: leftovers of a failed push
    write_models_config(model_base, list(models))
    return version, pushed


class ServingPusherExecutor(base_executor.BaseExecutor):
    """Exports and pushes blessed models (towers or CLLM4Rec) to the TF Serving model base; records `pushed` = 0
    otherwise."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Exports the trained towers and copies the SavedModels when the blessing says so."""
        model_uri = artifact_utils.get_single_uri(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        base = exec_properties["model_base"]
        if not is_blessed(blessing):
            pushed.set_int_custom_property(PUSHED_KEY, 0)
            print(f"[learn pipeline] model not blessed ({not_blessed_reasons(blessing)}); "
                  "nothing pushed")
            return
        export_dir = os.path.join(pushed.uri, EXPORT_SUBDIR)
        split_uri = artifact_utils.get_single_uri(input_dict["split"])
        settings = sections.section_from_json(ServingConfig, exec_properties["serving_config"])
        if data_io.holds_cllm4rec(model_uri):  # pipeline.model_kind "cllm4rec": history -> top-k, LLM per request
            export_cllm4rec_model(data_io.trained_cllm4rec_dir(model_uri), split_uri, settings, export_dir)
        else:
            export_models(data_io.trained_towers_dir(model_uri), split_uri,
                          artifact_utils.get_single_uri(input_dict["transform_graph"]), settings, export_dir)
        version, paths = push_models(export_dir, base)
        data_io.write_text(os.path.join(pushed.uri, "pushed.json"), json.dumps(
            {"version": version, "model_base": base, "models": paths}, indent=2))
        pushed.set_int_custom_property(PUSHED_KEY, 1)
        pushed.set_string_custom_property("pushed_destination", base)
        pushed.set_int_custom_property("pushed_version", version)
        pushed.set_string_custom_property("pushed_models", ",".join(sorted(paths)))
        print(f"[learn pipeline] pushed version {version} of {', '.join(sorted(paths))} to {base}")


class ServingPusher(base_component.BaseComponent):
    """Exports and pushes only blessed models to `<model_base>/<model_name>/<version>/` (all models at once)."""

    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingPusherExecutor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 transform_graph: types.BaseChannel, split: types.BaseChannel, model_base: str,
                 serving: ServingConfig) -> None:
        """Args: the Trainer's model, the Evaluator's blessing, the Transform graph, the split, the TF Serving
        model base and the `serving` section (index and export settings)."""
        super().__init__(spec=ServingPusherSpec(
            model=model, model_blessing=model_blessing, transform_graph=transform_graph, split=split,
            model_base=model_base, serving_config=sections.section_json(serving),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
