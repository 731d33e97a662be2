"""`learn train --model cllm4rec` end to end on the tiny synthetic config and a tiny random LLM."""

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.job import (CURVE_FILE, CURVE_PLOT, MODEL_NAME, evaluate_cllm4rec_job, item_texts,
                                   train_cllm4rec_job)
from learn_tf.config import load_config
from learn_tf.data.ingest import ingest, read_ingested
from learn_tf.data.splits import make_splits, write_splits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_movielens_config_loads_a_shortened_schedule() -> None:
    cfg = load_config(os.path.join(REPO, "configs", "movielens-cllm4rec.yaml"))
    c = cfg.cllm4rec
    assert cfg.split.cold_item_fraction == 0.0
    assert (c.content_warmup_epochs, c.alternating_epochs, c.finetune_epochs) < (10, 100, 150)
    assert (c.pretrain_learning_rate, c.finetune_learning_rate, c.lambda_v, c.batch_size) == (1e-3, 1e-4, 1.0, 20)
    # The cold-protocol config: configs/movielens.yaml's split, the peer config's schedule.
    cold = load_config(os.path.join(REPO, "configs", "movielens-cllm4rec-cold.yaml"))
    assert cold.split == load_config(os.path.join(REPO, "configs", "movielens.yaml")).split
    assert cold.cllm4rec == cfg.cllm4rec and cold.split.cold_item_fraction == 0.1


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory: pytest.TempPathFactory, tiny_decoder_preset: str):
    d = tmp_path_factory.mktemp("cllm4rec_job")
    with open(os.path.join(REPO, "configs", "tiny-cllm4rec.yaml"), encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["output_dir"] = str(d / "run")
    raw["cllm4rec"]["model"] = tiny_decoder_preset
    path = d / "tiny-cllm4rec.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(str(path))
    layout = cfg.layout()
    res = ingest(cfg.data, layout.data, write_tfrecords=False)
    write_splits(make_splits(res.items, res.interactions, cfg.split), layout.split)
    return cfg


def test_item_texts_are_the_embedding_template(tiny_cfg) -> None:
    items, _ = read_ingested(tiny_cfg.layout().data)
    texts = item_texts(items, "movielens")
    assert len(texts) == len(items) and all(t.startswith("Title: ") for t in texts.values())


def test_train_then_evaluate_through_the_shared_evaluator(tiny_cfg) -> None:
    summary = train_cllm4rec_job(tiny_cfg, log=lambda _: None)
    assert summary["frozen_weights_unchanged"] and summary["epochs"] == 3
    out = os.path.join(tiny_cfg.layout().models, MODEL_NAME)
    assert {"tables.npz", "cllm4rec.json", CURVE_FILE, CURVE_PLOT} <= set(os.listdir(out))
    with open(os.path.join(out, CURVE_PLOT), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "val_masked_ndcg@10" in summary["final"]
    results = evaluate_cllm4rec_job(tiny_cfg)
    assert set(results["models"]) == {"cllm4rec", "popularity"}
    for protocol in ("masked", "unmasked"):
        m = results["models"]["cllm4rec"][protocol]["overall"]["metrics"]
        assert 0.0 <= m["ndcg@10"] <= 1.0 and np.isfinite(m["mrr"])
    assert os.path.exists(os.path.join(tiny_cfg.layout().results, MODEL_NAME, "results.md"))
    meta = store.read_meta(out)
    assert len(meta["item_ids"]) == 40


def test_own_protocol_trains_on_positives_and_reports_its_metrics(tiny_cfg, tmp_path) -> None:
    from learn_tf.cllm4rec.job import own_protocol_job

    path = os.path.join(tiny_cfg.layout().data, "interactions.parquet")
    frame = pd.read_parquet(path)  # synthetic data has no ratings: give it some (a quarter are negatives)
    frame["rating"] = np.where(np.arange(len(frame)) % 4 == 0, 2.0, 5.0)
    frame.to_parquet(path, index=False)
    res = own_protocol_job(tiny_cfg, str(tmp_path / "own"), log=lambda _: None)
    assert set(res["metrics"]) == {"recall@20", "recall@40", "ndcg@100", "users"}
    assert res["metrics"]["users"] > 0 and 0.0 <= res["metrics"]["ndcg@100"] <= 1.0
    # Popularity on the same split: the training positives' counts, scored by the same metric code.
    pop = res["popularity"]
    assert pop["users"] == res["metrics"]["users"] and set(pop) == set(res["metrics"])
    assert 0.0 < pop["recall@40"] <= 1.0 and pop["recall@20"] <= pop["recall@40"]
    assert res["split"]["train"] > res["split"]["test"] > 0
