"""Cache location, source fingerprints and atomic, marker-checked output folders.

Converted weights live outside the repository, in `cache_dir()`. Every folder a
converter writes carries a small `learn_tf_conversion.json` marker describing
the source file and converter version, so a second conversion of the same
source returns at once, and a folder is only published (renamed into place)
once it is complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping, Optional

from learn_tf.utils.io import sha256_file  # noqa: F401  (re-exported for the converters)

MARKER_FILE = "learn_tf_conversion.json"
_EDGE_BYTES = 1 << 20  # fingerprint hashes the first and last MiB


def cache_dir() -> str:
    """Return the cache folder: `$LEARN_TF_CACHE`, else `~/.cache/learn_tf` (created)."""
    path = os.environ.get("LEARN_TF_CACHE") or os.path.join("~", ".cache", "learn_tf")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    return path


def file_fingerprint(path: str) -> dict[str, Any]:
    """Identify a (possibly large) file cheaply: name, size, sha256 of first+last MiB+size."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_EDGE_BYTES))
        if size > _EDGE_BYTES:
            f.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
            digest.update(f.read())
    return {"name": os.path.basename(path), "size": size, "sha256_edges": digest.hexdigest()}


def read_marker(folder: str) -> Optional[dict[str, Any]]:
    """Return the conversion marker of `folder`, or None when absent or unreadable."""
    try:
        with open(os.path.join(folder, MARKER_FILE), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def marker_matches(folder: str, expected: Mapping[str, Any]) -> bool:
    """True when `folder` holds a marker whose entries equal every entry of `expected`."""
    marker = read_marker(folder)
    return marker is not None and all(marker.get(k) == v for k, v in expected.items())


def write_json(path: str, obj: Any) -> None:
    """Write `obj` as indented UTF-8 JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def build_folder_atomically(
    out_dir: str, marker: Mapping[str, Any], build: Callable[[str], None]
) -> str:
    """Publish a folder made by `build(tmp_dir)` at `out_dir`, unless already up to date.

    Returns at once when `out_dir` already carries a marker equal to `marker`.
    Otherwise `build` fills a temporary folder beside `out_dir`; the marker is
    written last and the folder is renamed into place, replacing an outdated
    conversion. A non-empty `out_dir` without a marker is never replaced.
    """
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    if marker_matches(out_dir, marker):
        return out_dir
    if os.path.isfile(out_dir) or (
        os.path.isdir(out_dir) and os.listdir(out_dir) and read_marker(out_dir) is None
    ):
        raise FileExistsError(
            f"{out_dir} exists and was not written by a learn_tf converter; "
            "refusing to replace it (remove it or choose another folder)"
        )
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        build(tmp)
        _apply_umask(tmp)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(os.path.join(tmp, MARKER_FILE), {**marker, "created": stamp})
        _publish(tmp, out_dir, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _apply_umask(folder: str) -> None:
    """Give `folder` and its files the usual umask-based modes (mkdtemp makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def _publish(tmp: str, out_dir: str, marker: Mapping[str, Any]) -> None:
    """Rename `tmp` to `out_dir`, moving an outdated `out_dir` aside first."""
    old = None
    if os.path.exists(out_dir):
        old = tmp + ".old"
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # Another process published the same conversion in the meantime.
        if not marker_matches(out_dir, marker):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
