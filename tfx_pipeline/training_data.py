"""Training and evaluation data of the pipeline, rebuilt from its artifacts with learn_tf's own functions."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

import learn_tf  # noqa: F401
from learn_tf.config import Config
from tfx_pipeline import data_io


def load_pipeline_data(cfg: Config, interactions: pd.DataFrame, embeddings_uri: str) -> dict[str, Any]:
    """Catalogue, aligned content matrix, leave-one-out splits, training sequences and case getter.

    Args:
      cfg: the pipeline's config (split section used).
      interactions: canonical interactions (from raw or transformed examples).
      embeddings_uri: an ItemEmbeddings artifact (items.parquet + embeddings/).

    Returns:
      {"items", "interactions", "unknown_dropped", "splits", "catalogue", "content", "sequences",
      "embedding_manifest", "cases": split name -> cases with earlier items}.
    """
    from learn_tf.data.splits import make_splits
    from learn_tf.embeddings.store import load_embeddings
    from learn_tf.evaluation.cases import add_earlier_items
    from learn_tf.training.jobs import training_inputs

    items = pd.read_parquet(os.path.join(embeddings_uri, data_io.ITEMS_FILE))
    interactions, dropped = data_io.known_interactions(interactions, items)
    splits = make_splits(items, interactions, cfg.split)
    ids, matrix, manifest = load_embeddings(os.path.join(embeddings_uri, data_io.EMBEDDINGS_SUBDIR))
    catalogue, content, sequences = training_inputs(items, splits.train, ids, matrix)

    def cases(split: str) -> pd.DataFrame:
        return add_earlier_items(splits.cases(split), interactions)

    return {"items": items, "interactions": interactions, "unknown_dropped": dropped, "splits": splits,
            "catalogue": catalogue, "content": content, "sequences": sequences, "embedding_manifest": manifest,
            "cases": cases}
