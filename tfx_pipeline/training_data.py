"""Training and evaluation data of the pipeline, streamed from its artifacts with learn_tf's own functions."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from learn_tf.data import sequence_examples
from learn_tf.data.splits import EVAL_FILE
from learn_tf.embeddings.store import load_embeddings
from learn_tf.evaluation.cases import EARLIER_ITEMS
from learn_tf.models.catalogue import Catalogue
from learn_tf.training.jobs import training_inputs
from learn_tf.utils import io
from tfx_pipeline import data_io


def load_streamed_data(embeddings_uri: str, split_uri: str, sequences_uri: str, case_split: str,
                       sequences: bool = True, stream: bool = False) -> dict[str, Any]:
    """What the Trainer and the Evaluator read, without reading the interactions into memory.

    The training sequences stream from the SequenceGen shards (`tf.data`, catalogue
    indices, `learn_tf.training.inputs`); the evaluation cases are the Split's, their
    earlier items read from the same shards: the same sequences and cases as `learn train`
    and `learn evaluate` build in memory from the split and the interactions (tests:
    beam/sequences_test.py, beam/movielens_sequences_test.py).

    Args:
      embeddings_uri: an ItemEmbeddings artifact. split_uri: the run's Split. sequences_uri: its UserSequences.
      case_split: "validation" (the Trainer's early stopping) or "test".
      sequences: read the training sequences (False: the cases only, e.g. an Evaluator without the
        popularity baseline).
      stream: keep the training sequences streamed (`RecordSequences`, `train.stream_shuffle_buffer` > 0)
        instead of packed in memory.

    Returns:
      {"items", "catalogue", "content", "sequences" (None unless read), "embedding_manifest", "cases",
      "read_counts"}.
    """
    items = io.read_parquet(os.path.join(embeddings_uri, data_io.ITEMS_FILE))
    ids, matrix, manifest = load_embeddings(os.path.join(embeddings_uri, data_io.EMBEDDINGS_SUBDIR))
    counts = sequence_examples.ReadCounts()
    if sequences:
        catalogue, content, packed = training_inputs(items, sequences_uri, ids, matrix, counts=counts, stream=stream)
    else:
        catalogue = Catalogue(np.sort(items["item_id"].astype(str).to_numpy()))
        content, packed = catalogue.align(ids, matrix), None
    cases = io.read_parquet(os.path.join(split_uri, EVAL_FILE))
    cases = cases[cases["split"] == case_split].reset_index(drop=True)
    cases[EARLIER_ITEMS] = pd.Series(
        sequence_examples.earlier_items(sequence_examples.shard_files(sequences_uri), cases),
        index=cases.index, dtype=object)
    return {"items": items, "catalogue": catalogue, "content": content, "sequences": packed,
            "embedding_manifest": manifest, "cases": cases, "read_counts": counts}
