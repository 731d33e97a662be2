"""Published item embeddings: a manifest that commits a set of shard files.

An embedding directory holds shard files named with the run that wrote them
(`embeddings-<run>-00000-of-00002.parquet`, `.tfrecord`, `cache-<run>-*`) and
`manifest.json`, written last and atomically. Readers read only the files the
manifest lists, so a run killed midway leaves the previous publication intact,
and a re-run publishes exactly one embedding per item.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from learn_tf.embeddings.postprocess import Transform

MANIFEST = "manifest.json"
TRANSFORM = "transform.npz"

EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("text_hash", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
    ]
)
CACHE_SCHEMA = pa.schema(
    [
        pa.field("text_hash", pa.string(), nullable=False),
        pa.field("raw", pa.list_(pa.float32()), nullable=False),
    ]
)


def text_hash(model_id: str, template: str, text: str) -> str:
    """The incremental-cache key: sha256 of (model id, template, rendered text)."""
    h = hashlib.sha256()
    for part in (model_id, template, text):
        b = part.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def row_digest(item_id: str, vector: np.ndarray) -> int:
    """A 256-bit integer digest of one (item, embedding) row; summed for an order-free checksum."""
    h = hashlib.sha256(item_id.encode("utf-8") + b"\0" + np.asarray(vector, np.float32).tobytes())
    return int.from_bytes(h.digest(), "big")


def combine_digests(digests: Iterable[int]) -> str:
    """Order-independent checksum of rows: the sum of row digests mod 2^256, hex."""
    return format(sum(digests) % (1 << 256), "064x")


def read_manifest(directory: str) -> Optional[dict[str, Any]]:
    """The published manifest of `directory`, or None when nothing is published."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_parquet_files(directory: str, files: list[str], columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    tables = [pq.read_table(os.path.join(directory, f), columns=columns) for f in files]
    if not tables:
        return pd.DataFrame({c: [] for c in columns})
    return pa.concat_tables(tables).to_pandas()


def load_embeddings(directory: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Loads published embeddings sorted by item id.

    Returns:
      (item_ids [N] str, embeddings [N, D] float32, manifest).

    Raises:
      FileNotFoundError: nothing is published in `directory`.
      ValueError: a shard is missing or the count does not match the manifest.
    """
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"{os.path.join(directory, MANIFEST)} not found; run `learn embed` first")
    for f in manifest["files"]["parquet"]:
        if not os.path.exists(os.path.join(directory, f)):
            raise ValueError(f"{directory}: manifest lists {f}, which is missing")
    df = _read_parquet_files(directory, manifest["files"]["parquet"], ["item_id", "embedding"])
    df = df.sort_values("item_id", kind="mergesort")
    if len(df) != manifest["count"]:
        raise ValueError(f"{directory}: {len(df)} embeddings in shards, manifest says {manifest['count']}")
    ids = df["item_id"].to_numpy().astype(str)
    mat = np.stack(df["embedding"].to_numpy()).astype(np.float32) if len(df) else np.zeros((0, manifest["dim"]),
                                                                                            np.float32)
    return ids, mat, manifest


def load_cache(directory: str, manifest: Optional[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The raw (pre-post-processing) vectors of the published run, by text hash."""
    if not manifest:
        return {}
    files = [f for f in manifest["files"].get("cache", []) if os.path.exists(os.path.join(directory, f))]
    if len(files) != len(manifest["files"].get("cache", [])):
        return {}  # an incomplete cache is ignored (everything is re-embedded), never half-used
    df = _read_parquet_files(directory, files, ["text_hash", "raw"])
    return {h: np.asarray(v, np.float32) for h, v in zip(df["text_hash"], df["raw"])}


def cached_hashes(directory: str, manifest: Optional[dict[str, Any]]) -> set[str]:
    """Text hashes present in the published cache (reads only that column)."""
    if not manifest:
        return set()
    files = manifest["files"].get("cache", [])
    if not all(os.path.exists(os.path.join(directory, f)) for f in files):
        return set()
    return set(_read_parquet_files(directory, files, ["text_hash"])["text_hash"])


def load_transform(directory: str) -> Transform:
    """The post-processing transform fitted on the published catalogue."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"{os.path.join(directory, MANIFEST)} not found; run `learn embed` first")
    return Transform.load(os.path.join(directory, manifest["transform_file"]))
