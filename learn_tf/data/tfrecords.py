"""tf.Example TFRecord files of the canonical tables, for TFX ExampleGen."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.data import schema
from learn_tf.utils.io import atomic_path


def _bytes(values: Iterable[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def write_examples(path: str, examples: Iterable[dict]) -> int:
    """Writes dicts of `tf.train.Feature` as tf.Examples to `path` atomically; returns the count.

    Serialised deterministically (the feature map in key order), so the same
    rows always give the same bytes and a re-ingest keeps ExampleGen cached.
    """
    n = 0
    with atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as w:
            for feats in examples:
                w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True))
                n += 1
    return n


def write_items_tfrecord(items: pd.DataFrame, path: str) -> int:
    """One example per item: item_id and every text field (bytes), text_fallback (int)."""
    cols = ["item_id", *schema.ITEM_TEXT_FIELDS]

    def gen():
        for row, fb in zip(items[cols].itertuples(index=False), items["text_fallback"].to_numpy()):
            feats = {c: _bytes([v]) for c, v in zip(cols, row)}
            feats["text_fallback"] = _ints([int(fb)])
            yield feats

    return write_examples(path, gen())


def write_interactions_tfrecord(interactions: pd.DataFrame, path: str) -> int:
    """One example per interaction: user_id, item_id, timestamp, row, rating (NaN if none)."""
    u, i = interactions["user_id"].to_numpy(), interactions["item_id"].to_numpy()
    t, r = interactions["timestamp"].to_numpy(), interactions["row"].to_numpy()
    rating = interactions["rating"].to_numpy(dtype=np.float64)

    def gen():
        for k in range(len(interactions)):
            yield {
                "user_id": _bytes([u[k]]),
                "item_id": _bytes([i[k]]),
                "timestamp": _ints([t[k]]),
                "row": _ints([r[k]]),
                "rating": _floats([rating[k]]),
            }

    return write_examples(path, gen())
