"""Training and evaluation data of the pipeline, read back from its artifacts with learn_tf's own functions."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from learn_tf.data import sequence_examples
from learn_tf.data.splits import EVAL_FILE, read_splits
from learn_tf.embeddings.store import load_embeddings
from learn_tf.evaluation.cases import EARLIER_ITEMS, add_earlier_items
from learn_tf.training.jobs import training_inputs
from learn_tf.utils import io
from tfx_pipeline import data_io


def load_pipeline_data(interactions: pd.DataFrame, embeddings_uri: str, split_uri: str) -> dict[str, Any]:
    """Catalogue, aligned content matrix, the run's split, training sequences and a case getter.

    Args:
      interactions: canonical interactions (from raw or transformed examples); those with
        unknown items are dropped, as SplitGen dropped them before splitting.
      embeddings_uri: an ItemEmbeddings artifact (items.parquet + embeddings/).
      split_uri: the run's Split artifact (SplitGen).

    Returns:
      {"items", "interactions", "unknown_dropped", "splits", "catalogue", "content", "sequences",
      "embedding_manifest", "cases": split name -> cases with earlier items}.
    """
    items = io.read_parquet(os.path.join(embeddings_uri, data_io.ITEMS_FILE))
    interactions, dropped = data_io.known_interactions(interactions, items)
    splits = read_splits(split_uri)
    ids, matrix, manifest = load_embeddings(os.path.join(embeddings_uri, data_io.EMBEDDINGS_SUBDIR))
    catalogue, content, sequences = training_inputs(items, splits.train, ids, matrix)

    def cases(split: str) -> pd.DataFrame:
        return add_earlier_items(splits.cases(split), interactions)

    return {"items": items, "interactions": interactions, "unknown_dropped": dropped, "splits": splits,
            "catalogue": catalogue, "content": content, "sequences": sequences, "embedding_manifest": manifest,
            "cases": cases}


def load_streamed_training_data(embeddings_uri: str, split_uri: str, sequences_uri: str) -> dict[str, Any]:
    """What the Trainer trains on, without reading the interactions into memory.

    The training sequences stream from the SequenceGen shards (`tf.data`, catalogue
    indices, `learn_tf.training.inputs`); the validation cases come from the Split's
    eval cases, their earlier items from the same shards. The same sequences and
    cases as `load_pipeline_data` (tests: beam/sequences_test.py).

    Args:
      embeddings_uri: an ItemEmbeddings artifact. split_uri: the run's Split. sequences_uri: its UserSequences.

    Returns:
      {"items", "catalogue", "content", "sequences", "embedding_manifest", "validation", "read_counts"}.
    """
    items = io.read_parquet(os.path.join(embeddings_uri, data_io.ITEMS_FILE))
    ids, matrix, manifest = load_embeddings(os.path.join(embeddings_uri, data_io.EMBEDDINGS_SUBDIR))
    counts = sequence_examples.ReadCounts()
    catalogue, content, sequences = training_inputs(items, sequences_uri, ids, matrix, counts=counts)
    cases = io.read_parquet(os.path.join(split_uri, EVAL_FILE))
    validation = cases[cases["split"] == "validation"].reset_index(drop=True)
    validation[EARLIER_ITEMS] = pd.Series(
        sequence_examples.earlier_items(sequence_examples.shard_files(sequences_uri), validation),
        index=validation.index, dtype=object)
    return {"items": items, "catalogue": catalogue, "content": content, "sequences": sequences,
            "embedding_manifest": manifest, "validation": validation, "read_counts": counts}
