"""Reading and writing the pipeline's artifacts (tf.Example splits, item embeddings, towers, splits, text files)."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from tfx.utils import path_utils

from learn_tf.cllm4rec import store as cllm4rec_store
from learn_tf.data import schema
from learn_tf.utils import io

ITEMS_SPLIT = "items"
INTERACTIONS_SPLIT = "interactions"
ITEMS_FILE = "items.parquet"  # inside an ItemEmbeddings artifact: the catalogue it was computed on
EMBEDDINGS_SUBDIR = "embeddings"  # inside an ItemEmbeddings artifact: the published embedding files
# Inside a Trainer Model artifact's serving model dir (TFX's `Format-Serving`):
TOWERS_SUBDIR = "towers"  # the trained towers (`learn_tf.training.jobs.save_towers`)
CLLM4REC_SUBDIR = "cllm4rec"  # or a trained CLLM4Rec (`learn_tf.cllm4rec.store`, as `learn train --model cllm4rec`)


def trained_towers_dir(model_uri: str) -> str:
    """Where the Trainer saved the towers inside a Model artifact."""
    return os.path.join(path_utils.serving_model_dir(model_uri), TOWERS_SUBDIR)


def trained_cllm4rec_dir(model_uri: str) -> str:
    """Where the Trainer saved a CLLM4Rec (pipeline.model_kind "cllm4rec") inside a Model artifact."""
    return os.path.join(path_utils.serving_model_dir(model_uri), CLLM4REC_SUBDIR)


def holds_cllm4rec(model_uri: str) -> bool:
    """Whether a Model artifact holds a trained CLLM4Rec (else the towers)."""
    return cllm4rec_store.is_saved(trained_cllm4rec_dir(model_uri))


def write_text(path: str, text: str) -> None:
    """Writes a text file into an artifact (local or object-store URI), creating its directory."""
    io.write_bytes(path, text.encode("utf-8"))


def split_files(examples_uri: str, split: str) -> list[str]:
    """The (gzipped TFRecord) files of one split of an Examples artifact.

    Raises:
      FileNotFoundError: the split directory is missing or empty.
    """
    pattern = os.path.join(examples_uri, f"Split-{split}", "*")
    files = io.glob(pattern)
    if not files:
        raise FileNotFoundError(f"no files match {pattern}: the Examples artifact has no split {split!r}")
    return files


def read_examples(files: Sequence[str], columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """tf.Examples (gzipped TFRecords, as ExampleGen and Transform write them) -> a DataFrame.

    Each feature becomes a column; a feature with one value per example holds
    scalars (bytes decoded as UTF-8), otherwise lists.
    """
    data: dict[str, list] = {}
    n = 0
    for raw in tf.data.TFRecordDataset(list(files), compression_type="GZIP").as_numpy_iterator():
        ex = tf.train.Example.FromString(raw)
        for name, feat in ex.features.feature.items():
            if columns is not None and name not in columns:
                continue
            kind = feat.WhichOneof("kind")
            values = list(getattr(feat, kind).value) if kind else []
            if kind == "bytes_list":
                values = [v.decode("utf-8") for v in values]
            col = data.setdefault(name, [None] * n)
            col.append(values[0] if len(values) == 1 else values)
        n += 1
        for col in data.values():
            if len(col) < n:
                col.append(None)
    return pd.DataFrame(data)


def read_items(examples_uri: str) -> pd.DataFrame:
    """The items split as the canonical items table (learn_tf.data.schema.ITEMS_SCHEMA columns)."""
    df = read_examples(split_files(examples_uri, ITEMS_SPLIT))
    for name in schema.ITEM_TEXT_FIELDS:
        df[name] = df[name].fillna("").astype(str) if name in df else ""
    df["item_id"] = df["item_id"].astype(str)
    df["text_fallback"] = df.get("text_fallback", pd.Series(0, index=df.index)).fillna(0).astype(bool)
    return df[["item_id", *schema.ITEM_TEXT_FIELDS, "text_fallback"]]


def interactions_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Interaction examples (raw or transformed) -> the canonical interactions table."""
    out = pd.DataFrame({
        "user_id": df["user_id"].astype(str),
        "item_id": df["item_id"].astype(str),
        "timestamp": df["timestamp"].astype(np.int64),
        "rating": df["rating"].astype(np.float64) if "rating" in df else np.nan,
        "row": df["row"].astype(np.int64),
    })
    return out.sort_values("row", kind="mergesort").reset_index(drop=True)


def read_interactions(examples_uri: str, split: str = INTERACTIONS_SPLIT) -> pd.DataFrame:
    """The interactions split of an Examples artifact as the canonical interactions table."""
    return interactions_frame(read_examples(split_files(examples_uri, split)))


def unknown_items(interactions: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """[rows] True where an interaction's item is not in the catalogue (the data gate's unknown-item rule)."""
    return ~interactions["item_id"].isin(set(items["item_id"].astype(str)))


def known_interactions(interactions: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drops interactions whose item is not in the catalogue; returns (kept rows, number dropped)."""
    unknown = unknown_items(interactions, items)
    return interactions[~unknown].reset_index(drop=True), int(unknown.sum())
