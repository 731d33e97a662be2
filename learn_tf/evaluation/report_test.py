"""Report files: JSON, markdown tables, PNG plots and the console table."""

import json
import os

import numpy as np
import pandas as pd

from learn_tf.evaluation.evaluator import PROTOCOLS, evaluate_models
from learn_tf.evaluation.report import format_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results():
    catalogue = np.array([f"i{j}" for j in range(20)])
    rng = np.random.default_rng(0)
    cases = pd.DataFrame({
        "split": "test",
        "user_id": [f"u{b}" for b in range(12)],
        "target_item_id": rng.choice(catalogue, 12),
        "history": [list(rng.choice(catalogue, 3)) for _ in range(12)],
        "cold_item": [b % 4 == 0 for b in range(12)],
        "long_tail_item": [b % 4 == 1 for b in range(12)],
        "head_item": [b % 4 >= 2 for b in range(12)],
        "short_history_user": [b < 5 for b in range(12)],
    })
    fixed = np.linspace(1.0, 0.0, 20)
    models = {"popularity": lambda h: np.tile(fixed, (len(h), 1)),
              "content-knn": lambda h: np.tile(fixed[::-1], (len(h), 1))}
    return evaluate_models(models, cases, catalogue, ks=(1, 5, 10))


def test_write_report_files(tmp_path):
    res = _results()
    paths = write_report(res, str(tmp_path / "eval"))
    assert sorted(os.listdir(tmp_path / "eval")) == ["recall_at_k.png", "results.json", "results.md", "segments.png"]
    with open(paths["json"], encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(res))
    md = open(paths["markdown"], encoding="utf-8").read()
    assert md.count("| popularity |") == 4 and md.count("| content-knn |") == 4  # 2 protocols x (metrics, segments)
    for label in PROTOCOLS.values():
        assert label in md
    assert "cold_item (n=3)" in md and "short_history_user (n=5)" in md
    for key in ("recall_plot", "segment_plot"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == PNG_MAGIC
    assert not [n for n in os.listdir(tmp_path / "eval") if n.endswith(".tmp")]


def test_console_table():
    text = format_table(_results())
    lines = text.splitlines()
    assert any(line.strip().startswith("model") and "recall@10" in line and "mrr" in line for line in lines)
    assert sum(line.strip().startswith("popularity") for line in lines) == 4
    assert "|" not in text
