"""Runs the LEARN pipeline with TFX's LocalDagRunner and a sqlite ML Metadata under the pipeline root.

    python -m tfx_pipeline.local_runner --config configs/tiny.yaml [--data DIR]

(`learn pipeline run` is the same through the CLI, and ingests first when needed.)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

import learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from learn_tf.config import Config, load_config


def connection_config(metadata_path: str, create_dirs: bool = True) -> Any:
    """ML Metadata connection for `metadata_path`: a sqlite file, or `mysql://user:password@host:port/database`.

    The MySQL password may be left out of the URL and given in $LEARN_MLMD_PASSWORD.
    """
    from urllib.parse import unquote, urlparse

    from tfx.orchestration import metadata

    if metadata_path.startswith("mysql://"):
        u = urlparse(metadata_path)
        database = u.path.lstrip("/")
        if not u.hostname or not database:
            raise ValueError(f"pipeline.metadata_path {metadata_path!r}: expected mysql://user:password@host:port/db")
        return metadata.mysql_metadata_connection_config(
            host=u.hostname, port=u.port or 3306, database=database, username=unquote(u.username or "root"),
            password=unquote(u.password) if u.password else os.environ.get("LEARN_MLMD_PASSWORD", ""))
    if create_dirs:
        os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)
    return metadata.sqlite_metadata_connection_config(metadata_path)


def metadata_config(cfg: Config) -> Any:
    """The config's ML Metadata: sqlite at `cfg.resolved_metadata_path()` (default) or a mysql:// URL."""
    return connection_config(cfg.resolved_metadata_path())


def run_local_pipeline(cfg: Config, data_dir: str, enable_cache: bool = True, config_dir: Optional[str] = None,
                       beam_pipeline_args: Optional[Sequence[str]] = None) -> None:
    """Builds the pipeline for `cfg` over the ingested `data_dir` and runs it locally.

    Raises:
      DataValidationError: the data gate stopped the run (readable report).
      Any executor's exception: the run stops at that component.
    """
    from tfx import v1 as tfx

    from tfx_pipeline.pipeline import create_pipeline, resolve_schema_path

    pipeline = create_pipeline(cfg, data_dir=os.path.abspath(data_dir),
                               pipeline_root=os.path.abspath(cfg.resolved_pipeline_root()),
                               metadata_connection_config=metadata_config(cfg),
                               beam_pipeline_args=beam_pipeline_args, enable_cache=enable_cache,
                               model_base=os.path.abspath(cfg.resolved_model_base()),
                               schema_path=resolve_schema_path(cfg, config_dir))
    tfx.orchestration.LocalDagRunner().run(pipeline)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tfx_pipeline.local_runner`: same as `learn pipeline run`."""
    from tfx_pipeline.commands import run_pipeline_command

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/movielens.yaml")
    ap.add_argument("--data", help="ingested data directory (default <output_dir>/data; ingested when missing)")
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args(argv)
    return run_pipeline_command(load_config(args.config), data_dir=args.data, enable_cache=not args.no_cache,
                                config_dir=os.path.dirname(os.path.abspath(args.config)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
