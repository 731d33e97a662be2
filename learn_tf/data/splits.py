"""Leave-one-out splits with a cold-item holdout and per-case evaluation segments.

Per user, interactions are ordered by (timestamp, original row); ties on equal
timestamps keep the source order. The last item is the test target, the
second-last the validation target, the rest is training. A seeded fraction of
the catalogue (cold items) is removed from training entirely; test cases whose
target is cold form the cold-start segment. Histories keep every earlier item
(cold ones too: a content model knows them by their text) and are capped at
`history_max_len`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from learn_tf.config import SplitConfig
from learn_tf.utils import io
from learn_tf.utils.io import atomic_path, sha256_file, write_json

TRAIN_FILE = "train.parquet"
EVAL_FILE = "eval_cases.parquet"
ITEM_STATS_FILE = "item_stats.parquet"
MANIFEST_FILE = "split_manifest.json"
SEGMENTS = ("cold_item", "long_tail_item", "head_item", "short_history_user")

TRAIN_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),  # index in the user's full sequence
    ]
)
EVAL_SCHEMA = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # "validation" | "test"
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("target_item_id", pa.string(), nullable=False),
        pa.field("target_timestamp", pa.int64(), nullable=False),
        pa.field("history", pa.list_(pa.string()), nullable=False),  # oldest first
        pa.field("history_length", pa.int64(), nullable=False),
        pa.field("n_train_items", pa.int64(), nullable=False),
    ]
    + [pa.field(s, pa.bool_(), nullable=False) for s in SEGMENTS]
)
ITEM_STATS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("cold", pa.bool_(), nullable=False),
        pa.field("train_count", pa.int64(), nullable=False),
        pa.field("head", pa.bool_(), nullable=False),
    ]
)


@dataclass
class Splits:
    """The result of `make_splits`."""

    train: pd.DataFrame
    eval_cases: pd.DataFrame
    item_stats: pd.DataFrame
    summary: dict[str, Any]

    def cases(self, split: str) -> pd.DataFrame:
        """The evaluation cases of "validation" or "test"."""
        return self.eval_cases[self.eval_cases["split"] == split].reset_index(drop=True)


def order_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Sorts by (user_id, timestamp, row) with a stable sort; adds `position` and `length`."""
    df = interactions.sort_values(["user_id", "timestamp", "row"], kind="mergesort").reset_index(drop=True)
    df["position"] = df.groupby("user_id", sort=False).cumcount().astype(np.int64)
    df["length"] = df.groupby("user_id", sort=False)["item_id"].transform("size").astype(np.int64)
    return df


