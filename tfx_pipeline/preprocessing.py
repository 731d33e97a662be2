"""The Transform module: `preprocessing_fn` over interaction examples.

It builds the item-id vocabulary (shipped in the transform graph, which the
Pusher ships inside the exported serving models) and maps every interaction
to its vocabulary index; the canonical fields pass through unchanged so the
Trainer can rebuild per-user sequences from the transformed examples.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

ITEM_VOCABULARY = "item_id"
USER_VOCABULARY = "user_id"


def _dense(x):  # SparseTensor [B, 1] or dense [B, 1] -> dense [B]
    if isinstance(x, tf.sparse.SparseTensor):
        default = "" if x.dtype == tf.string else tf.cast(0, x.dtype)
        x = tf.sparse.to_dense(x, default_value=default)
    return tf.reshape(x, [-1])


def preprocessing_fn(inputs: dict) -> dict:
    """Item/user vocabularies and indices; user_id, item_id, timestamp, row and rating pass through."""
    item_id = _dense(inputs["item_id"])
    user_id = _dense(inputs["user_id"])
    out = {
        "user_id": user_id,
        "item_id": item_id,
        "timestamp": _dense(inputs["timestamp"]),
        "row": _dense(inputs["row"]),
        "item_index": tft.compute_and_apply_vocabulary(item_id, vocab_filename=ITEM_VOCABULARY,
                                                       num_oov_buckets=1),
        "user_index": tft.compute_and_apply_vocabulary(user_id, vocab_filename=USER_VOCABULARY),
    }
    if "rating" in inputs:
        out["rating"] = tf.cast(_dense(inputs["rating"]), tf.float32)
    return out
