"""Fixtures of the pipeline tests: a tiny config (synthetic data, tiny LLM preset, tiny towers)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest

from learn_tf.testing import write_tiny_run_config


def write_tiny_config(directory: str, preset: Optional[str] = None, pipeline: Optional[dict[str, Any]] = None) -> str:
    """Writes a tiny pipeline config under `directory` (one epoch, one shard); returns its path."""
    overrides: dict[str, dict[str, Any]] = {"train": {"epochs": 1}, "serving": {"warmup_requests": 1},
                                            "pipeline": pipeline or {}}
    if preset:
        overrides["embedding"] = {"batch_size": 32, "num_shards": 1}
    return write_tiny_run_config(directory, preset, overrides, filename="tiny_pipeline.yaml")


@pytest.fixture
def tiny_config_factory(tmp_path) -> Callable[..., str]:
    """`factory(preset=None, pipeline=None) -> config path` in this test's tmp_path."""

    def make(preset: Optional[str] = None, pipeline: Optional[dict[str, Any]] = None) -> str:
        return write_tiny_config(str(tmp_path), preset, pipeline)

    return make
