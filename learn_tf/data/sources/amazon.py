"""Amazon Reviews 2018 (McAuley lab) JSON-lines reviews and metadata, plain or gzipped."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, Iterator

import pandas as pd

from learn_tf.data.report import TableLog
from learn_tf.data.sources import RawTables
from learn_tf.utils.progress import progress

_GZIP_MAGIC = b"\x1f\x8b"


def iter_json_lines(path: str, log: TableLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each JSON-object line of a plain or gzipped file.

    Malformed lines are rejected into `log` (and counted as rows in) with the file
    and line number; blank lines are skipped. Invalid UTF-8 is decoded with
    replacement characters and counted as a note.

    Raises:
      FileNotFoundError: with the path, if the file does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{log.table} file not found: {path}")
    with open(path, "rb") as probe:
        gz = probe.read(2) == _GZIP_MAGIC
    opener = gzip.open if gz else open
    name = os.path.basename(path)
    with opener(path, "rb") as f:
        for lineno, line in enumerate(progress(f, desc=f"read {name}", unit="lines"), start=1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line.decode("utf-8", errors="replace")
                log.note("non_utf8_lines_repaired")
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                log.rows_in += 1  # parsed rows are counted when validated
                log.reject("malformed_json", f"{name}:{lineno}", f"not JSON: {e.msg}", text[:200])
                continue
            if not isinstance(obj, dict):
                log.rows_in += 1
                log.reject("malformed_json", f"{name}:{lineno}", "line is not a JSON object", text[:200])
                continue
            yield lineno, obj


def _join(v: Any, sep: str) -> Any:
    if isinstance(v, list):
        return sep.join(str(x).strip() for x in v if str(x).strip())
    return v


def read_amazon(reviews_path: str, meta_path: str, items_log: TableLog, inter_log: TableLog) -> RawTables:
    """Reads a reviews file (reviewerID, asin, unixReviewTime, overall) and a meta file.

    Meta fields used: asin, title, brand, category (list, joined with ", ";
    `main_cat` when empty), description (list, joined), price.
    """
    items: list[dict[str, Any]] = []
    meta_name = os.path.basename(meta_path)
    for lineno, obj in iter_json_lines(meta_path, items_log):
        category = _join(obj.get("category"), ", ") or obj.get("main_cat")
        items.append(
            {
                "item_id": obj.get("asin"),
                "title": obj.get("title"),
                "brand": obj.get("brand"),
                "category": category,
                "description": _join(obj.get("description"), " "),
                "price": obj.get("price"),
                "_file": meta_name,
                "_line": lineno,
            }
        )
    rows: list[dict[str, Any]] = []
    rev_name = os.path.basename(reviews_path)
    for lineno, obj in iter_json_lines(reviews_path, inter_log):
        rows.append(
            {
                "user_id": obj.get("reviewerID"),
                "item_id": obj.get("asin"),
                "timestamp": obj.get("unixReviewTime"),
                "rating": obj.get("overall"),
                "_file": rev_name,
                "_line": lineno,
            }
        )
    item_cols = ["item_id", "title", "brand", "category", "description", "price", "_file", "_line"]
    inter_cols = ["user_id", "item_id", "timestamp", "rating", "_file", "_line"]
    return RawTables(
        items=pd.DataFrame(items, columns=item_cols, dtype=object),
        interactions=pd.DataFrame(rows, columns=inter_cols, dtype=object),
        description=f"amazon reviews={reviews_path} meta={meta_path}",
    )
