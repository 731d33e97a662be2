"""A frozen keras-hub text encoder: tokenize, run the backbone, pool, L2-normalise.

Used by the Beam embedding job (one instance per worker), the plain-loop
benchmark and cold-item onboarding. Decoder LLMs (Llama, Gemma) and BERT-style
encoders are both supported; the last hidden layer is pooled under the padding
mask ("mean") or taken at the last real token ("last").
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

import learn_tf  # noqa: F401  (environment before TensorFlow / Keras load)
import tensorflow as tf

POOLINGS = ("mean", "last")
PAD_MULTIPLE = 16


class EmbedderLoadError(RuntimeError):
    """The model path or preset cannot be loaded."""


def bucket_length(n_tokens: int, max_tokens: int, multiple: int = PAD_MULTIPLE) -> int:
    """Padded length for a sequence of `n_tokens`: the next multiple, capped at max_tokens."""
    return min(max_tokens, max(multiple, -(-n_tokens // multiple) * multiple))


def _backbone_overrides(preset: str) -> dict[str, float]:
    """Config values keras-hub's Hugging Face llama loader ignores (it fixes RMSNorm eps at 1e-6)."""
    path = os.path.join(preset, "config.json")
    if not os.path.isfile(path):  # a keras-hub preset folder: a local model, not an artifact
        return {}
    with open(path, encoding="utf-8") as f:  # the preset's config.json (a local model folder)
        cfg = json.load(f)
    if cfg.get("model_type") == "llama" and "rms_norm_eps" in cfg:
        return {"layer_norm_epsilon": float(cfg["rms_norm_eps"])}
    return {}


class TextEmbedder:
    """Frozen keras-hub backbone + tokenizer mapping texts to unit-norm vectors.

    Args:
      preset: a local keras-hub preset folder (Keras or Hugging Face layout)
        or a keras-hub preset handle.
      pooling: "mean" (under the padding mask) or "last" (last real token).
      max_tokens: texts are truncated to this many tokens.
    """

    def __init__(self, preset: str, pooling: str = "mean", max_tokens: int = 128) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        # Local import: keras-hub (Keras 3 and every model family) takes seconds to
        # import and is needed only to load a model, not by the Beam driver or the
        # callers of `bucket_length` / `EmbedderLoadError`.
        import keras_hub

        if "://" not in preset and not os.path.isdir(preset):  # a local preset folder (model, not artifact)
            raise EmbedderLoadError(f"model path {preset!r} is not a folder or a keras-hub handle")
        try:
            self.backbone = keras_hub.models.Backbone.from_preset(preset, **_backbone_overrides(preset))
            self.tokenizer = keras_hub.models.Tokenizer.from_preset(preset)
        except Exception as e:  # keras-hub raises many kinds here
            raise EmbedderLoadError(f"cannot load a keras-hub backbone/tokenizer from {preset!r}: {e}") from e
        self.backbone.trainable = False
        self.preset = preset
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.input_names = {t.name.split(":")[0] for t in self.backbone.inputs} if self.backbone.inputs else set()
        self.is_encoder = "segment_ids" in self.input_names
        self.dim = int(self.backbone.hidden_dim)
        self.forward_passes = 0
        self._cls = getattr(self.tokenizer, "cls_token_id", None) if self.is_encoder else None
        self._sep = getattr(self.tokenizer, "sep_token_id", None) if self.is_encoder else None
        self._pad = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        spec = tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)
        self._forward = tf.function(self._forward_impl, input_signature=spec)
        # keras-hub's BPE merge loop is very slow eagerly; traced once, it is fast.
        self._tokenize = tf.function(lambda x: self.tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        """Token ids per text (with [CLS]/[SEP] for encoders), truncated to max_tokens.

        Returns:
          (ids, truncated): int32 arrays, and whether each text was cut.
        """
        if not texts:
            return [], []
        ragged = self._tokenize(tf.constant([t.encode("utf-8") for t in texts], dtype=tf.string))
        rows = ragged.to_list() if hasattr(ragged, "to_list") else [list(r) for r in ragged.numpy()]
        ids, truncated = [], []
        room = self.max_tokens - (2 if self.is_encoder else 0)
        for r in rows:
            r = list(r)
            truncated.append(len(r) > room)
            r = r[:room]
            if self.is_encoder:
                r = [self._cls, *r, self._sep]
            if not r:  # an empty text still needs one position
                r = [self._pad]
            ids.append(np.asarray(r, dtype=np.int32))
        return ids, truncated

    def _forward_impl(self, token_ids, padding_mask):
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        if self.is_encoder:
            inputs["segment_ids"] = tf.zeros_like(token_ids)
        out = self.backbone(inputs, training=False)
        hidden = out["sequence_output"] if isinstance(out, dict) else out
        hidden = tf.cast(hidden, tf.float32)
        mask = tf.cast(padding_mask, tf.float32)[:, :, None]
        if self.pooling == "mean":
            pooled = tf.reduce_sum(hidden * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        else:
            last = tf.maximum(tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1) - 1, 0)
            pooled = tf.gather(hidden, last, batch_dims=1)
        return tf.math.l2_normalize(pooled, axis=-1)

    def embed_ids(self, ids: Sequence[np.ndarray], pad_to: int | None = None) -> np.ndarray:
        """Embeds one batch of token-id sequences (right-padded) into [B, dim] float32."""
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        length = pad_to or max(len(r) for r in ids)
        tokens = np.full((len(ids), length), self._pad, dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=bool)
        for k, r in enumerate(ids):
            tokens[k, : len(r)] = r
            mask[k, : len(r)] = True
        self.forward_passes += 1
        return self._forward(tokens, mask).numpy().astype(np.float32)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """The plain loop: sort by length, batch, pad to bucket, embed; rows in input order."""
        ids, _ = self.tokenize(texts)
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.zeros((len(ids), self.dim), np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = [ids[i] for i in idx]
            out[idx] = self.embed_ids(batch, bucket_length(max(len(r) for r in batch), self.max_tokens))
        return out
