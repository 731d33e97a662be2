"""The LEARN TFX pipeline, as pure construction: `create_pipeline(...) -> tfx.dsl.Pipeline`.

    ExampleGen (items + interactions TFRecords from `learn ingest`)
      -> StatisticsGen -> SchemaGen | ImportSchemaGen (curated) -> ExampleValidator
      -> DataGate (anomalies / unknown items stop the run here)
      -> SplitGen (the run's one leave-one-out split)
      -> SequenceGen (Beam: one SequenceExample per user, split roles per position)
      -> ItemEmbeddingGen (Beam frozen-LLM job, incremental cache)
    Transform (item-id vocabulary) --+
    ItemEmbeddings, UserSequences ---+-> LearnTrainer (run_fn: towers) -> RetrievalEvaluator (blessing)
                                                                      -> ServingPusher (export + push)

Each component receives only the config sections it reads (embedding ->
ItemEmbeddingGen, split -> SplitGen and SequenceGen, model + train -> Trainer (cllm4rec + the item-text
template when `pipeline.model_kind` is "cllm4rec"), serving ->
Pusher, a few pipeline values -> DataGate / Evaluator), so editing one section
re-runs only the components that use it. The runners (`local_runner.py`,
`kubeflow_v2_runner.py`) supply the metadata connection and Beam options;
this module never runs anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Optional, Sequence

from tfx import v1 as tfx

from learn_tf.config import Config
from learn_tf.data import schema as data_schema
from learn_tf.training.jobs import model_name
from learn_tf.utils import io
from tfx_pipeline import data_io
from tfx_pipeline.components import (DataGate, ItemEmbeddingGen, LearnTrainer, RetrievalEvaluator, SequenceGen,
                                     ServingPusher, SplitGen)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FN = "tfx_pipeline.trainer_module.run_fn"
PREPROCESSING_FN = "tfx_pipeline.preprocessing.preprocessing_fn"
COMPONENT_IDS = ("ExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "DataGate", "SplitGen",
                 "SequenceGen", "ItemEmbeddingGen", "Transform", "Trainer", "Evaluator", "Pusher")


def pipeline_name(cfg: Config) -> str:
    """A Vertex-compatible pipeline name for the config: `learn-<name>` (lowercase, digits, hyphens)."""
    return "learn-" + re.sub(r"[^a-z0-9-]+", "-", cfg.name.lower()).strip("-")


def resolve_schema_path(cfg: Config, config_dir: Optional[str] = None) -> Optional[str]:
    """The curated schema file when `pipeline.schema_path` is set and exists, else None.

    A relative path is tried against `config_dir`, the current directory and the repository root.

    Raises:
      FileNotFoundError: `pipeline.schema_path` is set but no such file exists.
    """
    path = cfg.pipeline.schema_path
    if not path:
        return None
    if io.is_uri(path):
        return path  # a schema on an object store: ImportSchemaGen reads it through TFX's fileio
    if os.path.isabs(path):
        candidates = [path]
    else:
        candidates = [os.path.join(d, path) for d in (config_dir, os.getcwd(), ROOT) if d]
    for c in candidates:
        if os.path.isfile(c):  # a curated schema shipped with the repo / config (a local input file)
            return os.path.abspath(c)
    raise FileNotFoundError(f"pipeline.schema_path {path!r} not found (tried {', '.join(candidates)})")


def create_pipeline(
    cfg: Config,
    data_dir: str,
    pipeline_root: Optional[str] = None,
    metadata_connection_config: Any = None,
    beam_pipeline_args: Optional[Sequence[str]] = None,
    enable_cache: bool = True,
    model_base: Optional[str] = None,
    schema_path: Optional[str] = None,
    embedding_cache_dir: Optional[str] = None,
    trainer_vertex_training: Optional[dict[str, Any]] = None,
) -> Any:
    """Builds the LEARN pipeline (nothing runs).

    Args:
      cfg: the job's config; each component gets only the sections it uses (see the module docstring).
      data_dir: the ingested data directory; ExampleGen reads `<data_dir>/tfrecords/`.
      pipeline_root: where artifacts go (default `cfg.resolved_pipeline_root()`).
      metadata_connection_config: ML Metadata connection (None for Kubeflow V2 / Vertex).
      beam_pipeline_args: Beam options of every Beam-based component (default `cfg.pipeline.beam_args`).
      enable_cache: reuse executions whose inputs and properties are unchanged.
      model_base: the TF Serving model base the Pusher writes to (default `cfg.resolved_model_base()`).
      schema_path: a curated schema (.pbtxt) imported with ImportSchemaGen instead of inferring one.
      embedding_cache_dir: the persistent incremental cache of the embedding job
        (default `<pipeline_root>/embedding_cache`, `RunLayout.embedding_cache`).
      trainer_vertex_training: run the Trainer as a Vertex AI Training job with these worker pools
        (`tfx_pipeline.components.trainer.vertex_training_config`); None trains in the pipeline's step.

    Returns:
      A `tfx.dsl.Pipeline` whose node ids are `COMPONENT_IDS`.
    """
    layout = cfg.layout()
    if pipeline_root:
        layout = dataclasses.replace(layout, pipeline_root_override=pipeline_root)
    root = layout.pipeline_root
    e, p = cfg.embedding, cfg.pipeline
    tfrecords = os.path.dirname(os.path.join(data_dir, data_schema.ITEMS_TFRECORD))
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name=data_io.ITEMS_SPLIT, pattern=os.path.basename(data_schema.ITEMS_TFRECORD)),
        tfx.proto.Input.Split(name=data_io.INTERACTIONS_SPLIT,
                              pattern=os.path.basename(data_schema.INTERACTIONS_TFRECORD)),
    ])
    example_gen = tfx.components.ImportExampleGen(input_base=tfrecords, input_config=input_config).with_id(
        "ExampleGen")
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"]).with_id("StatisticsGen")
    if schema_path:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path).with_id("SchemaGen")
    else:
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                              exclude_splits=[data_io.ITEMS_SPLIT]).with_id("SchemaGen")
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
        exclude_splits=[data_io.ITEMS_SPLIT]).with_id("ExampleValidator")
    data_gate = DataGate(examples=example_gen.outputs["examples"], anomalies=example_validator.outputs["anomalies"],
                         max_unknown_item_fraction=p.max_unknown_item_fraction).with_id("DataGate")
    split_gen = SplitGen(examples=example_gen.outputs["examples"], data_report=data_gate.outputs["report"],
                         split=cfg.split).with_id("SplitGen")
    sequence_gen = SequenceGen(examples=example_gen.outputs["examples"], split=split_gen.outputs["split"],
                               split_config=cfg.split).with_id("SequenceGen")
    embedding_gen = ItemEmbeddingGen(
        examples=example_gen.outputs["examples"], data_report=data_gate.outputs["report"], model=e.model,
        template=e.template, pooling=e.pooling, max_tokens=e.max_tokens, batch_size=e.batch_size,
        postprocess=e.postprocess, whiten_dim=e.whiten_dim, num_shards=e.num_shards,
        fast_tokenizer=e.fast_tokenizer, jit_compile=e.jit_compile,
        cache_dir=embedding_cache_dir or layout.embedding_cache).with_id("ItemEmbeddingGen")
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=[data_io.INTERACTIONS_SPLIT],
                                             transform=[data_io.INTERACTIONS_SPLIT]),
        disable_statistics=True, disable_analyzer_cache=True).with_id("Transform")
    transform.add_upstream_node(data_gate)  # nothing past validation runs on data the gate rejects
    trainer = LearnTrainer(
        examples=transform.outputs["transformed_examples"], transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"], item_embeddings=embedding_gen.outputs["embeddings"],
        split=split_gen.outputs["split"], sequences=sequence_gen.outputs["sequences"], run_fn=RUN_FN,
        model=cfg.model, train=cfg.train, model_kind=p.model_kind, cllm4rec=cfg.cllm4rec, template=e.template,
        train_args=tfx.proto.TrainArgs(splits=[data_io.INTERACTIONS_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[data_io.INTERACTIONS_SPLIT]),
        vertex_training=trainer_vertex_training).with_id("Trainer")
    evaluator = RetrievalEvaluator(
        model=trainer.outputs["model"], sequences=sequence_gen.outputs["sequences"],
        item_embeddings=embedding_gen.outputs["embeddings"], split=split_gen.outputs["split"],
        model_name=model_name(cfg.model, p.model_kind), min_ndcg_at_10=p.min_ndcg_at_10,
        must_beat_content_knn=p.must_beat_content_knn).with_id("Evaluator")
    pusher = ServingPusher(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                           transform_graph=transform.outputs["transform_graph"], split=split_gen.outputs["split"],
                           model_base=model_base or layout.model_base, serving=cfg.serving).with_id("Pusher")
    components = [example_gen, statistics_gen, schema_gen, example_validator, data_gate, split_gen, sequence_gen,
                  embedding_gen, transform, trainer, evaluator, pusher]
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name(cfg), pipeline_root=root, components=components, enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args if beam_pipeline_args is not None else p.beam_args))
