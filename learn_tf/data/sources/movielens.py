"""MovieLens-100K read from the installed `recbole` package (never copied into the repo)."""

from __future__ import annotations

import importlib.util
import os

import pandas as pd

from learn_tf.data.sources import RawTables

RECBOLE_PIP = "pip install --no-deps recbole==1.2.1"


def movielens100k_dir() -> str:
    """The folder holding `ml-100k.item` and `ml-100k.inter` inside the recbole package.

    Found without importing recbole (which would import torch).

    Raises:
      FileNotFoundError: recbole is not installed or lacks the example data.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"MovieLens-100K comes from the recbole package; install it: {RECBOLE_PIP}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", "ml-100k")
    if not os.path.exists(os.path.join(folder, "ml-100k.inter")):
        raise FileNotFoundError(f"{folder}: ml-100k.inter missing; reinstall with: {RECBOLE_PIP}")
    return folder


def _read_atomic(path: str) -> pd.DataFrame:
    """Reads a RecBole atomic file (tab-separated, `name:type` headers) as strings."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8",
                     encoding_errors="replace")
    df.columns = [c.split(":")[0] for c in df.columns]
    df["_file"] = os.path.basename(path)
    df["_line"] = range(2, len(df) + 2)  # file line numbers; line 1 is the header
    return df


def read_movielens100k(folder: str | None = None) -> RawTables:
    """Items (title, release year, genres) and ratings of MovieLens-100K.

    Genres are space-separated single tokens in RecBole's file and are joined
    with ", " ("Animation, Children's, Comedy").
    """
    folder = folder or movielens100k_dir()
    item = _read_atomic(os.path.join(folder, "ml-100k.item"))
    items = pd.DataFrame(
        {
            "item_id": item["item_id"],
            "title": item["movie_title"],
            "year": item["release_year"],
            "genres": item["class"].str.split().str.join(", "),
            "_file": item["_file"],
            "_line": item["_line"],
        }
    )
    inter = _read_atomic(os.path.join(folder, "ml-100k.inter"))
    interactions = inter[["user_id", "item_id", "timestamp", "rating", "_file", "_line"]]
    return RawTables(items=items, interactions=interactions, description=f"movielens100k {folder}")
