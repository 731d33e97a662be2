"""The embedding job's steps: render and key, split cache hits, tokenize, batch, embed, fit, apply, encode.

Each step is a plain function, `DoFn` or `CombineFn` that `beam.graph` wires
together; none of them knows where its input comes from or its output goes.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np
import tensorflow as tf

from beam.spec import EmbedSpec
from learn_tf.embeddings import postprocess
from learn_tf.embeddings import store
from learn_tf.embeddings.templates import item_text
from learn_tf.embeddings.batching import chunk_sorted, length_bucket, split_full_batches
from learn_tf.embeddings.text_embedder import TextEmbedder
from learn_tf.pretrained.presets import resolve_preset

NAMESPACE = "learn_embed"


def _count(name: str, n: int = 1) -> None:
    beam.metrics.Metrics.counter(NAMESPACE, name).inc(n)


# --------------------------------------------------------------------------- model sharing and progress


class _EncoderHolder:
    """A weak-referenceable wrapper so `Shared` can hold the encoder."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.lock = threading.Lock()  # one forward at a time per process: exact backbone-call counts


def _load_encoder(spec: EmbedSpec) -> _EncoderHolder:
    return _EncoderHolder(TextEmbedder(resolve_preset(spec.model), pooling=spec.pooling, max_tokens=spec.max_tokens,
                                       fast_tokenizer=spec.fast_tokenizer, jit_compile=spec.jit_compile))


class _Progress:
    """Process-wide items/s and ETA, logged at most every few seconds."""

    def __init__(self, total: int, every: float = 5.0) -> None:
        self.total, self.every = total, every
        self.done, self.start, self.last = 0, time.time(), 0.0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.time()
            if now - self.last < self.every and self.done < self.total:
                return
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
            pct = f"{100 * self.done / self.total:.0f}%" if self.total else "?"
            # With several worker processes each reports its own share (pid) and its own ETA for the rest.
            msg = (f"embedded {self.done:,}/{self.total:,} items ({pct}) [pid {os.getpid()}], {rate:.1f} items/s, "
                   f"ETA {eta:.0f} s")
            print(f"[learn embed] {msg}", flush=True)


_PROGRESS: dict[str, _Progress] = {}


# --------------------------------------------------------------------------- prompts and the cache join


def render_fn(row: dict[str, Any], template: str, model_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """One item row -> (text hash, {item_id, text}), counting empty fields and fallbacks."""
    text, missing, fallback = item_text(template, row)
    _count("items_in")
    for name in missing:
        _count(f"template_missing_{name}")
    if fallback:
        _count("empty_text_fallback")
    h = store.text_hash(model_id, template, text)
    yield h, {"item_id": str(row["item_id"]), "text": text}


def cache_entry(row: dict[str, Any]) -> tuple[str, Any]:
    """A cache Parquet row -> (text hash, raw vector)."""
    return row["text_hash"], row["raw"]


def split_hits(element: tuple[str, dict[str, list]]) -> Iterator[Any]:
    """After the cache join: hits emit (item_id, hash, raw); misses go to the "miss" output."""
    h, groups = element
    items, cached = groups["items"], groups["cached"]
    if not items:
        _count("cache_entries_evicted")
        return
    if cached:
        _count("items_reused", len(items))
        raw = np.asarray(cached[0], np.float32)
        for it in items:
            yield (it["item_id"], h, raw)
    else:
        yield beam.pvalue.TaggedOutput("miss", (h, items[0]["text"], [it["item_id"] for it in items]))


# --------------------------------------------------------------------------- the model


class _ModelFn(beam.DoFn):
    """A DoFn that loads the frozen encoder once per worker process (in `setup`, shared between threads)."""

    def __init__(self, spec: EmbedSpec, shared_handle: Any) -> None:
        self.spec, self.shared_handle = spec, shared_handle

    def setup(self) -> None:
        spec = self.spec
        self.holder = self.shared_handle.acquire(lambda: _load_encoder(spec))


class TokenizeFn(_ModelFn):
    """Tokenizes a batch of texts; keys each by its length bucket (`learn_tf.embeddings.batching`)."""

    def process(self, batch):
        ids, truncated = self.holder.encoder.tokenize([text for _, text, _ in batch])
        _count("texts_truncated", sum(truncated))
        _count("tokens", sum(len(r) for r in ids))
        for (h, _, item_ids), r in zip(batch, ids):
            yield length_bucket(len(r), self.spec.max_tokens), (h, r.tolist(), item_ids)


def _by_length(v: Any) -> tuple[int, str]:
    return len(v[1]), v[0]  # (token count, text hash): similar lengths together, deterministic


def full_batches(element: tuple[int, Iterable[Any]], size: int) -> Iterator[Any]:
    """One length bucket -> its full batches of `size` (main output); the remainder goes to "rest" per value."""
    _, values = element
    full, rest = split_full_batches(values, size, _by_length)
    yield from full
    for v in rest:
        yield beam.pvalue.TaggedOutput("rest", v)


def rest_batches(element: tuple[Any, Iterable[Any]], size: int) -> Iterator[list[Any]]:
    """The remainders of all buckets, pooled -> batches of `size` sorted by length (the last may be short)."""
    _, values = element
    yield from chunk_sorted(values, size, _by_length)


class EmbedBatchFn(_ModelFn):
    """Runs the frozen backbone on one batch of similar lengths; emits (item_id, hash, raw) per item."""

    def setup(self) -> None:
        super().setup()
        self.progress = _PROGRESS.setdefault(self.spec.run_id, _Progress(self.spec.expected_to_embed))

    def process(self, batch):
        enc = self.holder.encoder
        with self.holder.lock:
            calls, padded = int(enc.backbone_calls.numpy()), enc.padded_tokens
            vecs = enc.embed_ids([np.asarray(ids, np.int32) for _, ids, _ in batch])
            calls, padded = int(enc.backbone_calls.numpy()) - calls, enc.padded_tokens - padded
        _count("forward_passes")
        _count("backbone_calls", calls)  # executions of the traced backbone graph
        _count("padded_tokens", padded)
        _count("texts_embedded", len(batch))
        for (h, _, item_ids), v in zip(batch, vecs):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"non-finite embedding for item {item_ids[0]} (text hash {h})")
            for item_id in item_ids:
                yield item_id, h, v
        self.progress.add(sum(len(b[2]) for b in batch))


