"""Publication of an embedding run: staged stats and transform -> manifest (the commit point) -> cleanup.

The workers stage the run's stats and fitted transform in `.run-<id>/`
(`stage_run`); after the pipeline has finished the driver moves the transform
into place, lists the run's shards and writes `manifest.json` last
(`publish`), then deletes every file of earlier or crashed runs. The files and
their names are `learn_tf.embeddings.store`'s.
"""

from __future__ import annotations

import os
import time
from typing import Any

from beam.spec import EmbedSpec
from learn_tf.embeddings import postprocess
from learn_tf.embeddings import store


def stage_run(run_dir: str, transform: postprocess.Transform, stats: dict[str, Any]) -> dict[str, Any]:
    """Writes a run's stats and transform into its staging folder (runs on a worker); returns `stats`."""
    store.write_json(os.path.join(run_dir, store.STATS), stats)
    store.write_transform(os.path.join(run_dir, store.TRANSFORM), transform)
    return stats


def publish(output_dir: str, spec: EmbedSpec, settings: dict[str, Any], digest: str, counters: dict[str, int],
            model: str, pooling: str, max_tokens: int, n_items: int) -> dict[str, Any]:
    """Commits the run `spec.run_id` wrote into `output_dir` and removes all other runs' files.

    Raises:
      ValueError: the run embedded a different number of items than the
        catalogue has (nothing is published).
    """
    run_dir = store.staging_dir(output_dir, spec.run_id)
    stats = store.read_json(os.path.join(run_dir, store.STATS))
    if stats["count"] != n_items:
        raise ValueError(f"embedded {stats['count']} items but the catalogue has {n_items}; nothing published")
    transform_file = store.transform_name(spec.run_id)
    store.move(os.path.join(run_dir, store.TRANSFORM), os.path.join(output_dir, transform_file))
    manifest = {
        "run_id": spec.run_id,
        "model": model,
        "model_id": spec.model_id,
        "pooling": pooling,
        "max_tokens": max_tokens,
        "template": spec.template,
        "postprocess": spec.postprocess,
        "whiten_dim": spec.whiten_dim,
        "settings": settings,
        "items_digest": digest,
        "count": stats["count"],
        "input_dim": stats["input_dim"],
        "dim": stats["dim"],
        "checksum": stats["checksum"],
        "isotropy": {"raw_mean_pairwise_cosine": stats["isotropy_raw_mean_pairwise_cosine"],
                     "mean_pairwise_cosine": stats["isotropy_mean_pairwise_cosine"]},
        "counters": dict(sorted(counters.items())),
        "transform_file": transform_file,
        "transform_fitted_this_run": spec.transform_file is None,
        "files": {
            "parquet": store.list_run_shards(output_dir, "embeddings", spec.run_id, ".parquet"),
            "tfrecord": store.list_run_shards(output_dir, "embeddings", spec.run_id, ".tfrecord"),
            "cache": store.list_run_shards(output_dir, "cache", spec.run_id, ".parquet"),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_manifest(output_dir, manifest)  # the commit point
    store.remove_unlisted(output_dir, manifest)
    return manifest
