"""Tests for the YAML config loader."""

import glob
import os

import pytest

from learn_tf.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


MINIMAL = """
name: t
data:
  source: movielens100k
"""


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name
    assert "{name}" not in cfg.resolved_output_dir()


def test_defaults_fill_optional_keys(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.split.history_max_len == 50
    assert cfg.split.cold_item_fraction == 0.1
    assert cfg.resolved_output_dir() == "runs/t"


def test_config_is_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    with pytest.raises(Exception):
        cfg.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, message",
    [
        (MINIMAL + "bogus: 1\n", "unknown key 'bogus'"),
        (MINIMAL + "split:\n  history_len: 3\n", "unknown key 'split.history_len'"),
        ("data:\n  source: movielens100k\n", "missing required key 'name'"),
        ("name: t\ndata:\n  reviews_path: x\n", "missing required key 'data.source'"),
        ("name: t\ndata:\n  source: netflix\n", "key 'data.source' must be one of"),
        (MINIMAL + "split:\n  history_max_len: fifty\n", "key 'split.history_max_len' must be an integer"),
        (MINIMAL + "split:\n  cold_item_fraction: 1.5\n", "key 'split.cold_item_fraction' must be in"),
        ("name: t\ndata:\n  source: amazon\n  reviews_path: r.json\n", "missing required key 'data.meta_path'"),
        (
            "name: t\ndata:\n  source: csv\n  interactions_path: a.csv\n"
            "  interaction_columns:\n    user_id: u\n    item_id: i\n",
            "missing required key 'data.interaction_columns.timestamp'",
        ),
        (MINIMAL + "split:\n  min_user_interactions: 2\n", "split.min_user_interactions"),
        (MINIMAL + "train:\n  cold_ids: mean\n", "key 'train.cold_ids' must be one of"),
        (MINIMAL + "train:\n  cold_ridge_l2: 0\n", "key 'train.cold_ridge_l2' must be > 0"),
        (MINIMAL + "model:\n  id_fallback: mean\n", "key 'model.id_fallback' must be one of"),
        (MINIMAL + "train:\n  cold_ridge_metric: head\n", "key 'train.cold_ridge_metric' must be one of"),
        (MINIMAL + "train:\n  cold_ridge_floor: 1.5\n", "key 'train.cold_ridge_floor' must be in [0, 1]"),
        (MINIMAL + "model:\n  id_fallback: content\n", "key 'model.id_fallback' is 'content'"),
        ("- a\n- b\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value)
    assert path in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
