"""File access for local paths and object-store URIs, and atomic publication on both.

Every artifact path of the project (ingested data, splits, embeddings, the
pipeline's artifacts, exported models) goes through these functions, so it may
be a local path or a URI:

- `gs://` goes through Beam's `FileSystems` (google-cloud-storage: the same
  buckets as TensorFlow's GCS support on GCP, and it honours
  `STORAGE_EMULATOR_HOST`, so tests reach a local emulator);
- everything else (local paths, `s3://` with tensorflow-io, `hdfs://`,
  `ram://`) goes through `tf.io.gfile`.

Atomic writes: a local file is written beside its target and renamed onto it;
an object is written as a local temporary file and uploaded in one request, so
it appears complete or not at all. Directories that must appear at once are
published with a marker or manifest written last (see `copy_tree(last=...)`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from typing import IO, Any, Iterator, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

_CHUNK = 8 << 20


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for `scheme://...` (object stores, ram://), False for a local path."""
    return "://" in os.fspath(path)


def _beam_fs(path: str) -> Any:
    """Beam's FileSystems for `gs://` URIs, None for paths `tf.io.gfile` serves."""
    if not path.startswith("gs://"):
        return None
    from apache_beam.io.filesystems import FileSystems  # heavy (Beam); only gs:// paths need it

    return FileSystems


def ensure_filesystem(path: str) -> None:
    """Registers TensorFlow's `s3://` file system (tensorflow-io) when `path` needs it."""
    if os.fspath(path).startswith("s3://"):
        import tensorflow_io  # noqa: F401  (optional: registers s3:// with tf.io.gfile)


# --------------------------------------------------------------------------- single files


def open_file(path: str, mode: str = "rb") -> IO[Any]:
    """Opens a file for reading ("r", "rb") or writing ("w", "wb"); folders are created as needed."""
    path = os.fspath(path)
    fs = _beam_fs(path)
    if fs is None:
        ensure_filesystem(path)
        if "w" in mode:
            tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        return tf.io.gfile.GFile(path, mode)
    raw = fs.create(path) if "w" in mode else fs.open(path)
    return raw if "b" in mode else io.TextIOWrapper(raw, encoding="utf-8")


