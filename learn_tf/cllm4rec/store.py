"""Saved CLLM4Rec models: the four ID tables (npz) and what rebuilds the rest (json).

The frozen backbone is not copied: `cllm4rec.json` names its preset, and
loading checks the base vocabulary size and width against the tables.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from typing import Any, Optional, Sequence

import numpy as np

from learn_tf.cllm4rec.documents import DocumentBuilder, Prompts
from learn_tf.cllm4rec.model import CLLM4Rec
from learn_tf.cllm4rec.vocab import FrozenLM
from learn_tf.utils.io import atomic_open, write_json
from learn_tf.utils.io import exists as path_exists

META_FILE = "cllm4rec.json"
TABLES_FILE = "tables.npz"
TABLES = ("collab_users", "collab_items", "content_users", "content_items")


def build(lm: FrozenLM, item_ids: Sequence[str], user_ids: Sequence[str], prompts: Prompts,
          max_content_tokens: int, seed: int = 0) -> tuple[CLLM4Rec, DocumentBuilder]:
    """A fresh model (tables initialised) and its document builder over `lm`."""
    model = CLLM4Rec(lm, len(user_ids), len(item_ids), seed=seed)
    return model, DocumentBuilder(model.vocab, lm.tokenize, prompts, max_content_tokens)


def save(model: CLLM4Rec, out_dir: str, preset: str, item_ids: Sequence[str], user_ids: Sequence[str],
         prompts: Prompts, max_content_tokens: int, extra: Optional[dict[str, Any]] = None) -> str:
    """Writes tables.npz and cllm4rec.json into `out_dir`; returns the directory."""
    os.makedirs(out_dir, exist_ok=True)
    arrays = {"collab_users": model.collab.users, "collab_items": model.collab.items,
              "content_users": model.content.users, "content_items": model.content.items}
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v.numpy(), np.float32) for k, v in arrays.items()})
    with atomic_open(os.path.join(out_dir, TABLES_FILE), "wb") as f:
        f.write(buf.getvalue())
    write_json(os.path.join(out_dir, META_FILE), {
        "class": "CLLM4Rec", "preset": preset, "base_size": model.vocab.base_size, "dim": model.lm.dim,
        "item_ids": [str(i) for i in item_ids], "user_ids": [str(u) for u in user_ids],
        "prompts": asdict(prompts), "max_content_tokens": max_content_tokens, **(extra or {})})
    return out_dir


def is_saved(model_dir: str) -> bool:
    """Whether `model_dir` (local or an object-store URI) holds a saved CLLM4Rec (its cllm4rec.json)."""
    return path_exists(os.path.join(model_dir, META_FILE))


def read_meta(model_dir: str) -> dict[str, Any]:
    """The saved cllm4rec.json.

    Raises:
      FileNotFoundError: the directory holds no CLLM4Rec model.
    """
    path = os.path.join(model_dir, META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; run `learn train --model cllm4rec` first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load(model_dir: str, lm: Optional[FrozenLM] = None) -> tuple[CLLM4Rec, DocumentBuilder, dict[str, Any]]:
    """Rebuilds a saved model (loading its preset unless `lm` is given).

    Raises:
      FileNotFoundError: no saved model. ValueError: the backbone does not fit the tables.
    """
    meta = read_meta(model_dir)
    lm = lm or FrozenLM.from_preset(meta["preset"])
    if (lm.base_size, lm.dim) != (int(meta["base_size"]), int(meta["dim"])):
        raise ValueError(f"{model_dir}: the tables were trained on a backbone with vocabulary {meta['base_size']} "
                         f"and width {meta['dim']}; {meta['preset']!r} loads as {lm.base_size} / {lm.dim}")
    model, builder = build(lm, meta["item_ids"], meta["user_ids"], Prompts(**meta["prompts"]),
                           int(meta["max_content_tokens"]))
    with np.load(os.path.join(model_dir, TABLES_FILE)) as z:
        for var, key in zip((model.collab.users, model.collab.items, model.content.users, model.content.items),
                            TABLES):
            var.assign(z[key])
    return model, builder, meta
