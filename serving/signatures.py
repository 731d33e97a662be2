"""The exported modules and their explicit, string-id signatures (see `serving.export` for the contract).

`TowerModule` holds the towers and the id lookup (`user`, `item` signatures);
`RetrievalModule` adds a top-k index (`retrieve`). A TFX Transform graph can be
attached to any of them as a second signature, `transform_features`.
"""

from __future__ import annotations

from typing import Any, Optional

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from learn_tf.models.catalogue import Catalogue


class TowerModule(tf.Module):
    """Holds the towers and the id lookup; exposes the user and item serving functions."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int) -> None:
        super().__init__()
        self.towers = towers
        self.max_len = max_len
        # Index 0 = unknown id or padding (""); 1..N = catalogue order, as in training.
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(catalogue.item_ids), num_oov_indices=1)

    def _history_indices(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[B, T] ids -> ([B, max_len] right-padded indices of the last known items, [B] known counts)."""
        idx = tf.cast(self.lookup(history), tf.int32)
        known = tf.ragged.boolean_mask(idx, idx > 0)  # unknown ids and "" padding dropped
        counts = tf.cast(known.row_lengths(), tf.int32)
        tf.debugging.assert_greater(counts, 0, message="every history row needs at least one known item id")
        dense = known[:, -self.max_len:].to_tensor(default_value=0, shape=[None, self.max_len])
        return dense, counts

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def user(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """[B, T] right-padded ("") history ids, oldest first -> user embeddings and known-item counts."""
        dense, counts = self._history_indices(history)
        return {"user_embedding": self.towers.users(dense), "known_items": counts}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_ids")])
    def item(self, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """[N] item ids -> {"item_embedding": [N, d], "known": [N] bool}."""
        idx = tf.cast(self.lookup(item_ids), tf.int32)
        return {"item_embedding": self.towers.items(idx), "known": idx > 0}


class RetrievalModule(TowerModule):
    """Adds a top-k index over the item tower's catalogue vectors (indices 1..N as identifiers)."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int, index: tf.keras.Model,
                 max_k: int) -> None:
        super().__init__(towers, catalogue, max_len)
        self.index = index
        self.max_k = int(max_k)
        self.num_items = len(catalogue)
        self.item_id_table = tf.constant(np.asarray(catalogue.item_ids, dtype=object).astype(bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                  tf.TensorSpec([None], tf.int32, name="k"),
                                  tf.TensorSpec([None], tf.bool, name="exclude_history")])
    def retrieve(self, history: tf.Tensor, k: tf.Tensor, exclude_history: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-k item ids and scores for each history (see the module docstring)."""
        batch = tf.shape(history)[0]
        tf.debugging.assert_equal(tf.shape(k)[0], batch, message="k needs one value per history row")
        tf.debugging.assert_equal(tf.shape(exclude_history)[0], batch,
                                  message="exclude_history needs one value per history row")
        tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1")
        tf.debugging.assert_less_equal(k, self.max_k, message=f"k must be <= max_k ({self.max_k})")
        dense, _ = self._history_indices(history)
        users = self.towers.users(dense)
        all_idx = tf.cast(self.lookup(history), tf.int32)  # the whole history is excluded, not only max_len
        width = tf.reduce_max(k)
        # Fetch enough candidates that excluding every seen item still leaves k.
        fetch = tf.minimum(width + tf.shape(history)[1], self.num_items)
        scores, cand = self.index(users, k=fetch)
        cand = tf.cast(cand, tf.int32)
        seen = tf.reduce_any((cand[:, :, None] == all_idx[:, None, :]) & (all_idx[:, None, :] > 0), axis=-1)
        scores = tf.where(seen & exclude_history[:, None], tf.constant(-np.inf, scores.dtype), scores)
        width = tf.minimum(width, fetch)
        top, pos = tf.math.top_k(scores, k=width)
        picked = tf.gather(cand, pos, batch_dims=1)
        valid = (tf.range(width)[None, :] < k[:, None]) & tf.math.is_finite(top)
        ids = tf.where(valid, tf.gather(self.item_id_table, tf.maximum(picked - 1, 0)), tf.constant(b""))
        return {"item_ids": ids, "scores": tf.where(valid, top, tf.constant(-np.inf, top.dtype))}


def attach_transform(module: tf.Module, transform_output: str) -> Any:
    """Attaches a TFX Transform graph to `module`; returns its `transform_features` serving function.

    The function takes serialized raw `tf.Example`s (`examples` [N] string, the
    pipeline's interaction features) and returns the transformed features
    (vocabulary indices and pass-through fields), exactly as in training. The
    transform graph's variables and vocabulary assets are saved inside the
    SavedModel.
    """
    tft_output = tft.TFTransformOutput(transform_output)
    module.tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        out = module.tft_layer(tf.io.parse_example(examples, raw_spec))
        return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v) for k, v in out.items()}

    return transform_features


def serving_signatures(module: tf.Module, fn: Any, transform_output: Optional[str] = None) -> dict[str, Any]:
    """`{"serving_default": fn}`, plus `transform_features` (see `attach_transform`) with a Transform output."""
    signatures = {"serving_default": fn}
    if transform_output:
        signatures["transform_features"] = attach_transform(module, transform_output)
    return signatures


def warmup_inputs(catalogue: Catalogue, n: int) -> tuple[list[dict[str, np.ndarray]], ...]:
    """`n` example inputs (at least one) of the user, item and retrieval signatures: ids drawn with seed 0."""
    ids = list(catalogue.item_ids)
    rng = np.random.default_rng(0)
    users, items, retr = [], [], []
    for r in range(max(1, n)):
        hist = np.array([[ids[i] for i in rng.choice(len(ids), size=min(3, len(ids)), replace=False)]], dtype=object)
        users.append({"history": hist.astype(bytes)})
        items.append({"item_ids": np.array([ids[r % len(ids)]], dtype=object).astype(bytes)})
        retr.append({"history": hist.astype(bytes), "k": np.array([10], np.int32),
                     "exclude_history": np.array([True])})
    return users, items, retr