def read_bytes(path: str) -> bytes:
    """The whole content of a file."""
    with open_file(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    """The whole content of a UTF-8 text file."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (see `atomic_path`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def exists(path: str) -> bool:
    """Whether a file or folder exists at `path` (a folder on an object store: any object below it)."""
    path = os.fspath(path)
    fs = _beam_fs(path)
    if fs is None:
        ensure_filesystem(path)
        return tf.io.gfile.exists(path)
    return fs.exists(path) or isdir(path)


def isdir(path: str) -> bool:
    """Whether `path` is a folder (on an object store: a prefix with objects below it)."""
    path = os.fspath(path)
    fs = _beam_fs(path)
    if fs is None:
        ensure_filesystem(path)
        return tf.io.gfile.isdir(path)
    return bool(list_files(path))


def makedirs(path: str) -> None:
    """Creates a folder and its parents (object stores have no folders: nothing to do there)."""
    path = os.fspath(path)
    if _beam_fs(path) is None:
        ensure_filesystem(path)
        tf.io.gfile.makedirs(path)


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a glob pattern (`*` stays within one folder level)."""
    fs = _beam_fs(pattern)
    if fs is None:
        ensure_filesystem(pattern)
        return sorted(tf.io.gfile.glob(pattern))
    return sorted(m.path for m in fs.match([pattern])[0].metadata_list)


def list_files(directory: str) -> list[str]:
    """Every file below `directory`, recursively, as paths relative to it (sorted)."""
    directory = os.fspath(directory).rstrip("/")
    fs = _beam_fs(directory)
    if fs is None:
        ensure_filesystem(directory)
        if not tf.io.gfile.isdir(directory):
            return []
        out = []
        for root, _, files in tf.io.gfile.walk(directory):
            rel = root[len(directory):].strip("/")
            out.extend(f"{rel}/{f}" if rel else f for f in files)
        return sorted(out)
    found = fs.match([f"{directory}/**"])[0].metadata_list
    return sorted(m.path[len(directory) + 1:] for m in found if not m.path.endswith("/"))


def listdir(directory: str) -> list[str]:
    """Names of the files and folders directly in `directory` (no trailing slashes), sorted."""
    directory = os.fspath(directory).rstrip("/")
    if _beam_fs(directory) is None:
        ensure_filesystem(directory)
        return sorted({n.rstrip("/") for n in tf.io.gfile.listdir(directory)})
    return sorted({rel.split("/", 1)[0] for rel in list_files(directory)})


def remove(path: str) -> None:
    """Deletes one file."""
    fs = _beam_fs(path)
    if fs is None:
        ensure_filesystem(path)
        tf.io.gfile.remove(path)
    else:
        fs.delete([path])


def rmtree(directory: str) -> None:
    """Deletes a folder and everything below it (nothing when it is missing)."""
    directory = os.fspath(directory).rstrip("/")
    fs = _beam_fs(directory)
    if fs is None:
        ensure_filesystem(directory)
        if tf.io.gfile.exists(directory):
            tf.io.gfile.rmtree(directory)
    elif list_files(directory):
        fs.delete([f"{directory}/"])


def rename(src: str, dst: str) -> None:
    """Moves a file onto `dst`, replacing it (atomic locally; copy + delete on an object store)."""
    fs = _beam_fs(src)
    if fs is None:
        ensure_filesystem(src)
        tf.io.gfile.rename(src, dst, overwrite=True)
        return
    if fs.exists(dst):
        fs.delete([dst])
    fs.rename([src], [dst])


def copy(src: str, dst: str) -> None:
    """Copies one file between any two locations (local, gs://, s3://), replacing `dst`."""
    if _beam_fs(src) is None and _beam_fs(dst) is None:
        ensure_filesystem(src)
        ensure_filesystem(dst)
        tf.io.gfile.makedirs(os.path.dirname(dst) or ".")
        tf.io.gfile.copy(src, dst, overwrite=True)
        return
    with open_file(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            fout.write(chunk)


def copy_tree(src: str, dst: str, last: Sequence[str] = ()) -> list[str]:
    """Copies every file below `src` to the same relative path below `dst`.

    Files whose name is in `last` are copied after all others, so a reader
    that waits for one of them (a SavedModel's `saved_model.pb`, a manifest,
    a marker) never sees a partial tree, on object stores too.

    Returns:
      The relative paths copied, in order.
    """
    files = list_files(src)
    ordered = [f for f in files if os.path.basename(f) not in last] + [
        f for f in files if os.path.basename(f) in last]
    for rel in ordered:
        copy(f"{src.rstrip('/')}/{rel}", f"{dst.rstrip('/')}/{rel}")
    return ordered


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local folder with the content of `path` (the path itself when local; else a temporary download).

    For readers that only take local paths (json/`open`-based loaders, Keras).
    """
    if not is_uri(path):
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="learn-download-") as d:  # local by design: a scratch copy
        copy_tree(path, d)
        yield d


@contextlib.contextmanager
def staged_dir(path: str, last: Sequence[str] = ()) -> Iterator[str]:
    """A folder to write into that ends up at `path`: `path` itself when local, else a local folder
    uploaded to `path` on success (files named in `last` uploaded last)."""
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)  # a local path: written in place
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="learn-upload-") as d:  # local by design: staged for upload
        yield d
        copy_tree(d, path, last=last)


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a local temporary path whose file ends up at `path` on success.

    Local `path`: the temporary file sits beside it and is renamed onto it.
    URI: it is uploaded in one request when the block ends (objects appear
    complete or not at all). On an exception `path` is untouched, so a crashed
    job never leaves a half-written file under the final name.
    """
    path = os.fspath(path)
    if is_uri(path):
        with tempfile.TemporaryDirectory(prefix="learn-atomic-") as d:  # local by design: staged for upload
            tmp = os.path.join(d, os.path.basename(path))
            yield tmp
            _upload(tmp, path)
        return
    directory = os.path.dirname(path) or "."  # a local path from here on
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _upload(local: str, uri: str) -> None:
    """One local file -> one object, written in a single stream (complete when closed)."""
    with open(local, "rb") as fin, open_file(uri, "wb") as fout:  # `local` is the staged temporary file
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            fout.write(chunk)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Opens a file for writing that appears under `path` only when closed cleanly."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:  # the local staged file
        yield f


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Writes `obj` as indented, key-sorted JSON, atomically (byte-stable output)."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def read_json(path: str) -> Any:
    """Parses the JSON file at `path`."""
    return json.loads(read_text(path))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open_file(os.fspath(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """One Parquet file (local or object store) as an Arrow table."""
    return pq.read_table(pa.BufferReader(read_bytes(path)), columns=list(columns) if columns else None)


def read_parquet(path: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One Parquet file (local or object store) as a DataFrame."""
    return read_table(path, columns).to_pandas()


def write_parquet(df: pd.DataFrame, path: str) -> None:
    """Writes a DataFrame as Parquet (no index), atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)  # the local staged file
