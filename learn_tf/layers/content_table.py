"""Frozen item content embeddings looked up by item index (0 = padding / unknown)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

# set_table writes this many bytes of rows per scatter (bounds the transient copy of a large table).
_BLOCK_BYTES = 64 << 20


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class ContentTable(tf.keras.layers.Layer):
    """Maps item indices to frozen LLM content vectors.

    Row 0 is the zero vector (padding and unknown items); rows 1..N are the
    catalogue. The table is a non-trainable weight, so it ships inside a
    SavedModel and can be replaced (`set_table`) when items are added.

    Args:
      num_items: N, the catalogue size (without the padding row).
      dim: content embedding width (the LLM hidden size after post-processing).
      table: optional [N, dim] initial vectors.
    """

    def __init__(self, num_items: int, dim: int, table: Optional[np.ndarray] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_items = int(num_items)
        self.dim = int(dim)
        self._initial = None if table is None else np.asarray(table, np.float32)
        if self._initial is not None:
            self._check(self._initial.shape)

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(name="table", shape=(self.num_items + 1, self.dim), initializer="zeros",
                                     trainable=False)
        if self._initial is not None:
            self.set_table(self._initial)
            self._initial = None
        super().build(input_shape)

    def set_table(self, table: np.ndarray) -> None:
        """Replaces the [N, dim] content vectors (row 0 stays zero)."""
        table = np.asarray(table, np.float32)
        self._check(table.shape)
        # Rows are scattered in place, 64 MiB at a time: the variable is never copied (a padded copy or a
        # sliced assign would hold the table two or three times, which matters at millions of items).
        step = max(1, _BLOCK_BYTES // max(1, 4 * self.dim))
        self.table.scatter_update(tf.IndexedSlices(tf.zeros([1, self.dim]), tf.constant([0])))
        for start in range(0, len(table), step):
            rows = table[start:start + step]
            self.table.scatter_update(tf.IndexedSlices(rows, tf.range(start + 1, start + 1 + len(rows))))

    def rows(self) -> np.ndarray:
        """The [N, dim] content vectors (before the layer is built: the initial table; zeros if none)."""
        if self.built:
            return self.table.numpy()[1:]
        return self._initial if self._initial is not None else np.zeros((self.num_items, self.dim), np.float32)

    def _check(self, shape: tuple[int, ...]) -> None:
        """Raises ValueError naming what differs between `shape` and (num_items, dim)."""
        expected = f"expected ({self.num_items}, {self.dim})"
        if len(shape) != 2:
            raise ValueError(f"content table has shape {tuple(shape)}, {expected}")
        if shape[1] != self.dim:
            raise ValueError(
                f"content table has shape {tuple(shape)}, {expected}: its vectors have width {shape[1]} but the "
                f"layer was built for dim {self.dim}. Re-run `learn embed` with the embedding model the towers "
                "were trained with, or rebuild the towers with this width")
        if shape[0] != self.num_items:
            raise ValueError(
                f"content table has shape {tuple(shape)}, {expected}: {shape[0]} rows for a catalogue of "
                f"{self.num_items} items (one row per item, in catalogue order; see Catalogue.align)")

    def call(self, indices: tf.Tensor) -> tf.Tensor:
        """[...] int indices -> [..., dim] content vectors."""
        return tf.gather(self.table, indices)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_items": self.num_items, "dim": self.dim}
