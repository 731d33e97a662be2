"""Runs the LEARN pipeline with TFX's LocalDagRunner and ML Metadata (sqlite under the pipeline root by default).

`learn pipeline run` is the entry point (it ingests first when needed); this
module only builds the pipeline for a config and runs it.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from tfx import v1 as tfx

from learn_tf.config import Config
from learn_tf.utils import io
from tfx_pipeline.metadata import metadata_config
from tfx_pipeline.pipeline import create_pipeline, resolve_schema_path


def run_local_pipeline(cfg: Config, data_dir: str, enable_cache: bool = True, config_dir: Optional[str] = None,
                       beam_pipeline_args: Optional[Sequence[str]] = None) -> None:
    """Builds the pipeline for `cfg` over the ingested `data_dir` and runs it locally.

    Raises:
      DataValidationError: the data gate stopped the run (readable report).
      Any executor's exception: the run stops at that component.
    """
    pipeline = create_pipeline(cfg, data_dir=_absolute(data_dir),
                               pipeline_root=_absolute(cfg.resolved_pipeline_root()),
                               metadata_connection_config=metadata_config(cfg),
                               beam_pipeline_args=beam_pipeline_args, enable_cache=enable_cache,
                               model_base=_absolute(cfg.resolved_model_base()),
                               schema_path=resolve_schema_path(cfg, config_dir))
    tfx.orchestration.LocalDagRunner().run(pipeline)


def _absolute(path: str) -> str:
    """A local path made absolute; an object-store URI (gs://, s3://) as it is."""
    return path if io.is_uri(path) else os.path.abspath(path)
