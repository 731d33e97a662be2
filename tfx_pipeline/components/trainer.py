"""LearnTrainer: TFX's Trainer (generic executor, `run_fn`) that also consumes ItemEmbeddings, the Split and
the UserSequences it streams its training input from.

Its `custom_config` carries only what training reads: the `model` and
`train` config sections (as plain data under "config") and the model kind;
for the model kind "cllm4rec", the `cllm4rec` section and the item-text
template (`embedding.template`) instead.
The executor adds the URIs of the embeddings, the split and the sequences to the FnArgs,
which are not execution properties and so never affect the cache.

On Vertex AI the Trainer can run as a Vertex AI Training job with several
worker pools (`vertex_training_config`): `VertexLearnTrainerExecutor` submits
it, each replica runs `LearnTrainerExecutor` with Vertex's `TF_CONFIG`, and
`learn_tf.training.distribute` trains with MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.extensions.google_cloud_ai_platform import constants as vertex_constants
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_executor
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec
from tfx.utils import json_utils

from learn_tf.config import CLLM4RecConfig, ModelConfig, TrainConfig
from tfx_pipeline import sections
from tfx_pipeline.components.artifacts import ItemEmbeddings, Split, UserSequences


CLLM4REC_KIND = "cllm4rec"  # pipeline.model_kind that trains CLLM4Rec (learn_tf.cllm4rec) instead of towers


@dataclass(frozen=True)
class TrainerSections:
    """The config sections the Trainer receives: the model and train sections `learn_tf.training.jobs` builds
    towers from, or, for CLLM4Rec, the `cllm4rec` section and the item-text template."""

    model_kind: str
    model: Optional[ModelConfig] = None
    train: Optional[TrainConfig] = None
    cllm4rec: Optional[CLLM4RecConfig] = None
    template: Optional[str] = None


def trainer_custom_config(model: ModelConfig, train: TrainConfig, model_kind: str,
                          cllm4rec: Optional[CLLM4RecConfig] = None, template: Optional[str] = None) -> dict[str, Any]:
    """The Trainer's custom_config: {"config": {"model", "train"} as plain data, "model_kind"};
    for CLLM4Rec {"config": {"cllm4rec", "template"}, "model_kind"} (only what it trains with).

    Raises:
      ValueError: model kind "cllm4rec" without the `cllm4rec` section or the template.
    """
    if model_kind == CLLM4REC_KIND:
        if cllm4rec is None or template is None:
            raise ValueError("model kind 'cllm4rec' needs the cllm4rec section and embedding.template")
        return {"config": {"cllm4rec": sections.section_dict(cllm4rec), "template": template},
                "model_kind": model_kind}
    return {"config": {"model": sections.section_dict(model), "train": sections.section_dict(train)},
            "model_kind": model_kind}


def read_custom_config(custom_config: dict[str, Any]) -> TrainerSections:
    """The sections `trainer_custom_config` packed (what `run_fn` trains with)."""
    c, kind = custom_config["config"], custom_config["model_kind"]
    if kind == CLLM4REC_KIND:
        return TrainerSections(model_kind=kind, cllm4rec=sections.section_from_dict(CLLM4RecConfig, c["cllm4rec"]),
                               template=c["template"])
    return TrainerSections(model_kind=kind, model=sections.section_from_dict(ModelConfig, c["model"]),
                           train=sections.section_from_dict(TrainConfig, c["train"]))


class LearnTrainerSpec(ComponentSpec):
    """TFX's TrainerSpec plus the item embeddings, split and user sequences inputs."""

    PARAMETERS = dict(standard_component_specs.TrainerSpec.PARAMETERS)
    INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
              "item_embeddings": ChannelParameter(type=ItemEmbeddings),
              "split": ChannelParameter(type=Split),
              "sequences": ChannelParameter(type=UserSequences)}
    OUTPUTS = dict(standard_component_specs.TrainerSpec.OUTPUTS)
    TYPE_ANNOTATION = standard_component_specs.TrainerSpec.TYPE_ANNOTATION


class LearnTrainerExecutor(trainer_executor.GenericExecutor):
    """TFX's generic Trainer executor; custom_config gains `item_embeddings_uri`, `split_uri`, `sequences_uri`."""

    def _GetFnArgs(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
                   exec_properties: dict[str, Any]) -> Any:
        """FnArgs of the generic Trainer, with the embeddings', the split's and the sequences' URIs in custom_config."""
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        fn_args.custom_config = dict(fn_args.custom_config or {})
        fn_args.custom_config["item_embeddings_uri"] = artifact_utils.get_single_uri(input_dict["item_embeddings"])
        fn_args.custom_config["split_uri"] = artifact_utils.get_single_uri(input_dict["split"])
        fn_args.custom_config["sequences_uri"] = artifact_utils.get_single_uri(input_dict["sequences"])
        return fn_args


class VertexLearnTrainerExecutor(vertex_executor.GenericExecutor):
    """Submits `LearnTrainerExecutor` as a Vertex AI Training job (worker pools from custom_config)."""

    def _GetExecutorClass(self) -> type:
        """The executor each Vertex replica runs."""
        return LearnTrainerExecutor


def vertex_training_config(project: str, region: str, image: str, workers: int,
                           machine_type: str = "n1-standard-8") -> dict[str, Any]:
    """custom_config entries that run the Trainer on Vertex AI Training with `workers` replicas.

    Worker pool 0 is the chief (one replica), pool 1 the other `workers - 1`
    replicas; Vertex gives each a `TF_CONFIG` (chief / worker), so training
    uses MultiWorkerMirroredStrategy when `workers` >= 2.
    """
    def pool(count: int) -> dict[str, Any]:
        return {"machine_spec": {"machine_type": machine_type}, "replica_count": count,
                "container_spec": {"image_uri": image}}

    pools = [pool(1)] + ([pool(workers - 1)] if workers > 1 else [])
    return {vertex_constants.ENABLE_VERTEX_KEY: True, vertex_constants.VERTEX_REGION_KEY: region,
            vertex_executor.TRAINING_ARGS_KEY: {"project": project, "worker_pool_specs": pools}}


class LearnTrainer(base_component.BaseComponent):
    """A TFX Trainer (run_fn, train/eval args) over the model and train sections, plus ItemEmbeddings and Split."""

    SPEC_CLASS = LearnTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(LearnTrainerExecutor)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel, schema: types.BaseChannel,
                 item_embeddings: types.BaseChannel, split: types.BaseChannel, sequences: types.BaseChannel,
                 run_fn: str, model: ModelConfig,
                 train: TrainConfig, model_kind: str, train_args: Any, eval_args: Any,
                 vertex_training: Optional[dict[str, Any]] = None, cllm4rec: Optional[CLLM4RecConfig] = None,
                 template: Optional[str] = None) -> None:
        """Args as TFX's Trainer (`run_fn` a module path), plus `item_embeddings`, `split`, `sequences` (SequenceGen)
        and the two sections (for model kind "cllm4rec": the `cllm4rec` section and `embedding.template`);
        `vertex_training` (`vertex_training_config`) runs it as a Vertex AI Training job."""
        custom_config = trainer_custom_config(model, train, model_kind, cllm4rec, template)
        if vertex_training:
            custom_config.update(vertex_training)
        super().__init__(custom_executor_spec=(executor_spec.ExecutorClassSpec(VertexLearnTrainerExecutor)
                                               if vertex_training else None), spec=LearnTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema, item_embeddings=item_embeddings,
            split=split, sequences=sequences, train_args=train_args, eval_args=eval_args, run_fn=run_fn,
            custom_config=json_utils.dumps(custom_config),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun)))
