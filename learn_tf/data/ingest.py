"""Ingestion: any source into the canonical items and interactions tables.

Every row that comes in is either kept or rejected with a reason, the file and
line it came from, and the offending field. Rejected rows go to
`rejects.jsonl`; counts and examples go to `ingest_report.json` and the console.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from learn_tf.config import DataConfig
from learn_tf.data import schema
from learn_tf.data.report import TableLog, format_report, write_rejects
from learn_tf.data.sources import RawTables
from learn_tf.data.tfrecords import write_interactions_tfrecord, write_items_tfrecord
from learn_tf.utils import io
from learn_tf.utils.io import atomic_path, sha256_file, write_json


class IngestError(RuntimeError):
    """Ingestion finished its report but the data is not usable."""


@dataclass
class IngestResult:
    """The canonical tables and the report of one ingestion."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    report: dict[str, Any]


def read_source(cfg: DataConfig, items_log: TableLog, inter_log: TableLog) -> RawTables:
    """Reads the configured source into raw frames (parse-level rejects go to the logs)."""
    if cfg.source == "movielens100k":
        from learn_tf.data.sources.movielens import read_movielens100k

        return read_movielens100k()
    if cfg.source == "amazon":
        from learn_tf.data.sources.amazon import read_amazon

        assert cfg.reviews_path and cfg.meta_path
        return read_amazon(cfg.reviews_path, cfg.meta_path, items_log, inter_log)
    if cfg.source in ("csv", "parquet"):
        from learn_tf.data.sources.tabular import read_tabular

        assert cfg.interactions_path and cfg.interaction_columns
        return read_tabular(cfg.source, cfg.interactions_path, cfg.interaction_columns,
                            cfg.items_path, cfg.item_columns, cfg.csv_delimiter)
    if cfg.source == "synthetic":
        from learn_tf.data.synthetic import generate_synthetic

        assert cfg.synthetic is not None
        items, inter = generate_synthetic(cfg.synthetic)
        items = items.assign(_file="<synthetic>", _line=np.arange(1, len(items) + 1))
        inter = inter.drop(columns=["row"]).assign(_file="<synthetic>", _line=np.arange(1, len(inter) + 1))
        return RawTables(items=items, interactions=inter, description=f"synthetic {cfg.synthetic}")
    raise ValueError(f"unknown data.source {cfg.source!r}")


def _clean_text(col: pd.Series) -> pd.Series:
    """None/NaN -> "", everything else str with whitespace collapsed."""
    s = col.astype(object).where(col.notna(), "")
    return s.map(lambda v: " ".join(str(v).split()) if v != "" else "")


def _blank(col: pd.Series) -> pd.Series:
    return col.isna() | (col.astype(str).str.strip() == "")


def validate_items(raw: pd.DataFrame, log: TableLog) -> pd.DataFrame:
    """Applies the item checks: missing id, duplicate id; fills fallback texts.

    Args:
      raw: item_id, any of ITEM_TEXT_FIELDS, `_file`, `_line`.
      log: the items log; its rows_in is increased by len(raw).
    Returns:
      The canonical items frame (ITEMS_SCHEMA column order).
    """
    log.rows_in += len(raw)
    df = raw.copy()
    bad = _blank(df["item_id"])
    log.reject_rows("missing_item_id", df[bad], "field item_id is empty", [])
    df = df[~bad]
    df["item_id"] = df["item_id"].astype(str).str.strip()
    dup = df["item_id"].duplicated(keep="first")
    log.reject_rows("duplicate_item_id", df[dup], "item_id already seen in an earlier row", ["item_id"])
    df = df[~dup]
    out = pd.DataFrame({"item_id": df["item_id"].to_numpy()})
    for name in schema.ITEM_TEXT_FIELDS:
        out[name] = _clean_text(df[name]).to_numpy() if name in df else ""
    no_text = (out["title"] == "").to_numpy()
    if no_text.any():
        others = [f for f in schema.ITEM_TEXT_FIELDS if f != "title"]
        sub = out.loc[no_text, others]
        fallback = [
            "; ".join(f"{k}: {v}" for k, v in zip(others, row) if v)[:200]
            for row in sub.itertuples(index=False)
        ]
        ids = out.loc[no_text, "item_id"].to_numpy()
        out.loc[no_text, "title"] = [fb or f"Item {i}" for fb, i in zip(fallback, ids)]
        log.note("text_fallback", int(no_text.sum()))
    out["text_fallback"] = no_text
    log.kept = len(out)
    return out


