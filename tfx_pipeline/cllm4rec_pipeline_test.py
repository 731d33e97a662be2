"""The TFX pipeline with `pipeline.model_kind: cllm4rec` under LocalDagRunner: CLLM4Rec trained, scored, pushed.

Real components on the tiny CLLM4Rec config (configs/tiny-cllm4rec.yaml) with a tiny random Llama preset.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from learn_app.pipeline_commands import run_pipeline_command
from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.job import MODEL_NAME, case_scorer
from learn_tf.config import load_config
from learn_tf.data.splits import read_splits
from serving.cllm4rec_export import MODEL as SERVED_MODEL
from tfx_pipeline import data_io
from tfx_pipeline.lineage import open_store, run_executions, run_ids
from tfx_pipeline.pipeline import COMPONENT_IDS, pipeline_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_tiny_cllm4rec_pipeline_config(directory: str, preset: str) -> str:
    """configs/tiny-cllm4rec.yaml with the tiny preset (CLLM4Rec and the embedding job) and model kind cllm4rec."""
    with open(os.path.join(REPO, "configs", "tiny-cllm4rec.yaml"), encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["output_dir"] = os.path.join(directory, "run")
    raw["cllm4rec"]["model"] = preset
    raw["embedding"] = {**raw.get("embedding", {}), "model": preset, "max_tokens": 32, "batch_size": 16,
                        "num_shards": 1}
    raw["serving"] = {"max_k": 20, "warmup_requests": 1}
    raw["pipeline"] = {**raw.get("pipeline", {}), "model_kind": "cllm4rec"}
    path = os.path.join(directory, "tiny-cllm4rec-pipeline.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f)
    return path


@pytest.mark.e2e  # ~55 s here (under the 60 s `large` line)
def test_pipeline_trains_evaluates_and_pushes_cllm4rec(tiny_decoder_preset, tmp_path, capsys):
    cfg = load_config(write_tiny_cllm4rec_pipeline_config(str(tmp_path), tiny_decoder_preset))
    assert cfg.pipeline.model_kind == "cllm4rec"
    assert run_pipeline_command(cfg) == 0
    mlmd = open_store(cfg.resolved_metadata_path())
    runs = run_ids(mlmd, pipeline_name(cfg))
    states = {e.node: e for e in run_executions(mlmd, runs[-1])}
    assert set(states) == set(COMPONENT_IDS)
    assert {e.state for e in states.values()} == {"COMPLETE"}, {n: e.state for n, e in states.items()}

    # The Trainer's model artifact holds a CLLM4Rec saved as `learn train --model cllm4rec` saves it; it loads.
    model_uri = states["Trainer"].outputs["model"][0].uri
    assert data_io.holds_cllm4rec(model_uri)
    model_dir = data_io.trained_cllm4rec_dir(model_uri)
    assert {store.TABLES_FILE, store.META_FILE, "curve.json"} <= set(os.listdir(model_dir))
    model, builder, meta = store.load(model_dir)
    assert meta["frozen_weights_unchanged"] and len(meta["item_ids"]) == 40
    summary = json.loads(open(os.path.join(states["Trainer"].outputs["model_run"][0].uri, "train_summary.json")).read())
    assert summary["name"] == MODEL_NAME and summary["epochs"] == 3

    # The Evaluator scored it with the shared evaluator, beside content-kNN, both protocols.
    evaluation = states["Evaluator"].outputs["evaluation"][0].uri
    results = json.loads(open(os.path.join(evaluation, "results.json")).read())
    assert set(results["models"]) == {MODEL_NAME, "content_knn"} and results["split"] == "test"
    for protocol in ("masked", "unmasked"):
        m = results["models"][MODEL_NAME][protocol]["overall"]["metrics"]
        assert 0.0 <= m["ndcg@10"] <= 1.0 and np.isfinite(m["mrr"])
    assert states["Evaluator"].outputs["blessing"][0].properties["blessed"] == 1
    out = capsys.readouterr().out
    assert f"| {MODEL_NAME} |" in out and "pushed version" in out

    # The Pusher pushed a servable version: a history of item ids -> top-k item ids (history excluded).
    pushed = states["Pusher"].outputs["pushed_model"][0]
    assert pushed.properties["pushed"] == 1 and pushed.properties["pushed_models"] == SERVED_MODEL
    base = cfg.resolved_model_base()
    version_dir = os.path.join(base, SERVED_MODEL, str(pushed.properties["pushed_version"]))
    assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
    assert SERVED_MODEL in open(os.path.join(base, "models.config")).read()
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    case = read_splits(states["SplitGen"].outputs["split"][0].uri).cases("test").iloc[0]
    history = [str(i) for i in case["history"]]
    res = serve(history=tf.constant([history]), user_id=tf.constant([str(case["user_id"])]),
                k=tf.constant([5], tf.int32), exclude_history=tf.constant([True]))
    ids = [x.decode() for x in res["item_ids"].numpy()[0]]
    assert len(ids) == 5 and set(ids) <= set(meta["item_ids"]) and not set(ids) & set(history)
    # The same scores as the evaluator's scorer on that case (one model, one prompt).
    scores = case_scorer(model, builder, meta, read_splits(states["SplitGen"].outputs["split"][0].uri).cases("test"))(
        [history])[0]
    scores[[meta["item_ids"].index(i) for i in set(history)]] = -np.inf
    expected = [meta["item_ids"][j] for j in np.argsort(-scores, kind="stable")[:5]]
    assert ids == expected