# --------------------------------------------------------------------------- post-processing


class MomentsFn(beam.CombineFn):
    """Combines vectors into [n, sum, sum of outer products (or None)]."""

    def __init__(self, with_outer: bool) -> None:
        self.with_outer = with_outer

    def create_accumulator(self):
        return [0, None, None]

    def add_input(self, acc, v):
        v = np.asarray(v, np.float64)
        acc[0] += 1
        acc[1] = v.copy() if acc[1] is None else acc[1] + v
        if self.with_outer:
            o = np.outer(v, v)
            acc[2] = o if acc[2] is None else acc[2] + o
        return acc

    def merge_accumulators(self, accs):
        out = [0, None, None]
        for a in accs:
            out[0] += a[0]
            for k in (1, 2):
                if a[k] is not None:
                    out[k] = a[k].copy() if out[k] is None else out[k] + a[k]
        return out

    def extract_output(self, acc):
        return acc


def isotropy(acc) -> float:
    """Mean pairwise cosine from a `MomentsFn` accumulator of unit vectors (n, sum)."""
    n, s = acc[0], acc[1]
    if n < 2 or s is None:
        return float("nan")
    return float((s @ s - n) / (n * (n - 1)))


def fit_transform(acc, method: str, whiten_dim: Any) -> postprocess.Transform:
    """Fits the post-processing on the catalogue's raw-vector moments."""
    d = len(acc[1]) if acc[1] is not None else 0
    return postprocess.fit_from_moments(method, acc[0], acc[1] if d else np.zeros(1), acc[2], whiten_dim)


def apply_transform(batch: list[Any], tr: postprocess.Transform, model_id: str) -> Iterator[dict[str, Any]]:
    """(item_id, hash, raw) rows -> published embedding rows."""
    vecs = tr.apply(np.stack([r[2] for r in batch]))
    for (item_id, h, _), v in zip(batch, vecs):
        yield {"item_id": item_id, "embedding": v.tolist(), "text_hash": h, "model_id": model_id}


# --------------------------------------------------------------------------- encodings of the outputs


def to_example(r: dict[str, Any]) -> bytes:
    """A published embedding row as a serialised `tf.train.Example`."""
    f = tf.train.Feature
    ex = tf.train.Example(features=tf.train.Features(feature={
        "item_id": f(bytes_list=tf.train.BytesList(value=[r["item_id"].encode()])),
        "embedding": f(float_list=tf.train.FloatList(value=r["embedding"])),
        "text_hash": f(bytes_list=tf.train.BytesList(value=[r["text_hash"].encode()])),
        "model_id": f(bytes_list=tf.train.BytesList(value=[r["model_id"].encode()])),
    }))
    return ex.SerializeToString()


def cache_row(kv: tuple[str, Any]) -> dict[str, Any]:
    """(text hash, raw vector) -> a cache Parquet row."""
    return {"text_hash": kv[0], "raw": np.asarray(kv[1], np.float32).tolist()}


def row_digest(r: dict[str, Any]) -> int:
    """The checksum digest of one published row."""
    return store.row_digest(r["item_id"], np.asarray(r["embedding"], np.float32))
