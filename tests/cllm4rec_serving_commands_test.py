"""The serving commands on a trained CLLM4Rec (pipeline.model_kind: cllm4rec): `learn export` publishes
`cllm4rec_retrieval`, `learn query` asks it (gRPC and REST, with a user token), `learn add-items` refuses."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

from learn_app.cli import main
from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.documents import Prompts
from learn_tf.cllm4rec.scoring import CLLM4RecScorer
from learn_tf.cllm4rec.vocab import FrozenLM
from learn_tf.config import load_config
from learn_tf.data.ingest import read_ingested
from serving.client import retrieve
from serving.cllm4rec_export import MODEL
from serving.server import ModelServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_decoder_preset: str) -> dict[str, Any]:
    """The tiny CLLM4Rec config ingested into a temp run, and an (untrained) CLLM4Rec saved where `learn train`
    puts it."""
    d = tmp_path_factory.mktemp("cllm4rec_cmds")
    text = open(os.path.join(REPO, "configs", "tiny-cllm4rec.yaml")).read()
    cfg_path = d / "cfg.yaml"
    cfg_path.write_text(text.replace("output_dir: runs/{name}", f"output_dir: {d / 'run'}"))
    assert main(["ingest", "--config", str(cfg_path)]) == 0
    cfg = load_config(str(cfg_path))
    items, interactions = read_ingested(cfg.layout().data)
    item_ids = sorted(items["item_id"].astype(str))
    user_ids = sorted(interactions["user_id"].astype(str).unique())
    lm = FrozenLM.from_preset(tiny_decoder_preset)
    model, builder = store.build(lm, item_ids, user_ids, Prompts(), 8, seed=3)
    model_dir = cfg.layout().model("cllm4rec")
    store.save(model, model_dir, tiny_decoder_preset, item_ids, user_ids, Prompts(), 8)
    return {"config": str(cfg_path), "cfg": cfg, "model_dir": model_dir, "item_ids": item_ids,
            "user_ids": user_ids, "scorer": CLLM4RecScorer(model, builder, item_ids, user_ids), "dir": d}


def test_export_query_and_add_items_refusal(trained: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    cfg, item_ids, user_ids = trained["cfg"], trained["item_ids"], trained["user_ids"]
    assert main(["export", "--config", trained["config"]]) == 0
    base = cfg.layout().model_base
    assert os.path.exists(os.path.join(base, MODEL, "1", "saved_model.pb"))
    assert MODEL in open(os.path.join(base, "models.config")).read()

    history, user = item_ids[2:5], user_ids[1]
    expected = trained["scorer"].score_users([history], [user])[0]
    expected[[item_ids.index(i) for i in history]] = -np.inf  # exclude_history
    top = [item_ids[j] for j in np.argsort(-expected, kind="stable")[:5]]
    server = ModelServer(base, port=0, rest_port=0, num_threads=4)
    server.start()
    try:
        grpc_target = f"127.0.0.1:{server.port}"
        rest_target = f"http://127.0.0.1:{server.rest.port}"
        for target in (grpc_target, rest_target):
            [got] = retrieve(target, [history], k=5, model=MODEL, user_ids=[user])
            assert [i for i, _ in got] == top
            np.testing.assert_allclose([s for _, s in got], np.sort(expected)[::-1][:5], rtol=1e-4, atol=1e-5)
        capsys.readouterr()
        # `learn query` picks cllm4rec_retrieval from pipeline.model_kind and sends the user token.
        assert main(["query", "--config", trained["config"], "--server", grpc_target, "--k", "5",
                     "--history", ",".join(history), "--user", user]) == 0
        out = capsys.readouterr().out
        assert f"from {MODEL} at {grpc_target} over gRPC" in out
        ranked = [line.rsplit("[", 1)[1].rstrip("]") for line in out.splitlines() if line.strip()[:2].rstrip(".").isdigit()]
        assert ranked == top
    finally:
        server.stop(grace=1.0)

    new_items = trained["dir"] / "new.jsonl"
    new_items.write_text(json.dumps({"item_id": "brand_new", "title": "Brand New (2026)"}) + "\n")
    assert main(["add-items", str(new_items), "--config", trained["config"]]) == 1
    err = capsys.readouterr().err
    assert "is a CLLM4Rec model" in err and "learn train --model cllm4rec" in err
    # Refused before anything was written: no onboarded items, no new version.
    assert not os.path.exists(cfg.layout().onboarded_items)
    assert sorted(os.listdir(os.path.join(base, MODEL))) == ["1"]
