"""SavedModel exports of the trained towers with explicit, string-id signatures.

`learn_user`: history item ids -> user embedding; `learn_item`: item ids ->
item embeddings. Clients (TF Serving, other TF systems) pass item ids; the
id -> index lookup and the frozen content table ship inside the SavedModel,
so no LLM runs at request time. Layout: `<base>/<model_name>/<version>/`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional

import tensorflow as tf

from learn_tf.models.catalogue import Catalogue

USER_MODEL, ITEM_MODEL = "learn_user", "learn_item"


class _TowerModule(tf.Module):
    """Holds the towers and the id lookup; exposes the serving functions."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int) -> None:
        super().__init__()
        self.towers = towers
        self.max_len = max_len
        # Index 0 = unknown id or padding (""); 1..N = catalogue order, as in training.
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(catalogue.item_ids), num_oov_indices=1)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def user(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """[B, T] right-padded ("") history ids, oldest first -> {"user_embedding": [B, d]}."""
        idx = tf.cast(self.lookup(history), tf.int32)
        ragged = tf.RaggedTensor.from_tensor(idx, padding=0)[:, -self.max_len:]
        dense = ragged.to_tensor(default_value=0, shape=[None, self.max_len])
        return {"user_embedding": self.towers.users(dense)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_ids")])
    def item(self, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """[N] item ids -> {"item_embedding": [N, d], "known": [N] bool}."""
        idx = tf.cast(self.lookup(item_ids), tf.int32)
        return {"item_embedding": self.towers.items(idx), "known": idx > 0}


def _save(module: tf.Module, signatures: dict[str, object], base: str, name: str, version: int) -> str:
    final = os.path.join(base, name, str(version))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=os.path.dirname(final))
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        if os.path.exists(final):
            raise FileExistsError(f"{final} exists; export a new version instead of overwriting")
        os.rename(tmp, final)  # TF Serving never sees a half-written version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def export_towers(towers: tf.keras.Model, catalogue: Catalogue, max_len: int, base: str,
                  version: Optional[int] = None) -> dict[str, str]:
    """Writes `learn_user` and `learn_item` SavedModels under `base`; returns their paths.

    Args:
      towers: trained towers.
      catalogue: the id order the towers were trained with.
      max_len: history length of the user tower (longer histories keep the last items).
      base: TF Serving model base directory.
      version: version number (default: one above the highest existing).
    """
    module = _TowerModule(towers, catalogue, max_len)
    if version is None:
        existing = [int(v) for n in (USER_MODEL, ITEM_MODEL) if os.path.isdir(os.path.join(base, n))
                    for v in os.listdir(os.path.join(base, n)) if v.isdigit()]
        version = max(existing, default=0) + 1
    return {
        USER_MODEL: _save(module, {"serving_default": module.user}, base, USER_MODEL, version),
        ITEM_MODEL: _save(module, {"serving_default": module.item}, base, ITEM_MODEL, version),
    }
