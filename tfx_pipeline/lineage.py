"""ML Metadata queries: what ran in a pipeline run, and which model came from which data and embeddings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from learn_tf.training.jobs import TOWERS_FILE
from learn_tf.utils import io
from tfx_pipeline import data_io
from tfx_pipeline.components.blessing import BLESSED_KEY, PUSHED_KEY
from tfx_pipeline.metadata import connection_config, readonly_sqlite_config

RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"
# Custom properties `format_lineage` shows for the Trainer's inputs.
SHOWN_PROPERTIES = {"item_embeddings": ("count", "dim", "model_id", "checksum", "embedding_run_id"),
                    "split": ("train_interactions", "validation_cases", "test_cases", "cold_items")}


@dataclass
class ArtifactInfo:
    """One artifact as recorded in ML Metadata."""

    id: int
    type: str
    uri: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeExecution:
    """One component execution of a run: its state (COMPLETE, CACHED, FAILED, ...) and its artifacts."""

    node: str
    execution_id: int
    state: str
    inputs: dict[str, list[ArtifactInfo]] = field(default_factory=dict)
    outputs: dict[str, list[ArtifactInfo]] = field(default_factory=dict)


def open_store(metadata_path: str) -> Any:
    """A MetadataStore over an existing sqlite ML Metadata file (read-only) or a mysql:// URL.

    Raises:
      FileNotFoundError: the sqlite file does not exist (no pipeline has run yet).
    """
    if metadata_path.startswith("mysql://"):
        return metadata_store.MetadataStore(connection_config(metadata_path))
    if not os.path.exists(metadata_path):  # ML Metadata is a local sqlite file (or MySQL above)
        raise FileNotFoundError(f"{metadata_path} not found; run `learn pipeline run` first")
    return metadata_store.MetadataStore(readonly_sqlite_config(metadata_path))


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "struct_value":
        return json_format.MessageToDict(v.struct_value)
    return getattr(v, kind) if kind else None


def _artifacts(store: Any, ids: list[int]) -> dict[int, ArtifactInfo]:
    if not ids:
        return {}
    arts = store.get_artifacts_by_id(ids)
    types = {t.id: t.name for t in store.get_artifact_types_by_id(list({a.type_id for a in arts}))}
    out = {}
    for a in arts:
        props = {k: _value(v) for k, v in a.properties.items()}
        props.update({k: _value(v) for k, v in a.custom_properties.items() if not k.startswith("__")})
        out[a.id] = ArtifactInfo(a.id, types[a.type_id], a.uri, props)
    return out


def run_ids(store: Any, pipeline_name: Optional[str] = None) -> list[str]:
    """Names (run ids) of the recorded pipeline runs, oldest first (optionally of one pipeline)."""
    runs = store.get_contexts_by_type(RUN_CONTEXT)
    if pipeline_name:
        pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
        if pipeline_ctx is None:
            return []
        mine = {c.id for c in store.get_children_contexts_by_context(pipeline_ctx.id)}
        with_parent = [r for r in runs if r.id in mine]
        runs = with_parent or runs
    return [r.name for r in sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))]


def run_executions(store: Any, run_id: Optional[str] = None) -> list[NodeExecution]:
    """Every component execution of a run (default: the latest run), in execution order.

    Raises:
      LookupError: there is no such run.
    """
    runs = run_ids(store)
    if not runs:
        raise LookupError("ML Metadata records no pipeline run")
    run_id = run_id or runs[-1]
    ctx = store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
    if ctx is None:
        raise LookupError(f"no pipeline run {run_id!r} in ML Metadata")
    executions = sorted(store.get_executions_by_context(ctx.id), key=lambda e: (e.create_time_since_epoch, e.id))
    node_of = {}
    for node_ctx in store.get_contexts_by_type(NODE_CONTEXT):
        for e in store.get_executions_by_context(node_ctx.id):
            node_of[e.id] = node_ctx.name.split(".", 1)[-1]
    events = store.get_events_by_execution_ids([e.id for e in executions])
    arts = _artifacts(store, sorted({ev.artifact_id for ev in events}))
    out = []
    for e in executions:
        ne = NodeExecution(node_of.get(e.id, "?"), e.id, metadata_store_pb2.Execution.State.Name(e.last_known_state))
        for ev in events:
            if ev.execution_id != e.id:
                continue
            key = next((s.key for s in ev.path.steps if s.HasField("key")), "?")
            side = ne.inputs if ev.type in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT) \
                else ne.outputs
            side.setdefault(key, []).append(arts[ev.artifact_id])
        out.append(ne)
    return out


def producer_of(executions: list[NodeExecution], artifact_id: int) -> Optional[str]:
    """The node that output `artifact_id` within `executions` (None if none did)."""
    for e in executions:
        if any(a.id == artifact_id for arts in e.outputs.values() for a in arts):
            return e.node
    return None


def _short(a: ArtifactInfo, keys: tuple[str, ...] = ()) -> str:
    extra = ", ".join(f"{k}={str(a.properties[k]).replace(chr(10), '; ')}" for k in keys if k in a.properties)
    return f"{a.type} #{a.id}" + (f" ({extra})" if extra else "") + f"\n        {a.uri}"


def format_lineage(executions: list[NodeExecution], run_id: str = "") -> str:
    """A readable account of a run: each component's state and artifacts, then the model's lineage."""
    lines = [f"Pipeline run {run_id}" if run_id else "Pipeline run", ""]
    lines.append(f"  {'component':<18} {'state':<9} outputs")
    for e in executions:
        outs = ", ".join(f"{k}: {a.type} #{a.id}" for k, arts in e.outputs.items() for a in arts)
        lines.append(f"  {e.node:<18} {e.state:<9} {outs}")
    by_node = {e.node: e for e in executions}
    lines.append("")
    trainer, pusher = by_node.get("Trainer"), by_node.get("Pusher")
    if trainer and trainer.outputs.get("model"):
        model = trainer.outputs["model"][0]
        lines.append(f"Model #{model.id} ({model.uri})")
        lines.append("  trained by Trainer from:")
        for key in ("examples", "transform_graph", "schema", "item_embeddings", "split"):
            for a in trainer.inputs.get(key, []):
                keys = SHOWN_PROPERTIES.get(key, ())
                lines.append(f"    {key:<16} {_short(a, keys)}  <- {producer_of(executions, a.id)}")
        emb = by_node.get("ItemEmbeddingGen")
        gen = by_node.get("ExampleGen")
        if emb:
            for a in emb.inputs.get("examples", []):
                lines.append(f"    embeddings computed from {a.type} #{a.id} <- {producer_of(executions, a.id)}")
        if gen:
            for a in gen.outputs.get("examples", []):
                lines.append(f"    data: {_short(a, ('input_fingerprint', 'span'))}")
    evaluator = by_node.get("Evaluator")
    if evaluator and evaluator.outputs.get("blessing"):
        b = evaluator.outputs["blessing"][0]
        lines.append(f"  blessing #{b.id}: blessed={b.properties.get(BLESSED_KEY)} "
                     f"NDCG@10={b.properties.get('ndcg_at_10')} "
                     f"content-kNN NDCG@10={b.properties.get('content_knn_ndcg_at_10')}")
    if pusher and pusher.outputs.get("pushed_model"):
        p = pusher.outputs["pushed_model"][0]
        if p.properties.get(PUSHED_KEY):
            lines.append(f"  pushed version {p.properties.get('pushed_version')} of "
                         f"{p.properties.get('pushed_models')} to {p.properties.get('pushed_destination')}")
        else:
            lines.append("  not pushed (not blessed)")
    return "\n".join(lines)


def latest_pushed_towers(metadata_path: str, pipeline_name: str) -> Optional[str]:
    """The trained towers (`<model>/Format-Serving/towers`) of the most recent run that pushed a model, if any."""
    if not os.path.exists(metadata_path) and "://" not in metadata_path:  # ML Metadata: local sqlite or a URL
        return None
    store = open_store(metadata_path)
    for run_id in reversed(run_ids(store, pipeline_name)):
        executions = {e.node: e for e in run_executions(store, run_id)}
        pusher, trainer = executions.get("Pusher"), executions.get("Trainer")
        pushed = pusher and pusher.outputs.get("pushed_model") and pusher.outputs["pushed_model"][0]
        if not pushed or not pushed.properties.get(PUSHED_KEY) or not trainer or not trainer.outputs.get("model"):
            continue
        path = data_io.trained_towers_dir(trainer.outputs["model"][0].uri)
        if io.exists(os.path.join(path, TOWERS_FILE)):
            return path
    return None
