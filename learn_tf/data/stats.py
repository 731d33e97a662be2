"""Dataset statistics (JSON) with PNG plots of sequence lengths and item popularity."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from learn_tf.utils import io
from learn_tf.utils.io import atomic_path, write_json


def dataset_stats(items: pd.DataFrame, interactions: pd.DataFrame) -> dict[str, Any]:
    """Counts, density, sequence-length quantiles and popularity concentration."""
    lengths = interactions.groupby("user_id").size().to_numpy()
    pop = interactions["item_id"].value_counts().reindex(items["item_id"], fill_value=0).to_numpy()
    pop_sorted = np.sort(pop)
    n = len(pop_sorted)
    gini = float(1 - 2 * np.sum(np.cumsum(pop_sorted)) / (n * pop_sorted.sum()) + 1 / n) if pop_sorted.sum() else 0.0
    q = np.percentile(lengths, [0, 25, 50, 75, 100]) if len(lengths) else np.zeros(5)
    return {
        "users": int(len(lengths)),
        "items": int(len(items)),
        "interactions": int(len(interactions)),
        "density": float(len(interactions) / max(1, len(lengths) * len(items))),
        "sequence_length": dict(zip(["min", "p25", "median", "p75", "max"], map(float, q))),
        "items_without_interactions": int((pop == 0).sum()),
        "items_with_fallback_text": int(items["text_fallback"].sum()) if "text_fallback" in items else 0,
        "popularity_gini": round(gini, 4),
        "top_1pct_items_share": float(np.sort(pop)[::-1][: max(1, n // 100)].sum() / max(1, pop.sum())),
    }


def write_stats(items: pd.DataFrame, interactions: pd.DataFrame, output_dir: str) -> dict[str, Any]:
    """Writes stats.json and stats.png (sequence-length histogram, popularity curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = dataset_stats(items, interactions)
    io.makedirs(output_dir)
    write_json(os.path.join(output_dir, "stats.json"), stats)
    lengths = interactions.groupby("user_id").size().to_numpy()
    pop = np.sort(interactions["item_id"].value_counts().reindex(items["item_id"], fill_value=0).to_numpy())[::-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.hist(lengths, bins=50, color="#4c72b0")
    a.set_xlabel("interactions per user")
    a.set_ylabel("users")
    a.set_title("Sequence lengths")
    b.plot(np.arange(1, len(pop) + 1), np.maximum(pop, 0.5), color="#dd8452")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("item rank")
    b.set_ylabel("interactions")
    b.set_title(f"Item popularity (Gini {stats['popularity_gini']:.2f})")
    fig.tight_layout()
    with atomic_path(os.path.join(output_dir, "stats.png")) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """One console paragraph of dataset statistics."""
    sl = stats["sequence_length"]
    return (
        f"Stats: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions, "
        f"density {stats['density']:.4f}; sequence length min {sl['min']:.0f} / median {sl['median']:.0f} / "
        f"max {sl['max']:.0f}; popularity Gini {stats['popularity_gini']:.2f}; "
        f"{stats['items_without_interactions']:,} items without interactions"
    )
