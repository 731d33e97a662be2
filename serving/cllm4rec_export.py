"""SavedModel export of a trained CLLM4Rec in TF Serving layout: a history of item ids -> top-k items.

Model `cllm4rec_retrieval` (`<base>/cllm4rec_retrieval/<version>/`), signature
`serving_default`:

- inputs: `history` [B, T] string (oldest first, right-padded with ""),
  `user_id` [B] string ("" or an unknown id: the prompt has no user tokens),
  `k` [B] int32 in [1, max_k], `exclude_history` [B] bool;
- outputs: `item_ids` [B, K] string, `scores` [B, K] float32 (K = max(k);
  row i holds its top k[i], then "" / -inf padding), `known_items` [B] int32.

Unlike the LEARN exports, the LLM runs at request time: the module builds the
prompt `user_u has interacted with <last max_history known items>, user_u will
interact with` in the graph, runs the frozen backbone once on it and scores
the last hidden state against the collaborative item table. The backbone's
weights (frozen) and the ID tables ship inside the SavedModel.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.documents import DocumentBuilder
from learn_tf.cllm4rec.model import CLLM4Rec
from learn_tf.utils import io
from serving.layout import next_version, save_version, write_models_config

MODEL = "cllm4rec_retrieval"


def _table(keys: Sequence[str]) -> tf.lookup.StaticHashTable:
    init = tf.lookup.KeyValueTensorInitializer(tf.constant([str(k) for k in keys]),
                                               tf.range(len(keys), dtype=tf.int64))
    return tf.lookup.StaticHashTable(init, default_value=-1)


class CLLM4RecModule(tf.Module):
    """The frozen LM, the collaborative tables, the id lookups and the prompt pieces."""

    def __init__(self, model: CLLM4Rec, builder: DocumentBuilder, item_ids: Sequence[str],
                 user_ids: Sequence[str], max_k: int, max_history: int) -> None:
        super().__init__()
        self.model = model
        self.embedding, self.body, self.tables = model.lm.embedding, model.lm.body, model.collab
        self.item_lookup, self.user_lookup = _table(item_ids), _table(user_ids)
        self.item_id_table = tf.constant(np.asarray(item_ids, dtype=object).astype(bytes))
        self.max_k, self.max_history = int(min(max_k, len(item_ids))), int(max_history)
        self.pieces = [tf.constant(p, tf.int32) for p in
                       (builder.collab_text, builder.sep_text, builder.recommend_text)]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                  tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None], tf.int32, name="k"),
                                  tf.TensorSpec([None], tf.bool, name="exclude_history")])
    def retrieve(self, history: tf.Tensor, user_id: tf.Tensor, k: tf.Tensor,
                 exclude_history: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-k item ids and scores per history (see the module docstring)."""
        batch = tf.shape(history)[0]
        tf.debugging.assert_equal(tf.shape(k)[0], batch, message="k needs one value per history row")
        tf.debugging.assert_equal(tf.shape(user_id)[0], batch, message="user_id needs one value per history row")
        tf.debugging.assert_equal(tf.shape(exclude_history)[0], batch,
                                  message="exclude_history needs one value per history row")
        tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1")
        tf.debugging.assert_less_equal(k, self.max_k, message=f"k must be <= max_k ({self.max_k})")
        vocab = self.model.vocab
        idx = self.item_lookup.lookup(history)
        known = tf.ragged.boolean_mask(idx, idx >= 0)  # unknown ids and "" padding dropped
        items = tf.cast(known[:, -self.max_history:] + vocab.item_offset, tf.int32)
        user = self.user_lookup.lookup(user_id)
        has_user = user >= 0
        user_tok = tf.RaggedTensor.from_row_lengths(tf.cast(tf.boolean_mask(user, has_user) + vocab.base_size,
                                                            tf.int32), tf.cast(has_user, tf.int64))

        def tiled(piece: tf.Tensor) -> tf.RaggedTensor:
            return tf.RaggedTensor.from_tensor(tf.tile(piece[None, :], [batch, 1]))

        collab, sep, recommend = self.pieces
        prompt = tf.concat([user_tok, tiled(collab), items, tiled(sep), user_tok, tiled(recommend)], axis=1)
        tokens = prompt.to_tensor(default_value=0)
        mask = tf.sequence_mask(prompt.row_lengths(), tf.shape(tokens)[1])
        scores = self.model.scores(tokens, mask)  # [B, I]
        seen_rows, seen_cols = known.value_rowids(), known.values  # the whole history, not only max_history
        drop = tf.gather(exclude_history, seen_rows)
        pairs = tf.boolean_mask(tf.stack([seen_rows, seen_cols], axis=1), drop)
        scores = tf.tensor_scatter_nd_update(scores, pairs, tf.fill([tf.shape(pairs)[0]], -np.inf))
        width = tf.reduce_max(k)
        top, pos = tf.math.top_k(scores, k=width)
        valid = (tf.range(width)[None, :] < k[:, None]) & tf.math.is_finite(top)
        ids = tf.where(valid, tf.gather(self.item_id_table, pos), tf.constant(b""))
        return {"item_ids": ids, "scores": tf.where(valid, top, tf.constant(-np.inf, top.dtype)),
                "known_items": tf.cast(known.row_lengths(), tf.int32)}


def warmup_requests(item_ids: Sequence[str], user_ids: Sequence[str], n: int) -> list[dict[str, np.ndarray]]:
    """`n` (at least one) example inputs of `serving_default`: 3 random items and a known user, seed 0."""
    rng = np.random.default_rng(0)
    out = []
    for r in range(max(1, n)):
        hist = np.array([[item_ids[i] for i in rng.choice(len(item_ids), size=min(3, len(item_ids)),
                                                            replace=False)]], dtype=object)
        out.append({"history": hist.astype(bytes), "user_id": np.array([str(user_ids[r % len(user_ids)])], bytes),
                    "k": np.array([10], np.int32), "exclude_history": np.array([True])})
    return out


def export_cllm4rec(model_dir: str, base: str, max_k: int = 200, max_history: int = 50,
                    version: Optional[int] = None, warmup: int = 2) -> dict[str, Any]:
    """Exports a trained CLLM4Rec (`learn train --model cllm4rec` output) as `<base>/cllm4rec_retrieval/<v>/`.

    Args:
      model_dir: the saved model (cllm4rec.json, tables.npz), local or an object-store URI; its preset is loaded.
      base: TF Serving model base; `models.config` is rewritten to list every model in it.
      max_k: largest k a request may ask for.
      max_history: the prompt keeps the last this many known items (the evaluation's history length).
      version: version number (default: one above the highest existing).
      warmup: warmup requests written with the version.

    Returns:
      {"path": version directory, "version": int}.
    """
    with io.local_copy(model_dir) as local:  # store.load reads local files
        model, builder, meta = store.load(local)
    version = version or next_version(base, (MODEL,))
    module = CLLM4RecModule(model, builder, meta["item_ids"], meta["user_ids"], max_k, max_history)
    path = save_version(module, {"serving_default": module.retrieve}, base, MODEL, version,
                        warmup_requests(meta["item_ids"], meta["user_ids"], warmup))
    models = sorted(n for n in io.listdir(base) if io.isdir(os.path.join(base, n)) and not n.startswith("."))
    write_models_config(base, models)
    return {"path": path, "version": version}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m serving.cllm4rec_export MODEL_DIR BASE`."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("base")
    p.add_argument("--max_k", type=int, default=200)
    p.add_argument("--max_history", type=int, default=50)
    args = p.parse_args(argv)
    print(export_cllm4rec(args.model_dir, args.base, args.max_k, args.max_history))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
