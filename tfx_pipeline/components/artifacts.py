"""LEARN's custom TFX artifact types.

Type names are "namespace.Name", the form Vertex AI requires of custom types;
values are custom properties because Vertex's generic artifact schema admits
no declared properties.
"""

from __future__ import annotations

from tfx.types.artifact import Artifact


class DataReport(Artifact):
    """The data gate's verdict: anomalies and unknown-item counts (report.json / report.txt)."""

    TYPE_NAME = "learn.DataReport"


class ItemEmbeddings(Artifact):
    """Frozen-LLM item embeddings: `items.parquet` (the catalogue) + `embeddings/` (a published manifest).

    Custom properties (from the manifest): count, dim, input_dim, model_id,
    checksum, embedding_run_id, postprocess, forward_passes.
    """

    TYPE_NAME = "learn.ItemEmbeddings"


class Split(Artifact):
    """The run's one leave-one-out split: the `learn_tf.data.splits.write_splits` files, computed once.

    Custom properties: train_interactions, validation_cases, test_cases,
    cold_items, unknown_item_interactions (dropped before splitting).
    """

    TYPE_NAME = "learn.Split"


class UserSequences(Artifact):
    """Per-user `tf.train.SequenceExample` shards with the split role per position (`beam/sequences.py`).

    Files: `sequences-NNNNN-of-NNNNN.tfrecord` (users sorted by id across shards) and
    `sequences_manifest.json` (written last). Custom properties: users, positions,
    train_positions, unknown_item_interactions.
    """

    TYPE_NAME = "learn.UserSequences"
