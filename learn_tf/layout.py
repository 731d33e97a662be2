"""Every path of a run, named once: where each step reads and writes under the run root."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional

from learn_tf.data.schema import INTERACTIONS_FILE, ITEMS_FILE

SPLIT_SUBDIR = "split"
ONBOARDED_SUBDIR = "onboarded"
EMBEDDING_CACHE_SUBDIR = "embedding_cache"


def _join(root: str, *parts: str) -> str:
    # Object-store URIs keep forward slashes; os.path.join does the same on POSIX.
    return os.path.join(root, *parts)


@dataclass(frozen=True)
class RunLayout:
    """The locations of one run. `root` is `--output` / the config's `output_dir`.

    Every `learn` subcommand, the TFX pipeline and serving take their paths
    from here, so `--output X` means the same run root X everywhere.
    """

    root: str
    model_base_override: Optional[str] = None
    pipeline_root_override: Optional[str] = None
    metadata_path_override: Optional[str] = None

    @classmethod
    def from_config(cls, cfg: Any, output: Optional[str] = None) -> "RunLayout":
        """The layout of a `learn_tf.config.Config` (`output` replaces its output_dir)."""
        root = output or cfg.output_dir.format(name=cfg.name)
        return cls(root=root, model_base_override=cfg.serving.model_base,
                   pipeline_root_override=cfg.pipeline.pipeline_root,
                   metadata_path_override=cfg.pipeline.metadata_path)

    def with_root(self, root: str) -> "RunLayout":
        """The same layout under another root."""
        return dataclasses.replace(self, root=root)

    # --- ingestion ---
    @property
    def data(self) -> str:
        """Ingested canonical tables, report, rejects and TFRecords (`learn ingest`)."""
        return _join(self.root, "data")

    @property
    def items(self) -> str:
        """The ingested items table."""
        return _join(self.data, ITEMS_FILE)

    @property
    def interactions(self) -> str:
        """The ingested interactions table."""
        return _join(self.data, INTERACTIONS_FILE)

    @property
    def split(self) -> str:
        """The leave-one-out split (`learn split`, also written by `learn ingest`)."""
        return _join(self.data, SPLIT_SUBDIR)

    @property
    def stats(self) -> str:
        """Dataset statistics (`learn stats`)."""
        return _join(self.data, "stats")

    # --- embeddings, models, results ---
    @property
    def embeddings(self) -> str:
        """The published item embeddings (`learn embed`)."""
        return _join(self.root, "embeddings")

    @property
    def models(self) -> str:
        """Trained towers, one folder per model (`learn train`)."""
        return _join(self.root, "models")

    def model(self, name: str) -> str:
        """One trained model's folder."""
        return _join(self.models, name)

    @property
    def results(self) -> str:
        """Evaluation report (`learn evaluate`)."""
        return _join(self.root, "results")

    # --- serving ---
    @property
    def model_base(self) -> str:
        """The TF Serving model base (`serving.model_base` or <root>/serving)."""
        return self.model_base_override or _join(self.root, "serving")

    @property
    def onboarded(self) -> str:
        """Items onboarded with `learn add-items` (kept across pipeline runs)."""
        return _join(self.root, ONBOARDED_SUBDIR)

    @property
    def onboarded_items(self) -> str:
        """The onboarded items table."""
        return _join(self.onboarded, ITEMS_FILE)

    @property
    def onboarded_catalogue(self) -> str:
        """Ingested plus onboarded items, the catalogue the onboarding embedding run reads."""
        return _join(self.onboarded, "catalogue_items.parquet")

    # --- TFX ---
    @property
    def pipeline_root(self) -> str:
        """The TFX pipeline root (`pipeline.pipeline_root` or <root>/tfx)."""
        return self.pipeline_root_override or _join(self.root, "tfx")

    @property
    def metadata_path(self) -> str:
        """ML Metadata: sqlite file (default <pipeline root>/metadata.db) or a mysql:// URL."""
        return self.metadata_path_override or _join(self.pipeline_root, "metadata.db")

    @property
    def embedding_cache(self) -> str:
        """The pipeline's incremental embedding cache, shared across runs."""
        return _join(self.pipeline_root, EMBEDDING_CACHE_SUBDIR)

    @property
    def vertex(self) -> str:
        """Where `learn pipeline compile` writes the Vertex AI pipeline JSON."""
        return _join(self.root, "vertex")