def _parse_timestamps(col: pd.Series, fmt: str) -> pd.Series:
    """Seconds since the epoch as float (NaN where unparseable)."""
    if fmt in ("unix", "unix_ms"):
        v = pd.to_numeric(col, errors="coerce").astype(float)
        v = v / 1000.0 if fmt == "unix_ms" else v
        return v.where(np.isfinite(v))
    if fmt == "iso":
        dt = pd.to_datetime(col, errors="coerce", utc=True)
    else:
        dt = pd.to_datetime(col, errors="coerce", utc=True, format=fmt)
    secs = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return secs.astype(float)


def validate_interactions(raw: pd.DataFrame, item_ids: set[str], log: TableLog,
                          timestamp_format: str) -> pd.DataFrame:
    """Applies the interaction checks in order; each rejected row gets its first failing reason.

    Reasons: missing_user_id, missing_item_id, bad_timestamp, bad_rating,
    unknown_item, duplicate (same user, item and timestamp as an earlier row).
    """
    log.rows_in += len(raw)
    df = raw.copy()
    raw_cols = ["user_id", "item_id", "timestamp"]
    for col, reason in (("user_id", "missing_user_id"), ("item_id", "missing_item_id")):
        bad = _blank(df[col])
        log.reject_rows(reason, df[bad], f"field {col} is empty", raw_cols)
        df = df[~bad]
    df["user_id"] = df["user_id"].astype(str).str.strip()
    df["item_id"] = df["item_id"].astype(str).str.strip()
    ts = _parse_timestamps(df["timestamp"], timestamp_format)
    bad = ts.isna()
    log.reject_rows("bad_timestamp", df[bad], f"field timestamp is not a valid '{timestamp_format}' time",
                    raw_cols)
    df, ts = df[~bad], ts[~bad]
    if "rating" in df:
        rating = pd.to_numeric(df["rating"], errors="coerce")
        bad = rating.isna() & ~_blank(df["rating"])
    else:
        rating = pd.Series(np.nan, index=df.index)
        bad = pd.Series(False, index=df.index)
    log.reject_rows("bad_rating", df[bad], "field rating is not a number", raw_cols + ["rating"])
    df, ts, rating = df[~bad], ts[~bad], rating[~bad]
    bad = ~df["item_id"].isin(item_ids)
    log.reject_rows("unknown_item", df[bad], "item_id is not in the items table", raw_cols)
    df, ts, rating = df[~bad], ts[~bad], rating[~bad]
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].to_numpy(),
            "item_id": df["item_id"].to_numpy(),
            "timestamp": np.floor(ts.to_numpy()).astype(np.int64),
            "rating": rating.to_numpy(dtype=float),
            "row": df["_line"].to_numpy(dtype=np.int64),
        }
    )
    dup = out.duplicated(subset=["user_id", "item_id", "timestamp"], keep="first").to_numpy()
    log.reject_rows("duplicate", df[dup], "same user_id, item_id and timestamp as an earlier row", raw_cols)
    out = out[~dup].reset_index(drop=True)
    log.kept = len(out)
    return out


