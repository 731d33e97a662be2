"""Published item embeddings: a manifest that commits a set of shard files.

An embedding directory holds shard files named with the run that wrote them
(`embeddings-<run>-00000-of-00002.parquet`, `.tfrecord`, `cache-<run>-*`,
`transform-<run>.npz`) and `manifest.json`, written last and atomically. Readers
read only the files the manifest lists, so a run killed midway leaves the
previous publication intact, and a re-run publishes exactly one embedding per
item.

This module is the one reader and writer of those files (the Beam job and its
publication step use it too). All file access goes through `learn_tf.utils.io`
(`tf.io.gfile`, Beam `FileSystems` for `gs://`), so a directory may be local or
on an object store (`gs://...`, `s3://...`).
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
from learn_tf.utils import io

MANIFEST = "manifest.json"
TRANSFORM = "transform.npz"
STATS = "stats.json"
# Names a run writes into the directory; any of these the manifest does not list is stale.
RUN_FILE_PREFIXES = ("embeddings-", "cache-", "transform-", ".run-", "beam-temp-")

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


# --------------------------------------------------------------------------- keys and checksums


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


# --------------------------------------------------------------------------- names of a run's files


def shard_prefix(directory: str, kind: str, run_id: str) -> str:
    """Path prefix of one run's shards of `kind` ("embeddings" or "cache")."""
    return os.path.join(directory, f"{kind}-{run_id}")


def transform_name(run_id: str) -> str:
    """File name of the transform a run publishes."""
    return f"transform-{run_id}.npz"


def staging_dir(directory: str, run_id: str) -> str:
    """Where a run's workers leave the stats and fitted transform for publication."""
    return os.path.join(directory, f".run-{run_id}")


def listed_files(manifest: dict[str, Any]) -> list[str]:
    """Every file name a manifest commits, shards and transform (not the manifest itself)."""
    return [f for group in manifest["files"].values() for f in group] + [manifest["transform_file"]]


def list_run_shards(directory: str, kind: str, run_id: str, suffix: str) -> list[str]:
    """Sorted names of the shards of `kind` with `suffix` (".parquet", ".tfrecord") one run wrote."""
    pattern = f"{shard_prefix(directory, kind, run_id)}-*{suffix}"
    return sorted(os.path.basename(p) for p in io.glob(pattern))


# --------------------------------------------------------------------------- generic file access


def read_json(path: str) -> Any:
    """Parses the JSON file at `path`."""
    return io.read_json(path)


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as indented, key-sorted JSON; the file appears under `path` only when complete.

    Renamed onto the target locally; on an object store the object is
    uploaded in one request (`learn_tf.utils.io.atomic_path`).
    """
    io.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def makedirs(directory: str) -> None:
    """Creates `directory` and its parents if missing."""
    io.makedirs(directory)


def move(src: str, dst: str) -> None:
    """Renames `src` onto `dst` (replacing it)."""
    io.rename(src, dst)


def read_parquet(path: str, columns: Optional[list[str]] = None) -> pa.Table:
    """One Parquet file (local or object store) as an Arrow table."""
    return io.read_table(path, columns)


def _read_parquet_files(directory: str, files: list[str], columns: list[str]) -> pd.DataFrame:
    tables = [read_parquet(os.path.join(directory, f), columns) for f in files]
    if not tables:
        return pd.DataFrame({c: [] for c in columns})
    return pa.concat_tables(tables).to_pandas()


def _all_exist(directory: str, files: Iterable[str]) -> bool:
    return all(io.exists(os.path.join(directory, f)) for f in files)


# --------------------------------------------------------------------------- manifest and transform


def read_manifest(directory: str) -> Optional[dict[str, Any]]:
    """The published manifest of `directory`, or None when nothing is published."""
    path = os.path.join(directory, MANIFEST)
    if not io.exists(path):
        return None
    return read_json(path)


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    """Publishes `manifest`: the commit point of a run (its files must already be in place)."""
    write_json(os.path.join(directory, MANIFEST), manifest)


def files_present(directory: str, manifest: dict[str, Any]) -> bool:
    """Whether every file `manifest` lists exists in `directory`."""
    return _all_exist(directory, listed_files(manifest))


def remove_unlisted(directory: str, manifest: dict[str, Any]) -> None:
    """Deletes run files (shards, transforms, staging and Beam temp dirs) that `manifest` does not list."""
    keep = {MANIFEST, *listed_files(manifest)}
    for name in io.listdir(directory):
        if name in keep or not name.startswith(RUN_FILE_PREFIXES):
            continue
        path = os.path.join(directory, name)
        if io.isdir(path):
            io.rmtree(path)
        else:
            io.remove(path)


def write_transform(path: str, transform: Transform) -> None:
    """Writes a post-processing transform (.npz)."""
    io.write_bytes(path, transform.to_bytes())


def read_transform(path: str) -> Transform:
    """Reads a transform written by `write_transform`."""
    return Transform.from_bytes(io.read_bytes(path))


def load_transform(directory: str) -> Transform:
    """The post-processing transform fitted on the published catalogue."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"{os.path.join(directory, MANIFEST)} not found; run `learn embed` first")
    return read_transform(os.path.join(directory, manifest["transform_file"]))


# --------------------------------------------------------------------------- embeddings and cache


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
        if not io.exists(os.path.join(directory, f)):
            raise ValueError(f"{directory}: manifest lists {f}, which is missing")
    df = _read_parquet_files(directory, manifest["files"]["parquet"], ["item_id", "embedding"])
    df = df.sort_values("item_id", kind="mergesort")
    if len(df) != manifest["count"]:
        raise ValueError(f"{directory}: {len(df)} embeddings in shards, manifest says {manifest['count']}")
    ids = df["item_id"].to_numpy().astype(str)
    mat = np.stack(df["embedding"].to_numpy()).astype(np.float32) if len(df) else np.zeros((0, manifest["dim"]),
                                                                                            np.float32)
    return ids, mat, manifest


def _complete_cache_files(directory: str, manifest: Optional[dict[str, Any]]) -> Optional[list[str]]:
    """The published cache shards, or None when there is none or one is missing.

    An incomplete cache is ignored (everything is re-embedded), never half-used.
    """
    if not manifest:
        return None
    files = manifest["files"].get("cache", [])
    return files if _all_exist(directory, files) else None


def load_cache(directory: str, manifest: Optional[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The raw (pre-post-processing) vectors of the published run, by text hash."""
    files = _complete_cache_files(directory, manifest)
    if files is None:
        return {}
    df = _read_parquet_files(directory, files, ["text_hash", "raw"])
    return {h: np.asarray(v, np.float32) for h, v in zip(df["text_hash"], df["raw"])}


def cached_hashes(directory: str, manifest: Optional[dict[str, Any]]) -> set[str]:
    """Text hashes present in the published cache (reads only that column)."""
    files = _complete_cache_files(directory, manifest)
    if files is None:
        return set()
    return set(_read_parquet_files(directory, files, ["text_hash"])["text_hash"])
