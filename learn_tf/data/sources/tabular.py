"""Generic CSV or Parquet files with a column mapping from the config."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import pandas as pd

from learn_tf.config import InteractionColumns, ItemColumns
from learn_tf.data.sources import RawTables


def _read(path: str, fmt: str, delimiter: str) -> pd.DataFrame:
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if fmt == "csv":
        try:
            return pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False,
                               na_values=[], encoding="utf-8", encoding_errors="replace")
        except pd.errors.ParserError as e:
            raise ValueError(f"{path}: cannot parse as CSV: {e}") from e
    df = pd.read_parquet(path)
    return df.astype(object).where(df.notna(), None)


def _mapped(df: pd.DataFrame, mapping: dict[str, Optional[str]], path: str, key: str) -> pd.DataFrame:
    out = {}
    for canonical, column in mapping.items():
        if column is None:
            continue
        if column not in df.columns:
            raise ValueError(
                f"{path}: column '{column}' (config {key}.{canonical}) not found; "
                f"columns are: {', '.join(map(str, df.columns))}"
            )
        out[canonical] = df[column].astype(object)
    res = pd.DataFrame(out, index=df.index)
    res["_file"] = os.path.basename(path)
    # 1-based data row number (the header is not counted) for error messages.
    res["_line"] = range(1, len(df) + 1)
    return res


def read_tabular(
    fmt: str,
    interactions_path: str,
    interaction_columns: InteractionColumns,
    items_path: Optional[str],
    item_columns: Optional[ItemColumns],
    delimiter: str = ",",
) -> RawTables:
    """Reads interactions (and optionally items) from CSV or Parquet files.

    Without an items file, the catalogue is the set of item ids seen in the
    interactions, each with a fallback text.
    """
    inter = _mapped(
        _read(interactions_path, fmt, delimiter),
        dataclasses.asdict(interaction_columns), interactions_path, "data.interaction_columns",
    )
    if "rating" not in inter:
        inter["rating"] = None
    if items_path is not None and item_columns is not None:
        items = _mapped(_read(items_path, fmt, delimiter), dataclasses.asdict(item_columns),
                        items_path, "data.item_columns")
        has_catalogue = True
    else:
        ids = pd.unique(inter["item_id"].dropna())
        items = pd.DataFrame({"item_id": ids, "_file": "<derived from interactions>", "_line": 0})
        has_catalogue = False
    return RawTables(items=items, interactions=inter, has_catalogue=has_catalogue,
                     description=f"{fmt} interactions={interactions_path} items={items_path}")
