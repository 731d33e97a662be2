"""Onboarded items survive the next pipeline run: `learn add-items`, then `learn pipeline run`, then they are
still served, known to the user tower and in the trained catalogue (issue 14, point 6). Takes a few minutes."""

import json
import os

import numpy as np
import pytest
from tensorflow_serving.apis import model_pb2

from learn_app.cli import main
from learn_app.serving_commands import serving_model_dir
from learn_tf.config import load_config
from learn_tf.data.ingest import read_ingested
from learn_tf.testing import write_tiny_run_config
from learn_tf.training.jobs import CATALOGUE_FILE
from serving.client import predict, rest_predict, retrieve
from serving.layout import next_version
from serving.server import ModelServer


def _catalogue(model_dir):
    with open(os.path.join(model_dir, CATALOGUE_FILE), encoding="utf-8") as f:
        return {line.rstrip("\n") for line in f}


@pytest.mark.e2e
def test_onboarded_items_survive_the_next_pipeline_run(tmp_path, tiny_decoder_preset):
    cfg_path = write_tiny_run_config(str(tmp_path), tiny_decoder_preset, {
        "train": {"epochs": 1}, "serving": {"warmup_requests": 1},
        "embedding": {"batch_size": 32, "num_shards": 1}}, filename="tiny_pipeline.yaml")
    assert main(["pipeline", "run", "--config", cfg_path]) == 0
    cfg = load_config(cfg_path)
    layout = cfg.layout()
    base = layout.model_base
    first = next_version(base) - 1

    items = read_ingested(layout.data)[0].set_index("item_id")
    twin = items.index[5]
    new_items = tmp_path / "new_items.jsonl"
    new_items.write_text(
        json.dumps({"item_id": "new_copy", **{f: str(items.loc[twin, f]) for f in ("title", "year", "genres")}})
        + "\n" + json.dumps({"item_id": "new_text", "title": "A brand new film about gardens", "year": "2026",
                             "genres": "Documentary"}) + "\n")
    assert main(["add-items", "--config", cfg_path, str(new_items)]) == 0
    onboarded_version = next_version(base) - 1
    assert onboarded_version == first + 1
    # The durable addendum, merged into the ingested catalogue the pipeline reads.
    assert os.path.exists(layout.onboarded_items)
    assert {"new_copy", "new_text"} <= set(read_ingested(layout.data)[0]["item_id"])

    assert main(["pipeline", "run", "--config", cfg_path]) == 0
    retrained = next_version(base) - 1
    assert retrained == onboarded_version + 1, "the second pipeline run pushed no version"
    assert {"new_copy", "new_text"} <= _catalogue(serving_model_dir(cfg))  # trained with them, not appended

    s = ModelServer(base, models_config=os.path.join(base, "models.config"), port=0, rest_port=0)
    s.start()
    try:
        target, url = s.address, s.rest.url
        out = predict(target, "learn_user", {"history": np.array([[b"new_text", b"new_copy"]])})
        assert out["known_items"].tolist() == [2]  # the user tower knows them
        out = predict(target, "learn_item", {"item_ids": np.array([b"new_copy", twin.encode(), b"new_text"])})
        assert out["known"].tolist() == [True, True, True]
        np.testing.assert_allclose(out["item_embedding"][0], out["item_embedding"][1], atol=1e-5)  # same text
        for model in ("learn_retrieval_bf", "learn_retrieval"):
            [row] = retrieve(url, [["new_text", "new_copy"]], k=5, exclude_history=False, model=model)
            assert len(row) == 5
            assert rest_predict(url, model, {"history": [["new_text"]], "k": [3], "exclude_history": [True]})[
                "item_ids"].shape == (1, 3)
        [row] = retrieve(target, [[twin]], k=cfg.serving.max_k, exclude_history=False, model="learn_retrieval_bf")
        scores = dict(row)
        if twin in scores:  # equal content, equal score: both or neither in the top k
            assert abs(scores["new_copy"] - scores[twin]) < 1e-4
        assert s.models.resolve(model_pb2.ModelSpec(name="learn_user")).version == retrained
    finally:
        s.stop(grace=1.0)

    # Onboarding again after the retrain: the trained items are not appended twice.
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"item_id": "new_three", "title": "Gardens Two", "year": "2027"}) + "\n")
    assert main(["add-items", "--config", cfg_path, str(more)]) == 0
    assert next_version(base) - 1 == retrained + 1
