"""`learn pipeline run` and `learn pipeline lineage`: functions the CLI calls (each returns an exit code)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional, Sequence

import learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from learn_tf.config import Config
from learn_tf.data import schema as data_schema


def default_data_dir(cfg: Config) -> str:
    """Where `learn ingest` writes by default: <output_dir>/data."""
    return os.path.join(cfg.resolved_output_dir(), "data")


def ensure_ingested(cfg: Config, data_dir: str, force: bool = False) -> bool:
    """Runs `learn ingest` (tables, TFRecords, split) into `data_dir` unless its TFRecords exist; True if it ran.

    Re-ingesting rewrites the TFRecords (new modification times), which makes
    ExampleGen and everything after it re-run, so existing data is kept unless `force`.
    """
    needed = [os.path.join(data_dir, p) for p in (data_schema.ITEMS_TFRECORD, data_schema.INTERACTIONS_TFRECORD)]
    if not force and all(os.path.exists(p) for p in needed):
        return False
    from learn_tf.data.ingest import ingest
    from learn_tf.data.splits import make_splits, write_splits

    res = ingest(cfg.data, data_dir, write_tfrecords=True)
    write_splits(make_splits(res.items, res.interactions, cfg.split), os.path.join(data_dir, "split"))
    return True


def run_pipeline_command(cfg: Config, data_dir: Optional[str] = None, enable_cache: bool = True,
                         reingest: bool = False, config_dir: Optional[str] = None,
                         beam_args: Sequence[str] = ()) -> int:
    """`learn pipeline run`: ingest if needed, run the TFX pipeline locally, print what ran and what was pushed.

    Returns:
      0 on success; 1 when the data gate stopped the run (its report goes to stderr).
      Other failures raise (the CLI turns FileNotFoundError / ValueError / RuntimeError into exit code 1).
    """
    from tfx_pipeline.components import DataValidationError
    from tfx_pipeline.lineage import format_lineage, open_store, run_executions, run_ids
    from tfx_pipeline.local_runner import run_local_pipeline
    from tfx_pipeline.pipeline import pipeline_name

    data_dir = data_dir or default_data_dir(cfg)
    t0 = time.time()
    if ensure_ingested(cfg, data_dir, force=reingest):
        print(f"[learn pipeline] ingested {cfg.data.source} -> {data_dir}")
    beam_pipeline_args = [*cfg.pipeline.beam_args, *beam_args]
    print(f"[learn pipeline] running {pipeline_name(cfg)} (LocalDagRunner, root {cfg.resolved_pipeline_root()}, "
          f"ML Metadata {cfg.resolved_metadata_path()}, cache {'on' if enable_cache else 'off'})")
    try:
        run_local_pipeline(cfg, data_dir, enable_cache=enable_cache, config_dir=config_dir,
                           beam_pipeline_args=beam_pipeline_args)
    except DataValidationError as e:
        print(f"[learn pipeline] stopped: {e}", file=sys.stderr)
        return 1
    store = open_store(cfg.resolved_metadata_path())
    run_id = run_ids(store, pipeline_name(cfg))[-1]
    executions = run_executions(store, run_id)
    print(format_lineage(executions, run_id))
    table = evaluation_table(executions)
    if table:
        print(table)
    print(f"[learn pipeline] finished in {time.time() - t0:.0f} s")
    return 0


def evaluation_table(executions: Sequence[Any]) -> Optional[str]:
    """The Evaluator's markdown table (results.md of its `evaluation` output) for a run, if it has one."""
    for e in executions:
        for artifact in e.outputs.get("evaluation", []):
            path = os.path.join(artifact.uri, "results.md")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    return f.read().rstrip()
    return None


def lineage_command(cfg: Config, run_id: Optional[str] = None) -> int:
    """`learn pipeline lineage`: prints the artifacts of the last (or given) run from ML Metadata.

    Raises:
      FileNotFoundError: no ML Metadata yet (run the pipeline first).
    """
    from tfx_pipeline.lineage import format_lineage, open_store, run_executions, run_ids
    from tfx_pipeline.pipeline import pipeline_name

    store = open_store(cfg.resolved_metadata_path())
    runs = run_ids(store, pipeline_name(cfg))
    if not runs:
        print(f"no runs of {pipeline_name(cfg)} in {cfg.resolved_metadata_path()}", file=sys.stderr)
        return 1
    run_id = run_id or runs[-1]
    print(format_lineage(run_executions(store, run_id), run_id))
    return 0


def compile_vertex_command(cfg: Config, output_dir: str = ".", image: Optional[str] = None,
                           data_root: Optional[str] = None, config_dir: Optional[str] = None) -> int:
    """`learn pipeline compile`: writes the Vertex AI Pipelines JSON (Dataflow Beam args); never submits."""
    import json

    from tfx_pipeline.kubeflow_v2_runner import compile_vertex_pipeline

    path = compile_vertex_pipeline(cfg, output_dir, image=image, data_root=data_root, config_dir=config_dir)
    with open(path, encoding="utf-8") as f:
        tasks = json.load(f)["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {path} ({len(tasks)} components: {', '.join(sorted(tasks))})")
    return 0
