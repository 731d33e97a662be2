"""Compiles the LEARN pipeline for Vertex AI Pipelines (Kubeflow V2 JSON) with Dataflow Beam options.

    python -m tfx_pipeline.kubeflow_v2_runner --config configs/movielens.yaml --image IMAGE [--output DIR]

Only compiles: submit the JSON with `google.cloud.aiplatform.PipelineJob(template_path=...)`
(see docs/pipeline.md). The config's `pipeline.gcp_project`, `gcp_region`,
`gcs_root`, `dataflow_machine_type` and `dataflow_max_workers` fill in the
Dataflow options; artifacts and the embedding cache live under `gcs_root`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from learn_tf.config import Config, load_config
from learn_tf.utils import io
from tfx_pipeline.components.trainer import vertex_training_config
from tfx_pipeline.pipeline import create_pipeline, pipeline_name, resolve_schema_path

DEFAULT_IMAGE = "gcr.io/{project}/learn-tf:latest"
PIPELINE_FILE = "learn_pipeline.json"


def _require_gcp(cfg: Config) -> tuple[str, str]:
    p = cfg.pipeline
    missing = [k for k, v in (("pipeline.gcp_project", p.gcp_project), ("pipeline.gcs_root", p.gcs_root)) if not v]
    if missing:
        raise ValueError(f"compiling for Vertex AI needs {' and '.join(missing)} in the config")
    return p.gcp_project, p.gcs_root.rstrip("/")


def dataflow_beam_args(cfg: Config) -> list[str]:
    """Beam options that run every Beam-based component (incl. the embedding job) on Dataflow.

    Raises:
      ValueError: `pipeline.gcp_project` or `pipeline.gcs_root` is not set.
    """
    project, root = _require_gcp(cfg)
    p = cfg.pipeline
    return [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={p.gcp_region}",
        f"--temp_location={root}/tmp",
        f"--staging_location={root}/staging",
        f"--machine_type={p.dataflow_machine_type}",
        f"--max_num_workers={p.dataflow_max_workers}",
        "--experiments=use_runner_v2",
        "--save_main_session=False",
    ]


def compile_vertex_pipeline(cfg: Config, output_dir: str, image: Optional[str] = None,
                            data_root: Optional[str] = None, config_dir: Optional[str] = None,
                            trainer_workers: int = 0, trainer_machine_type: str = "n1-standard-8") -> str:
    """Writes the Vertex AI Pipelines job spec JSON for `cfg` into `output_dir`; returns its path.

    Args:
      cfg: the config; its pipeline section names the GCP project, region and GCS root.
      output_dir: where `learn_pipeline.json` goes.
      image: the container image with this repository installed (default gcr.io/<project>/learn-tf:latest).
      data_root: ingested data on GCS (default `<gcs_root>/data`, holding `tfrecords/`).
      config_dir: directory a relative `pipeline.schema_path` is resolved against.
      trainer_workers: when >= 1, the Trainer runs as a Vertex AI Training job with this many replicas
        (worker pool specs: one chief + `trainer_workers - 1` workers, MultiWorkerMirroredStrategy);
        0 trains inside the pipeline step's container.
      trainer_machine_type: machine type of the Trainer's worker pools.

    Raises:
      ValueError: GCP settings are missing.
    """
    project, root = _require_gcp(cfg)
    image = image or DEFAULT_IMAGE.format(project=project)
    try:  # local import: the Kubeflow V2 compiler needs the optional kfp-pipeline-spec package
        from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    except ImportError as e:  # TFX's Kubeflow V2 compiler needs kfp-pipeline-spec (tfx[kfp] extra)
        raise RuntimeError(f"compiling for Vertex AI needs the kfp-pipeline-spec package "
                           f"(pip install 'kfp-pipeline-spec>=0.2.2,<0.3'): {e}") from e
    pipeline = create_pipeline(
        cfg, data_dir=data_root or f"{root}/data", pipeline_root=f"{root}/tfx/{pipeline_name(cfg)}",
        metadata_connection_config=None, beam_pipeline_args=dataflow_beam_args(cfg), enable_cache=True,
        model_base=cfg.serving.model_base or f"{root}/serving", schema_path=resolve_schema_path(cfg, config_dir),
        embedding_cache_dir=f"{root}/embedding_cache",
        trainer_vertex_training=(vertex_training_config(project, cfg.pipeline.gcp_region, image, trainer_workers,
                                                        trainer_machine_type) if trainer_workers else None))
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=image),
        output_dir=output_dir, output_filename=PIPELINE_FILE)
    io.makedirs(output_dir)
    path = os.path.join(output_dir, PIPELINE_FILE)
    if io.exists(path):
        io.remove(path)
    runner.run(pipeline, write_out=True)
    return path


def compiled_components(path: str) -> list[str]:
    """The sorted component (task) names of a compiled Vertex AI pipeline JSON."""
    return sorted(io.read_json(path)["pipelineSpec"]["root"]["dag"]["tasks"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tfx_pipeline.kubeflow_v2_runner`: compile (never submit) the Vertex pipeline JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/movielens.yaml")
    ap.add_argument("--output", default=".", help="directory for learn_pipeline.json")
    ap.add_argument("--image", help="container image (default gcr.io/<project>/learn-tf:latest)")
    ap.add_argument("--data-root", help="ingested data on GCS (default <gcs_root>/data)")
    ap.add_argument("--trainer-workers", type=int, default=0,
                    help="run the Trainer on Vertex AI Training with N replicas (MultiWorkerMirroredStrategy)")
    ap.add_argument("--trainer-machine-type", default="n1-standard-8", help="machine type of the Trainer's workers")
    args = ap.parse_args(argv)
    path = compile_vertex_pipeline(load_config(args.config), args.output, args.image, args.data_root,
                                   os.path.dirname(os.path.abspath(args.config)), args.trainer_workers,
                                   args.trainer_machine_type)
    tasks = compiled_components(path)
    print(f"wrote {path} ({len(tasks)} components: {', '.join(tasks)})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
