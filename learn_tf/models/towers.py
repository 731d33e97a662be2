"""The LEARN twin towers and the SASRec baseline towers.

Both work on item *indices* (0 = padding, 1..N = catalogue order); string ids
are mapped to indices by `learn_tf.models.catalogue.Catalogue` and, in
exported SavedModels, by a StringLookup. Interface shared by both:

- `sequence(indices [B, T]) -> [B, T, d]`: per-position user embeddings.
- `targets(indices [B, T]) -> [B, T, d]`: item embeddings used in training.
- `items(indices [N]) -> [N, d]`: item embeddings at inference (one item each).
- `users(indices [B, T]) -> [B, d]`: the embedding at the last real position.

`LearnTowers` also encodes items from raw content vectors
(`items_from_content`, for cold items not in the table) and grows its
catalogue without retraining (`with_extra_items`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from learn_tf.layers import CausalTransformerEncoder, ContentAdaptor, ContentTable, ProjectionHead

ITEM_TOWERS = ("a", "b", "c", "e")
ITEM_INPUTS = ("content", "hybrid")
# What a hybrid tower's dropped (training) or untrained ID vector becomes: zero, or predicted from
# the item's content by a learned linear map (DropoutNet-style: the map is trained on the dropped IDs).
ID_FALLBACKS = ("zero", "content")
SIMILARITIES = ("cosine", "dot")


def check_similarity(similarity: str) -> None:
    """Raises ValueError unless `similarity` is "cosine" or "dot"."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


class ContentDimError(ValueError):
    """Content vectors whose width is not the towers' `content_dim`."""


def check_content_width(width: Optional[int], content_dim: int, what: str = "content vectors") -> None:
    """Raises `ContentDimError` naming both widths when `width` is known and differs from `content_dim`."""
    if width is not None and int(width) != int(content_dim):
        raise ContentDimError(
            f"{what} have width {int(width)} but the towers were trained on content_dim {int(content_dim)}: "
            f"the embeddings come from another model or post-processing. Re-run `learn embed` with the "
            f"embedding model the towers were trained with, or retrain the towers (`learn train`) on these "
            f"embeddings")


def last_position(indices: tf.Tensor) -> tf.Tensor:
    """[B, T] right-padded indices -> [B] index of the last real position (0 when empty)."""
    return tf.maximum(tf.reduce_sum(tf.cast(indices > 0, tf.int32), axis=1) - 1, 0)


