"""ItemEmbeddingGen: the frozen LLM over item text (the Beam embedding job, incremental cache) as a component."""

from __future__ import annotations

import os
from typing import Any, Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from beam.embed_pipeline import run_embedding_job
from learn_tf.embeddings import store
from learn_tf.utils import io
from tfx_pipeline import data_io
from tfx_pipeline.components.artifacts import DataReport, ItemEmbeddings


class ItemEmbeddingGenSpec(ComponentSpec):
    """ItemEmbeddingGen: items examples in, ItemEmbeddings out; the `embedding` config section as parameters."""

    PARAMETERS = {
        "model": ExecutionParameter(type=str),
        "template": ExecutionParameter(type=str),
        "pooling": ExecutionParameter(type=str),
        "max_tokens": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
        "postprocess": ExecutionParameter(type=str),
        "whiten_dim": ExecutionParameter(type=int, optional=True),
        "num_shards": ExecutionParameter(type=int),
        "fast_tokenizer": ExecutionParameter(type=int),  # bool as 0/1
        "jit_compile": ExecutionParameter(type=int),  # bool as 0/1
        "cache_dir": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "data_report": ChannelParameter(type=DataReport),
    }
    OUTPUTS = {
        "embeddings": ChannelParameter(type=ItemEmbeddings),
    }


def embedding_job_args(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """The `run_embedding_job` keyword settings of ItemEmbeddingGen's execution properties (the `embedding` section)."""
    p = exec_properties
    return {"model": p["model"], "template": p["template"], "pooling": p["pooling"],
            "max_tokens": int(p["max_tokens"]), "batch_size": int(p["batch_size"]),
            "postprocess_method": p["postprocess"], "whiten_dim": p.get("whiten_dim"),
            "num_shards": int(p["num_shards"]), "fast_tokenizer": bool(int(p.get("fast_tokenizer", 1))),
            "jit_compile": bool(int(p.get("jit_compile", 0)))}


class ItemEmbeddingGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Runs `beam.embed_pipeline.run_embedding_job` with the pipeline's Beam args, incrementally."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Embeds the catalogue into the persistent cache dir, then snapshots the published files."""
        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        out = artifact_utils.get_single_instance(output_dict["embeddings"])
        items = data_io.read_items(examples_uri)
        items_path = os.path.join(out.uri, data_io.ITEMS_FILE)
        io.write_parquet(items.sort_values("item_id", kind="mergesort").reset_index(drop=True), items_path)
        cache_dir = exec_properties["cache_dir"]
        io.makedirs(cache_dir)
        result = run_embedding_job(
            items_path, cache_dir, **embedding_job_args(exec_properties),
            beam_args=list(self._beam_pipeline_args) or ["--direct_running_mode=in_memory"])
        m = result.manifest
        # Snapshot the published files: the cache directory moves on, the artifact must not.
        # The manifest goes last: a reader never sees it before the files it lists.
        dest = os.path.join(out.uri, data_io.EMBEDDINGS_SUBDIR)
        for name in [*store.listed_files(m), store.MANIFEST]:
            io.copy(os.path.join(cache_dir, name), os.path.join(dest, name))
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
                 postprocess: str = "center", whiten_dim: Optional[int] = None, num_shards: int = 2,
                 fast_tokenizer: bool = True, jit_compile: bool = False) -> None:
        """Args: ExampleGen examples (items split), the DataGate report (ordering), embedding settings."""
        super().__init__(spec=ItemEmbeddingGenSpec(
            examples=examples, data_report=data_report, model=model, template=template, pooling=pooling,
            max_tokens=max_tokens, batch_size=batch_size, postprocess=postprocess, whiten_dim=whiten_dim,
            num_shards=num_shards, fast_tokenizer=int(bool(fast_tokenizer)), jit_compile=int(bool(jit_compile)),
            cache_dir=cache_dir, embeddings=types.Channel(type=ItemEmbeddings)))
