"""Tiny end-to-end configs for tests and smoke runs (synthetic data, a tiny LLM preset, tiny towers)."""

from __future__ import annotations

import os
from typing import Any, Optional

import yaml

TINY_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.yaml")


def write_tiny_run_config(directory: str, preset: Optional[str] = None,
                          overrides: Optional[dict[str, dict[str, Any]]] = None,
                          filename: str = "tiny.yaml") -> str:
    """Writes `configs/tiny.yaml` with tiny model/train/serving sections into `directory`; returns its path.

    Args:
      directory: where the config goes; its output_dir is `<directory>/run`.
      preset: keras-hub preset folder of the LLM (None keeps the config's default embedding section).
      overrides: per-section keys merged over the defaults, e.g. {"pipeline": {"min_ndcg_at_10": 0.1}}.
      filename: the config file's name.
    """
    with open(TINY_CONFIG, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["output_dir"] = os.path.join(directory, "run")
    if preset:
        raw["embedding"] = {"model": preset, "template": "movielens", "max_tokens": 32, "batch_size": 16}
    raw["model"] = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32, "out_dim": 8, "dropout": 0.0}
    raw["train"] = {"max_len": 12, "num_targets": 2, "num_query_positions": 2, "samples_per_user": 2,
                    "batch_size": 32, "epochs": 2, "patience": 5}
    raw["serving"] = {"max_k": 50, "warmup_requests": 2, "poll_seconds": 0.2, "num_threads": 8}
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    path = os.path.join(directory, filename)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f)
    return path
