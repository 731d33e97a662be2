"""The main job (`make demo`): the whole TFX pipeline on MovieLens-100K with the embedded SmolLM2-135M."""

import os
import re
import subprocess
import sys

import pytest

from tfx_pipeline.pipeline import COMPONENT_IDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.large
@pytest.mark.e2e
def test_pipeline_on_movielens_pushes_a_blessed_model_and_prints_the_table(tmp_path):
    cmd = [sys.executable, "-m", "learn_app.cli", "pipeline", "run", "--config",
           os.path.join(ROOT, "configs", "movielens.yaml"), "--output", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for node in ("ExampleGen", "DataGate", "SplitGen", "ItemEmbeddingGen", "Transform", "Trainer", "Evaluator",
                 "Pusher"):
        assert re.search(rf"^\s+{node}\s+COMPLETE", text, re.M), node
    assert "count=1682, dim=576" in text  # every item embedded by the frozen LLM
    assert "blessed=1" in text
    assert "pushed version 1 of learn_item,learn_retrieval,learn_retrieval_bf,learn_user" in text
    row = re.search(r"^\| learn_a \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", text, re.M)
    assert row, text[-2000:]
    ndcg10 = float(row.group(4))
    knn = re.search(r"^\| content_knn \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", text, re.M)
    assert ndcg10 > float(knn.group(4))  # the trained towers beat the untrained content baseline
    for name in ("learn_user", "learn_item", "learn_retrieval", "learn_retrieval_bf"):
        assert os.path.exists(tmp_path / "serving" / name / "1" / "saved_model.pb"), name
    # A second run with unchanged inputs is served entirely from the cache.
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(re.findall(r"^\s+\w+\s+CACHED", again.stdout, re.M)) == len(COMPONENT_IDS)  # 11 with SplitGen
    assert sorted(os.listdir(tmp_path / "serving" / "learn_user")) == ["1"]