class _TowersBase(tf.keras.Model):
    """Shared helpers; subclasses define `sequence`, `targets`, `items`."""

    def users(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] history indices (right-padded) -> [B, d] user embeddings."""
        seq = self.sequence(indices, training=training)
        return tf.gather(seq, last_position(indices), batch_dims=1)

    def call(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.users(indices, training=training)


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class LearnTowers(_TowersBase):
    """LEARN: frozen content -> adaptor -> causal transformer -> projection, shared by both towers.

    Args:
      num_items, content_dim: catalogue size and LLM vector width.
      d_model, num_layers, num_heads, ff_dim, dropout: transformer settings.
      out_dim: output embedding width (ignored for item tower "c", which uses
        the raw content width).
      item_tower: "a" (shared weights, causal over the target sequence), "b"
        (shared weights, self-only attention), "c" (raw content embedding) or
        "e" (embedding: an item is its adapted input embedding, adaptor(content)
        (+ ID vector for hybrid inputs), tied with the user tower's input as in
        SASRec; users are the encoder output without projection; out_dim =
        d_model).
      item_inputs: "content" (the paper) or "hybrid" (content + a learned ID
        embedding dropped with probability `id_dropout` while training; cold
        items have an untrained, zero ID vector).
      id_fallback: hybrid inputs only: "zero" (a dropped ID vector is zero)
        or "content" (a dropped ID vector is the item's content times a
        trainable map `id_map`, trained on the dropped positions; after
        training, `fit_cold_ids(seen, None)` gives untrained items that
        prediction).
      use_positions, max_len: optional learned positions (off, as officially).
      input_norm: LayerNorm on the content vectors in the adaptor.
      similarity: "cosine" (unit-norm outputs; scores are cosines times the
        task's logit scale) or "dot" (raw projections, dot-product scores).
      initializer_range: weights drawn from N(0, initializer_range); None:
        Keras defaults.
      content_table: optional [N, content_dim] initial content vectors.
    """

    def __init__(self, num_items: int, content_dim: int, d_model: int = 128, num_layers: int = 2,
                 num_heads: int = 4, ff_dim: int = 256, out_dim: int = 64, dropout: float = 0.1,
                 item_tower: str = "a", item_inputs: str = "content", id_dropout: float = 0.5,
                 use_positions: bool = False, max_len: int = 64, input_norm: bool = True,
                 similarity: str = "cosine", initializer_range: Optional[float] = None,
                 content_table: Optional[np.ndarray] = None, id_fallback: str = "zero", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_similarity(similarity)
        self.similarity, self.initializer_range = similarity, initializer_range
        if item_tower not in ITEM_TOWERS:
            raise ValueError(f"item_tower must be one of {ITEM_TOWERS}, got {item_tower!r}")
        if item_inputs not in ITEM_INPUTS:
            raise ValueError(f"item_inputs must be one of {ITEM_INPUTS}, got {item_inputs!r}")
        if id_fallback not in ID_FALLBACKS:
            raise ValueError(f"id_fallback must be one of {ID_FALLBACKS}, got {id_fallback!r}")
        self.id_fallback = id_fallback
        self.num_items, self.content_dim, self.d_model = num_items, content_dim, d_model
        self.num_layers, self.num_heads, self.ff_dim, self.dropout = num_layers, num_heads, ff_dim, dropout
        self.item_tower, self.item_inputs, self.id_dropout = item_tower, item_inputs, id_dropout
        self.use_positions, self.max_len, self.input_norm = use_positions, max_len, input_norm
        # Item tower (c) compares users with raw content vectors: same width.
        self.out_dim = {"c": content_dim, "e": d_model}.get(item_tower, out_dim)
        if content_table is not None:
            table = np.asarray(content_table)
            if table.ndim != 2:
                raise ValueError(f"content_table must be [num_items, content_dim], got shape {table.shape}")
            check_content_width(table.shape[1], content_dim, "content_table rows")
        self.content = ContentTable(num_items, content_dim, content_table, name="content")
        self.adaptor = ContentAdaptor(d_model, input_norm=input_norm, dropout=dropout,
                                      initializer_range=initializer_range, name="adaptor")
        self.ids = (tf.keras.layers.Embedding(num_items + 1, d_model, name="item_ids",
                                              embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.02))
                    if item_inputs == "hybrid" else None)
        self.encoder = CausalTransformerEncoder(num_layers, num_heads, d_model, ff_dim, dropout, max_len,
                                                use_positions, initializer_range, name="encoder")
        self.projection = ProjectionHead(self.out_dim, normalize=similarity == "cosine", name="projection")
        # Hybrid towers: content -> ID vector map for untrained items (zero until `fit_cold_ids`).
        self.cold_map = (self.add_weight(name="cold_map", shape=[content_dim, d_model], initializer="zeros",
                                         trainable=False)
                         if item_inputs == "hybrid" else None)
        # id_fallback "content": the learned content -> ID map used for dropped IDs while training.
        self.id_map = (self.add_weight(name="id_map", shape=[content_dim, d_model],
                                       initializer=tf.keras.initializers.RandomNormal(stddev=initializer_range or 0.02))
                       if item_inputs == "hybrid" and id_fallback == "content" else None)

    def _inputs(self, indices: tf.Tensor, training: bool) -> tf.Tensor:
        content = self.content(indices)
        x = self.adaptor(content, training=training)
        if self.ids is not None:
            e = self.ids(indices)
            if training and self.id_dropout > 0:
                keep = tf.cast(tf.random.uniform(tf.shape(indices)) >= self.id_dropout, e.dtype)[..., None]
                e = e * keep
                if self.id_map is not None:  # dropped IDs are predicted from content (one [N+1, d] table per call)
                    e = e + (1.0 - keep) * tf.gather(tf.matmul(self.content.table, self.id_map), indices)
            x = x + e
        return x

    def sequence(self, indices: tf.Tensor, training: bool = False, mode: str = "causal") -> tf.Tensor:
        """[B, T] indices -> [B, T, out_dim] unit-norm embeddings at every position."""
        h = self.encoder(self._inputs(indices, training), indices > 0, mode=mode, training=training)
        if self.item_tower == "e":
            return self._norm(h)
        return self.projection(h)

    def _norm(self, x: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12) if self.similarity == "cosine" else x

    def targets(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] target indices -> [B, T, out_dim] item embeddings per the item-tower variant."""
        if self.item_tower == "c":
            return self.items(indices, training=training)
        if self.item_tower == "e":  # flat, so the adaptor sees the rank it was built with
            flat = self.items(tf.reshape(indices, [-1]), training=training)
            return tf.reshape(flat, tf.concat([tf.shape(indices), tf.shape(flat)[-1:]], axis=0))
        return self.sequence(indices, training=training, mode="causal" if self.item_tower == "a" else "self")

    def items(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[N] item indices -> [N, out_dim]; each item encoded alone (variants a and b coincide)."""
        if self.item_tower == "c":
            return self._raw_content(self.content(indices))
        if self.item_tower == "e":  # the input embedding; [..., 1] keeps the adaptor's built rank
            return self._norm(self._inputs(indices[..., None], training)[..., 0, :])
        return self.sequence(indices[:, None], training=training, mode="self")[:, 0]

    def items_from_content(self, content: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[N, content_dim] post-processed content vectors -> [N, out_dim] item embeddings.

        Encodes items that need not be in the content table (cold items added
        after training), exactly as `items` encodes a table row: (a)/(b)
        adaptor -> encoder ("self" mode) -> projection; (c) the L2-normalised
        content. Hybrid towers add the ID vector of an untrained item
        (content @ `cold_map`: zero unless `fit_cold_ids` fitted it), so they
        match `items` for every item that was not trained.

        Raises:
          ContentDimError: the vectors' width is not `content_dim`.
        """
        content = tf.convert_to_tensor(content, tf.float32)
        if content.shape.rank is not None and content.shape.rank != 2:
            raise ValueError(f"items_from_content expects [N, {self.content_dim}] vectors, got shape {content.shape}")
        check_content_width(content.shape[-1], self.content_dim)
        if self.item_tower == "c":
            return self._raw_content(content)
        # [N, 1, content_dim]: the rank `items` uses (LayerNorm fixes its axis at build time).
        x = self.adaptor(content[:, None, :], training=training)
        if self.cold_map is not None:  # the ID vector an untrained item gets (zero unless fitted)
            x = x + tf.matmul(content, self.cold_map)[:, None, :]
        if self.item_tower == "e":
            return self._norm(x[:, 0])
        real = tf.ones(tf.stack([tf.shape(content)[0], 1]), tf.bool)
        h = self.encoder(x, real, mode="self", training=training)
        return self.projection(h)[:, 0]

    def _raw_content(self, content: tf.Tensor) -> tf.Tensor:
        """Item tower (c): the content vector itself (unit-norm; the same for dot scores)."""
        return tf.math.l2_normalize(content, axis=-1, epsilon=1e-12)

    def zero_ids(self, indices: np.ndarray) -> None:
        """Hybrid towers: sets the ID vectors of `indices` to zero (items never trained fall back to content)."""
        if self.ids is None:
            return
        self._set_ids(indices, np.zeros([len(indices), self.d_model], np.float32))

    def _set_ids(self, indices: np.ndarray, rows: np.ndarray) -> None:
        """Writes `rows` [M, d_model] into the ID table at item `indices` [M] (builds the table first)."""
        if len(indices) == 0:
            return
        self.users(tf.ones([1, 1], tf.int32))  # builds the table
        table = self.ids.embeddings
        idx = tf.constant(np.asarray(indices, np.int64)[:, None])
        table.assign(tf.tensor_scatter_nd_update(table, idx, tf.constant(rows, table.dtype)))

    def fit_cold_ids(self, seen: np.ndarray, l2: Optional[float]) -> None:
        """Hybrid towers: gives every untrained item an ID vector predicted from its content.

        Fits the ridge map W = argmin |C W - E|^2 + l2 |W|^2 from the trained
        items' content vectors C to their ID vectors E, keeps it (`cold_map`,
        used by `items_from_content` and `with_extra_items`, so items onboarded
        later get the same treatment) and sets each untrained item's ID vector
        to its content times W. `l2=None` gives them the fallback instead.

        Args:
          seen: [N] or [N + 1] bool over item indices, True for trained items.
          l2: ridge strength (> 0), or None: the fallback (zero ID vectors, or
            content times the learned `id_map` when `id_fallback` is "content").

        Raises:
          ValueError: the towers are not hybrid, `seen` has the wrong length,
            no item is trained, or `l2` <= 0.
        """
        if self.ids is None:
            raise ValueError("fit_cold_ids needs hybrid towers (item_inputs='hybrid'): content towers have no ID vectors")
        seen = np.asarray(seen, bool)
        if len(seen) == self.num_items + 1:
            seen = seen[1:]
        if len(seen) != self.num_items:
            raise ValueError(f"seen must have {self.num_items} (or {self.num_items + 1}) entries, got {len(seen)}")
        if l2 is not None and not l2 > 0:
            raise ValueError(f"l2 must be > 0 or None, got {l2}")
        if l2 is not None and not seen.any():
            raise ValueError("fit_cold_ids: no item is marked as trained")
        self.users(tf.ones([1, 1], tf.int32))  # builds the tables
        content = self.content.rows()
        if l2 is None:
            w = self.id_map.numpy() if self.id_map is not None else np.zeros(self.cold_map.shape, np.float32)
        else:
            x = content[seen].astype(np.float64)
            y = self.ids.embeddings.numpy()[1:][seen].astype(np.float64)
            w = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y).astype(np.float32)
        self.cold_map.assign(w)
        cold = np.flatnonzero(~seen)
        self._set_ids(cold + 1, content[cold] @ w)

    def with_extra_items(self, content_rows: np.ndarray) -> "LearnTowers":
        """A copy of these towers whose catalogue has M more items (indices N+1 .. N+M).

        The content table grows by `content_rows`; a hybrid ID table grows by
        the rows' untrained-item ID vectors (content @ `cold_map`, zero unless
        `fit_cold_ids` fitted it); every other weight is copied. Old
        items and users score exactly as before, and each new item equals
        `items_from_content` of its row. Extend the `Catalogue` with the new
        ids in the same order.

        Args:
          content_rows: [M, content_dim] post-processed content vectors.

        Raises:
          ContentDimError: the rows' width is not `content_dim`.
        """
        rows = np.asarray(content_rows, np.float32)
        if rows.ndim != 2:
            raise ValueError(f"content_rows must be [M, {self.content_dim}], got shape {rows.shape}")
        check_content_width(rows.shape[1], self.content_dim, "content_rows")
        if not np.all(np.isfinite(rows)):
            raise ValueError(f"content_rows has non-finite values in row {int(np.argwhere(~np.isfinite(rows))[0, 0])}")
        probe = tf.ones([1, 1], tf.int32)
        self.users(probe)  # builds every sub-layer (no-op when already built)
        table = np.concatenate([self.content.rows(), rows])
        config = {**self.get_config(), "num_items": self.num_items + len(rows)}
        grown = LearnTowers(**config, content_table=table)
        grown.users(probe)
        for name in ("adaptor", "encoder", "projection"):
            getattr(grown, name).set_weights(getattr(self, name).get_weights())
        if self.ids is not None:
            old = self.ids.get_weights()[0]
            cold_map = self.cold_map.numpy()
            grown.ids.set_weights([np.concatenate([old, (rows @ cold_map).astype(old.dtype)])])
            grown.cold_map.assign(cold_map)
            if self.id_map is not None:
                grown.id_map.assign(self.id_map)
        return grown

    def get_config(self) -> dict[str, Any]:
        return {
            "num_items": self.num_items, "content_dim": self.content_dim, "d_model": self.d_model,
            "num_layers": self.num_layers, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
            "out_dim": self.out_dim, "dropout": self.dropout, "item_tower": self.item_tower,
            "item_inputs": self.item_inputs, "id_dropout": self.id_dropout, "use_positions": self.use_positions,
            "max_len": self.max_len, "input_norm": self.input_norm, "similarity": self.similarity,
            "initializer_range": self.initializer_range, "id_fallback": self.id_fallback, "name": self.name,
        }


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class SASRecTowers(_TowersBase):
    """SASRec: learned item-ID embeddings + the same causal transformer; items are their ID vectors.

    The ID-based collaborative-filtering anchor. It is trained with the same
    task, sampling and evaluator as LEARN. Items never seen in training (cold
    items) keep their random initial vectors: an ID model cannot score them.
    Input and output item embeddings are tied (one table). With
    `similarity="dot"` (the original SASRec) scores are raw dot products of
    the last hidden state and the item vectors; "cosine" normalises both.
    """

    def __init__(self, num_items: int, d_model: int = 128, num_layers: int = 2, num_heads: int = 4,
                 ff_dim: int = 256, dropout: float = 0.1, use_positions: bool = True, max_len: int = 64,
                 similarity: str = "cosine", initializer_range: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_similarity(similarity)
        self.similarity, self.initializer_range = similarity, initializer_range
        self.num_items, self.d_model, self.num_layers, self.num_heads = num_items, d_model, num_layers, num_heads
        self.ff_dim, self.dropout, self.use_positions, self.max_len = ff_dim, dropout, use_positions, max_len
        self.out_dim = d_model
        self.ids = tf.keras.layers.Embedding(num_items + 1, d_model, name="item_ids",
                                             embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.02))
        self.encoder = CausalTransformerEncoder(num_layers, num_heads, d_model, ff_dim, dropout, max_len,
                                                use_positions, initializer_range, name="encoder")

    def _norm(self, x: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12) if self.similarity == "cosine" else x

    def sequence(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] indices -> [B, T, d_model] hidden states (unit-norm for cosine)."""
        h = self.encoder(self.ids(indices), indices > 0, training=training)
        return self._norm(h)

    def targets(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, T] -> [B, T, d_model] ID vectors."""
        return self.items(indices, training)

    def items(self, indices: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[...] -> [..., d_model] ID vectors (the input table, tied; unit-norm for cosine)."""
        return self._norm(self.ids(indices))

    def get_config(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "d_model": self.d_model, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim, "dropout": self.dropout,
                "use_positions": self.use_positions, "max_len": self.max_len, "similarity": self.similarity,
                "initializer_range": self.initializer_range, "name": self.name}