def _write_parquet(frame: pd.DataFrame, sch: pa.Schema, path: str) -> None:
    table = pa.Table.from_pandas(frame, schema=sch, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def ingest(cfg: DataConfig, output_dir: str, write_tfrecords: bool = True, echo: bool = True) -> IngestResult:
    """Reads, validates and writes the canonical tables, report and rejects.

    Outputs under `output_dir`: items.parquet, interactions.parquet,
    tfrecords/{items,interactions}.tfrecord, rejects.jsonl, ingest_report.json.
    Each file is written atomically, so a crashed run leaves either the old or
    the new file and a re-run completes cleanly.

    Raises:
      IngestError: more than `cfg.max_rejected_fraction` of the interaction
        rows were rejected, or nothing usable remained (after the report is
        written).
    """
    items_log = TableLog("items", cfg.max_reject_examples)
    inter_log = TableLog("interactions", cfg.max_reject_examples)
    raw = read_source(cfg, items_log, inter_log)
    items = validate_items(raw.items, items_log)
    if not raw.has_catalogue:
        items_log.note("catalogue_derived_from_interactions", len(items))
    interactions = validate_interactions(raw.interactions, set(items["item_id"]), inter_log, cfg.timestamp_format)
    if not cfg.keep_items_without_interactions:
        unused = ~items["item_id"].isin(set(interactions["item_id"]))
        for item_id in items.loc[unused, "item_id"]:
            items_log.reject("no_interactions", f"item {item_id}", "no kept interaction uses this item",
                             {"item_id": item_id})
        items = items[~unused].reset_index(drop=True)
        items_log.kept = len(items)
    items_log.check_balance()
    inter_log.check_balance()

    io.makedirs(output_dir)
    _write_parquet(items, schema.ITEMS_SCHEMA, os.path.join(output_dir, schema.ITEMS_FILE))
    _write_parquet(interactions, schema.INTERACTIONS_SCHEMA, os.path.join(output_dir, schema.INTERACTIONS_FILE))
    if write_tfrecords:
        write_items_tfrecord(items, os.path.join(output_dir, schema.ITEMS_TFRECORD))
        write_interactions_tfrecord(interactions, os.path.join(output_dir, schema.INTERACTIONS_TFRECORD))
    n_rejects = write_rejects(os.path.join(output_dir, schema.REJECTS_FILE), [items_log, inter_log])

    rows_in = inter_log.rows_in
    rejected_fraction = inter_log.total_rejected / rows_in if rows_in else 0.0
    report = {
        "source": cfg.source,
        "description": raw.description,
        "tables": {"items": items_log.to_dict(), "interactions": inter_log.to_dict()},
        "summary": {
            "users": int(interactions["user_id"].nunique()),
            "items": len(items),
            "interactions": len(interactions),
            "rejected_rows_written": n_rejects,
            "interactions_rejected_fraction": round(rejected_fraction, 6),
        },
        "files": {
            name: sha256_file(os.path.join(output_dir, name))
            for name in (schema.ITEMS_FILE, schema.INTERACTIONS_FILE)
            + ((schema.ITEMS_TFRECORD, schema.INTERACTIONS_TFRECORD) if write_tfrecords else ())
        },
    }
    write_json(os.path.join(output_dir, schema.REPORT_FILE), report)
    if echo:
        print(format_report(report, output_dir))
    if rejected_fraction > cfg.max_rejected_fraction:
        worst = inter_log.rejected.most_common(1)[0]
        raise IngestError(
            f"{inter_log.total_rejected:,} of {rows_in:,} interaction rows rejected "
            f"({rejected_fraction:.1%} > data.max_rejected_fraction {cfg.max_rejected_fraction:.1%}); "
            f"most common reason: {worst[0]} ({worst[1]:,}). See {os.path.join(output_dir, schema.REPORT_FILE)} "
            f"and {os.path.join(output_dir, schema.REJECTS_FILE)}."
        )
    if len(interactions) == 0 or len(items) == 0:
        raise IngestError(f"no usable rows remained; see {os.path.join(output_dir, schema.REPORT_FILE)}")
    return IngestResult(items=items, interactions=interactions, report=report)


def read_ingested(output_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loads the canonical items and interactions written by `ingest`.

    Raises:
      FileNotFoundError: naming the missing file and the command that makes it.
    """
    frames = []
    for name in (schema.ITEMS_FILE, schema.INTERACTIONS_FILE):
        path = os.path.join(output_dir, name)
        if not io.exists(path):
            raise FileNotFoundError(f"{path} not found; run `learn ingest` first")
        frames.append(io.read_parquet(path))
    return frames[0], frames[1]
