"""A frozen keras-hub text encoder: tokenize, run the backbone, pool, L2-normalise.

Used by the Beam embedding job (one instance per worker), the plain-loop
benchmark and cold-item onboarding: both go through `tokenize` and
`embed_ids`, with batches planned by `learn_tf.embeddings.batching`. Decoder
LLMs (Llama, Gemma) and BERT-style encoders are both supported; the last
hidden layer is pooled under the padding mask ("mean") or taken at the last
real token ("last"). Tokenization takes the Hugging Face `tokenizers` fast
path (`fast_tokenizer.py`, keras-hub's ids) when the tokenizer family has one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

import learn_tf  # noqa: F401  (environment before TensorFlow / Keras load)
import tensorflow as tf

from learn_tf.embeddings.batching import length_bucket, padded_length, plan_batches
from learn_tf.embeddings.fast_tokenizer import fast_tokenizer_for

POOLINGS = ("mean", "last")
PAD_MULTIPLE = 16
JIT_PAD_MULTIPLE = 16  # with jit_compile each padded shape compiles once: few lengths


class EmbedderLoadError(RuntimeError):
    """The model path or preset cannot be loaded."""


def bucket_length(n_tokens: int, max_tokens: int, multiple: int = PAD_MULTIPLE) -> int:
    """The length bucket of a sequence of `n_tokens`: the next multiple, capped at max_tokens."""
    return length_bucket(n_tokens, max_tokens, multiple)


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
      fast_tokenizer: tokenize with Hugging Face `tokenizers` (keras-hub's ids)
        when the tokenizer family supports it; else keras-hub's traced tokenizer.
      jit_compile: XLA-compile the backbone forward (one compile per padded shape).
      pad_multiple: batches are padded to their longest text rounded up to this
        (default 1, or 16 with jit_compile to bound the number of compiles).

    Attributes:
      backbone_calls: a `tf.Variable` incremented inside the traced forward
        graph, once per backbone execution.
      tokenizer_setup_seconds: tokenizer load + fast-path build + first call.
      real_tokens, padded_tokens: tokens fed to `embed_ids`, without and with padding.
    """

    def __init__(self, preset: str, pooling: str = "mean", max_tokens: int = 128, fast_tokenizer: bool = True,
                 jit_compile: bool = False, pad_multiple: Optional[int] = None) -> None:
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
            t0 = time.perf_counter()
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
        self.jit_compile = bool(jit_compile)
        self.pad_multiple = int(pad_multiple or (JIT_PAD_MULTIPLE if jit_compile else 1))
        self.forward_passes = 0
        self.real_tokens = 0
        self.padded_tokens = 0
        self.backbone_calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="backbone_calls")
        self._cls = getattr(self.tokenizer, "cls_token_id", None) if self.is_encoder else None
        self._sep = getattr(self.tokenizer, "sep_token_id", None) if self.is_encoder else None
        self._pad = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        spec = tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)
        self._forward = tf.function(self._forward_impl, input_signature=spec, jit_compile=self.jit_compile)
        self._fast = fast_tokenizer_for(self.tokenizer) if fast_tokenizer else None
        # keras-hub's BPE merge loop is very slow eagerly; traced once, it is fast.
        self._tokenize = tf.function(lambda x: self.tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])
        self._raw_ids(["warm up"])  # the trace (keras-hub path) or first eager ops (fast path)
        self.tokenizer_setup_seconds = time.perf_counter() - t0

    @property
    def fast_tokenizer(self) -> bool:
        """Whether `tokenize` takes the Hugging Face `tokenizers` path."""
        return self._fast is not None

    def _raw_ids(self, texts: Sequence[str]) -> list[list[int]]:
        if self._fast is not None:
            return self._fast(texts)
        ragged = self._tokenize(tf.constant([t.encode("utf-8") for t in texts], dtype=tf.string))
        return ragged.to_list() if hasattr(ragged, "to_list") else [list(r) for r in ragged.numpy()]

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        """Token ids per text (with [CLS]/[SEP] for encoders), truncated to max_tokens.

        Returns:
          (ids, truncated): int32 arrays, and whether each text was cut.
        """
        if not texts:
            return [], []
        rows = self._raw_ids(texts)
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
        self.backbone_calls.assign_add(1)
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

    def pad_length(self, lengths: Sequence[int]) -> int:
        """The padded length of a batch with these sequence lengths."""
        return padded_length(max(lengths, default=0), self.max_tokens, self.pad_multiple)

    def embed_ids(self, ids: Sequence[np.ndarray], pad_to: Optional[int] = None) -> np.ndarray:
        """Embeds one batch of token-id sequences (right-padded) into [B, dim] float32.

        Args:
          ids: B int sequences (from `tokenize`).
          pad_to: padded length; default `pad_length` of the batch.
        """
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        length = pad_to or self.pad_length([len(r) for r in ids])
        tokens = np.full((len(ids), length), self._pad, dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=bool)
        for k, r in enumerate(ids):
            tokens[k, : len(r)] = r
            mask[k, : len(r)] = True
        self.forward_passes += 1
        self.real_tokens += int(mask.sum())
        self.padded_tokens += int(mask.size)
        return self._forward(tokens, mask).numpy().astype(np.float32)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 32,
                    progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """The plain loop: tokenize, batch as the Beam job does (`plan_batches`), embed; rows in input order.

        Args:
          texts: N texts.
          batch_size: rows per forward pass.
          progress: called after each pass with (texts done, N).

        Returns:
          [N, dim] float32, unit-norm rows.
        """
        ids, _ = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), np.float32)
        done = 0
        for idx in plan_batches([len(r) for r in ids], batch_size, self.max_tokens):
            out[idx] = self.embed_ids([ids[i] for i in idx])
            done += len(idx)
            if progress is not None:
                progress(done, len(ids))
        return out