def choose_cold_items(item_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, sorted sample of round(fraction * N) item ids (independent of input order)."""
    ids = np.sort(np.asarray(item_ids, dtype=object).astype(str))
    n = int(round(fraction * len(ids)))
    if n == 0:
        return np.array([], dtype=object)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=n, replace=False))


def make_splits(items: pd.DataFrame, interactions: pd.DataFrame, cfg: SplitConfig) -> Splits:
    """Builds the leave-one-out split, cold-item holdout and segments.

    Args:
      items: the canonical items table (its item_id column is the catalogue).
      interactions: the canonical interactions table.
      cfg: split settings.

    Returns:
      `Splits` with the training interactions (cold items removed), one
      validation and one test case per eligible user, per-item statistics and
      a summary with counts per segment.
    """
    df = order_interactions(interactions)
    cold = set(choose_cold_items(items["item_id"].to_numpy(), cfg.cold_item_fraction, cfg.seed))
    eligible = df["length"] >= cfg.min_user_interactions
    is_test = eligible & (df["position"] == df["length"] - 1)
    is_val = eligible & (df["position"] == df["length"] - 2)
    is_cold = df["item_id"].isin(cold)
    train_mask = ~is_test & ~is_val & ~is_cold
    train = df.loc[train_mask, ["user_id", "item_id", "timestamp", "row", "position"]].reset_index(drop=True)

    # Item popularity in training; head = the most popular warm items.
    catalogue = np.sort(items["item_id"].astype(str).to_numpy())
    counts = train["item_id"].value_counts()
    stats = pd.DataFrame({"item_id": catalogue})
    stats["cold"] = stats["item_id"].isin(cold)
    stats["train_count"] = stats["item_id"].map(counts).fillna(0).astype(np.int64)
    warm = stats[~stats["cold"]].sort_values(["train_count", "item_id"], ascending=[False, True], kind="mergesort")
    n_head = int(math.ceil(cfg.head_item_fraction * len(warm)))
    head = set(warm["item_id"].iloc[:n_head])
    stats["head"] = stats["item_id"].isin(head)

    n_train = train.groupby("user_id").size()
    sequences = df.groupby("user_id", sort=True)["item_id"].agg(list)
    rows = []
    targets = df[is_val | is_test]
    for user_id, pos, length, item_id, ts in zip(
        targets["user_id"], targets["position"], targets["length"], targets["item_id"], targets["timestamp"]
    ):
        seq = sequences[user_id]
        history = seq[max(0, pos - cfg.history_max_len):pos]
        ntr = int(n_train.get(user_id, 0))
        cold_t = item_id in cold
        head_t = item_id in head
        rows.append(
            {
                "split": "test" if pos == length - 1 else "validation",
                "user_id": user_id,
                "target_item_id": item_id,
                "target_timestamp": int(ts),
                "history": history,
                "history_length": len(history),
                "n_train_items": ntr,
                "cold_item": cold_t,
                "long_tail_item": (not cold_t) and not head_t,
                "head_item": head_t,
                "short_history_user": ntr <= cfg.short_history_max,
            }
        )
    cases = pd.DataFrame(rows, columns=[f.name for f in EVAL_SCHEMA])
    cases = cases.sort_values(["split", "user_id"], ascending=[False, True], kind="mergesort").reset_index(drop=True)

    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "users": int(df["user_id"].nunique()),
        "users_with_eval_cases": int(eligible.groupby(df["user_id"]).any().sum()),
        "items": len(catalogue),
        "cold_items": len(cold),
        "head_items": len(head),
        "interactions": len(df),
        "train_interactions": len(train),
        "cold_interactions_removed_from_train": int((is_cold & ~is_test & ~is_val).sum()),
        "segments": {
            split: {"cases": int((cases["split"] == split).sum()),
                    **{s: int(cases.loc[cases["split"] == split, s].sum()) for s in SEGMENTS}}
            for split in ("validation", "test")
        },
    }
    return Splits(train=train, eval_cases=cases, item_stats=stats, summary=summary)


def _write(frame: pd.DataFrame, sch: pa.Schema, path: str) -> None:
    table = pa.Table.from_pandas(frame[[f.name for f in sch]], schema=sch, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_splits(splits: Splits, output_dir: str) -> dict[str, Any]:
    """Writes train/eval/item-stat Parquet files and a manifest with their checksums.

    Outputs are byte-identical for identical inputs and config (no timestamps).
    """
    io.makedirs(output_dir)
    for frame, sch, name in (
        (splits.train, TRAIN_SCHEMA, TRAIN_FILE),
        (splits.eval_cases, EVAL_SCHEMA, EVAL_FILE),
        (splits.item_stats, ITEM_STATS_SCHEMA, ITEM_STATS_FILE),
    ):
        _write(frame, sch, os.path.join(output_dir, name))
    manifest = dict(splits.summary)
    manifest["files"] = {n: sha256_file(os.path.join(output_dir, n)) for n in (TRAIN_FILE, EVAL_FILE, ITEM_STATS_FILE)}
    write_json(os.path.join(output_dir, MANIFEST_FILE), manifest)
    return manifest


def read_splits(output_dir: str) -> Splits:
    """Loads splits written by `write_splits`.

    Raises:
      FileNotFoundError: naming the missing file and the command that makes it.
    """
    frames = []
    for name in (TRAIN_FILE, EVAL_FILE, ITEM_STATS_FILE, MANIFEST_FILE):
        path = os.path.join(output_dir, name)
        if not io.exists(path):
            raise FileNotFoundError(f"{path} not found; run `learn split` (or `learn ingest`) first")
    for name in (TRAIN_FILE, EVAL_FILE, ITEM_STATS_FILE):
        frames.append(io.read_parquet(os.path.join(output_dir, name)))
    summary = io.read_json(os.path.join(output_dir, MANIFEST_FILE))
    return Splits(train=frames[0], eval_cases=frames[1], item_stats=frames[2], summary=summary)


def format_split_summary(summary: dict[str, Any]) -> str:
    """A console table of split counts and segments."""
    lines = [
        f"Split: {summary['users']:,} users ({summary['users_with_eval_cases']:,} with eval cases), "
        f"{summary['items']:,} items ({summary['cold_items']:,} cold, {summary['head_items']:,} head), "
        f"{summary['train_interactions']:,} of {summary['interactions']:,} interactions in train",
        f"  {'split':<12}{'cases':>8}" + "".join(f"{s:>20}" for s in SEGMENTS),
    ]
    for split, seg in summary["segments"].items():
        lines.append(f"  {split:<12}{seg['cases']:>8,}" + "".join(f"{seg[s]:>20,}" for s in SEGMENTS))
    return "\n".join(lines)
