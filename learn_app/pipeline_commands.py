"""`learn pipeline run | lineage | compile` and `learn demo`: the TFX pipeline, the one orchestration of every step."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional, Sequence

from learn_app.data_commands import ingest_and_split
from learn_tf.config import Config
from learn_tf.data import schema as data_schema
from learn_tf.utils import io
from tfx_pipeline.components import DataValidationError
from tfx_pipeline.kubeflow_v2_runner import compile_vertex_pipeline
from tfx_pipeline.lineage import format_lineage, open_store, run_executions, run_ids
from tfx_pipeline.local_runner import run_local_pipeline
from tfx_pipeline.pipeline import pipeline_name


def ensure_ingested(cfg: Config, force: bool = False) -> bool:
    """Runs `learn ingest` (tables, TFRecords, split) into the run's data folder unless its TFRecords exist.

    Returns True if it ran. Existing data is kept unless `force` (a re-ingest
    of the same source writes the same bytes, so ExampleGen's cache holds).
    """
    layout = cfg.layout()
    needed = [os.path.join(layout.data, p) for p in (data_schema.ITEMS_TFRECORD, data_schema.INTERACTIONS_TFRECORD)]
    if not force and all(io.exists(p) for p in needed):
        return False
    ingest_and_split(cfg, layout)
    return True


def run_pipeline_command(cfg: Config, enable_cache: bool = True,
                         reingest: bool = False, config_dir: Optional[str] = None,
                         beam_args: Sequence[str] = ()) -> int:
    """`learn pipeline run`: ingest if needed, run the TFX pipeline locally, print what ran and what was pushed.

    Returns:
      0 on success; 1 when the data gate stopped the run (its report goes to stderr).
      Other failures raise (the CLI turns FileNotFoundError / ValueError / RuntimeError into exit code 1).
    """
    layout = cfg.layout()
    t0 = time.time()
    for path in (layout.data, layout.pipeline_root, layout.model_base):
        io.ensure_filesystem(path)  # s3:// needs tensorflow-io registered before TFX's components use it
    if ensure_ingested(cfg, force=reingest):
        print(f"[learn pipeline] ingested {cfg.data.source} -> {layout.data}")
    beam_pipeline_args = [*cfg.pipeline.beam_args, *beam_args]
    print(f"[learn pipeline] running {pipeline_name(cfg)} (LocalDagRunner, root {layout.pipeline_root}, "
          f"ML Metadata {layout.metadata_path}, cache {'on' if enable_cache else 'off'})")
    try:
        run_local_pipeline(cfg, layout.data, enable_cache=enable_cache, config_dir=config_dir,
                           beam_pipeline_args=beam_pipeline_args)
    except DataValidationError as e:
        print(f"[learn pipeline] stopped: {e}", file=sys.stderr)
        return 1
    store = open_store(layout.metadata_path)
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
            if io.exists(path):
                return io.read_text(path).rstrip()
    return None


def lineage_command(cfg: Config, run_id: Optional[str] = None) -> int:
    """`learn pipeline lineage`: prints the artifacts of the last (or given) run from ML Metadata.

    Raises:
      FileNotFoundError: no ML Metadata yet (run the pipeline first).
    """
    metadata_path = cfg.layout().metadata_path
    store = open_store(metadata_path)
    runs = run_ids(store, pipeline_name(cfg))
    if not runs:
        print(f"no runs of {pipeline_name(cfg)} in {metadata_path}", file=sys.stderr)
        return 1
    run_id = run_id or runs[-1]
    print(format_lineage(run_executions(store, run_id), run_id))
    return 0


def compile_vertex_command(cfg: Config, output_dir: str, image: Optional[str] = None,
                           data_root: Optional[str] = None, config_dir: Optional[str] = None,
                           trainer_workers: int = 0, trainer_machine_type: str = "n1-standard-8") -> int:
    """`learn pipeline compile`: writes the Vertex AI Pipelines JSON (Dataflow Beam args, optionally the
    Trainer's Vertex AI Training worker pools); never submits."""
    path = compile_vertex_pipeline(cfg, output_dir, image=image, data_root=data_root, config_dir=config_dir,
                                   trainer_workers=trainer_workers, trainer_machine_type=trainer_machine_type)
    tasks = io.read_json(path)["pipelineSpec"]["root"]["dag"]["tasks"]
    print(f"wrote {path} ({len(tasks)} components: {', '.join(sorted(tasks))})")
    return 0


def cmd_pipeline(cfg: Config, args: argparse.Namespace) -> int:
    """The TFX pipeline: run locally, print ML Metadata lineage, or compile for Vertex AI."""
    config_dir = os.path.dirname(os.path.abspath(args.config))
    if args.action == "run":
        return run_pipeline_command(cfg, enable_cache=not args.no_cache,
                                    reingest=args.reingest, config_dir=config_dir, beam_args=args.beam_arg or ())
    if args.action == "lineage":
        return lineage_command(cfg, run_id=args.run_id)
    return compile_vertex_command(cfg, args.json_dir or cfg.layout().vertex, image=args.image,
                                  data_root=args.data_root, config_dir=config_dir,
                                  trainer_workers=args.trainer_workers, trainer_machine_type=args.trainer_machine_type)


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    """`learn demo` = `learn pipeline run`: the main job, every step through the TFX pipeline."""
    return run_pipeline_command(cfg, enable_cache=not args.no_cache, reingest=args.reingest,
                                config_dir=os.path.dirname(os.path.abspath(args.config)))


def register(add) -> None:  # noqa: ANN001  (the CLI's subparser factory)
    """Adds `pipeline` and `demo`."""
    sp = add("pipeline", cmd_pipeline, "TFX pipeline: run (LocalDagRunner), lineage (ML Metadata), "
             "compile (Vertex AI Pipelines + Dataflow)")
    sp.add_argument("action", choices=["run", "lineage", "compile"])
    sp.add_argument("--no-cache", action="store_true", help="run every component again (after code changes)")
    sp.add_argument("--reingest", action="store_true", help="ingest the source again before the run")
    sp.add_argument("--beam-arg", action="append", metavar="ARG", help="extra Beam pipeline option, repeatable")
    sp.add_argument("--run-id", help="lineage of this run (default: the last one)")
    sp.add_argument("--image", help="compile: the container image with learn-tf installed")
    sp.add_argument("--data-root", help="compile: gs:// folder with the ingested TFRecords")
    sp.add_argument("--json-dir", help="compile: where to write learn_pipeline.json (default <output>/vertex)")
    sp.add_argument("--trainer-workers", type=int, default=0,
                    help="compile: run the Trainer on Vertex AI Training with N replicas (multi-worker)")
    sp.add_argument("--trainer-machine-type", default="n1-standard-8",
                    help="compile: machine type of the Trainer's Vertex AI Training workers")
    sp = add("demo", cmd_demo, "the main job: the whole TFX pipeline on the configured data (= pipeline run)")
    sp.add_argument("--no-cache", action="store_true", help="run every component again")
    sp.add_argument("--reingest", action="store_true", help="ingest the source again before the run")
