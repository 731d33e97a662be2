"""docs/embedding.md runs as written: its Python blocks are executed in order and their results checked."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "embedding.md")


def python_blocks(path: str) -> list[str]:
    """The ```python fenced blocks of a markdown file, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def doc_namespace(tmp_path_factory):
    """Executes every block of the doc in one namespace (as a reader pasting them in order would)."""
    blocks = python_blocks(DOC)
    namespace: dict = {"__name__": "docs_embedding"}
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("doc"))
    try:
        for k, block in enumerate(blocks):
            try:
                exec(compile(block, f"{DOC}:block{k}", "exec"), namespace)
            except Exception as e:  # name the failing block: the doc is what needs fixing
                raise AssertionError(f"docs/embedding.md python block {k} failed: {e!r}\n{block}") from e
    finally:
        os.chdir(cwd)
    return namespace


def test_doc_has_the_sections_it_promises():
    blocks = python_blocks(DOC)
    assert len(blocks) >= 8
    joined = "\n".join(blocks)
    for name in ("load_towers(", "TowerRanker(", "fine_tune=True", "export_towers(", "SavedModelTower(",
                 "items_from_content(", "with_extra_items(", "tf.saved_model.save(saved_ranker"):
        assert name in joined, name


def test_doc_shows_the_content_width_error(doc_namespace):
    msg = doc_namespace["dim_error"]
    assert "width 384" in msg and "content_dim 16" in msg and "re-run `learn embed`" in msg
    idx = tf.range(1, 41)
    assert np.allclose(doc_namespace["refreshed"].items(idx).numpy(),
                       doc_namespace["demo_towers"].items(idx).numpy(), atol=1e-6)


def test_rankers_learn_the_clicks(doc_namespace):
    ns = doc_namespace
    for fit in ("frozen_fit", "tuned_fit", "saved_fit"):
        loss = ns[fit].history["loss"]
        assert loss[-1] < 0.8 * loss[0], (fit, loss)
    assert ns["frozen_fit"].history["auc"][-1] > 0.8
    assert ns["tuned_fit"].history["auc"][-1] > 0.8


def test_frozen_towers_do_not_change_and_fine_tuned_ones_do(doc_namespace):
    ns = doc_namespace
    towers, tuned = ns["towers"], ns["tuned_towers"]
    assert not towers.trainable and tuned.trainable
    assert len(ns["frozen_before"]) == len(towers.weights) > 0
    for before, w in zip(ns["frozen_before"], towers.weights):
        assert np.array_equal(before, w.numpy()), w.name
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(ns["tuned_before"], tuned.trainable_weights)]
    assert sum(changed) >= len(changed) // 2, changed  # most tower weights moved with the ranking loss
    # The frozen ranker's towers still embed like freshly loaded trained towers.
    fresh, _, _ = ns["load_towers"](ns["model_dir"])
    hist = tf.constant(ns["x"]["history"][:8])
    assert np.allclose(fresh.users(hist).numpy(), towers.users(hist).numpy(), atol=1e-6)
    assert not np.allclose(fresh.users(hist).numpy(), tuned.users(hist).numpy(), atol=1e-4)


def test_savedmodel_towers_are_frozen_and_match_keras(doc_namespace):
    ns = doc_namespace
    saved = [layer for layer in ns["saved_ranker"].layers if type(layer).__name__ == "SavedModelTower"]
    assert len(saved) == 2 and not any(layer.trainable_weights for layer in saved)
    # After training the ranking model, the SavedModel towers still equal the (frozen) Keras towers.
    hist, items = ns["string_x"][0][:16], ns["string_x"][1][:16]
    towers, catalogue, max_len = ns["towers"], ns["catalogue"], ns["max_len"]
    want_u = towers.users(tf.constant(catalogue.pad_histories(ns["histories"][:16], max_len))).numpy()
    want_v = towers.items(tf.constant(catalogue.indices(ns["candidates"][:16]))).numpy()
    assert np.allclose(saved[0](hist).numpy(), want_u, atol=1e-5)
    assert np.allclose(saved[1](items).numpy(), want_v, atol=1e-5)


def test_saved_model_tower_config_and_errors(doc_namespace):
    from learn_tf.layers import SavedModelTower
    from serving.layout import ITEM_MODEL

    path = doc_namespace["paths"][ITEM_MODEL]
    layer = SavedModelTower(path, output_key="known")
    assert layer(tf.constant(["movie00", "nope"])).numpy().tolist() == [True, False]
    clone = SavedModelTower.from_config(layer.get_config())
    assert clone.output_key == "known" and not clone.trainable
    with pytest.raises(ValueError, match="no output 'nope'.*item_embedding"):
        SavedModelTower(path, output_key="nope")
    with pytest.raises(ValueError, match="no signature 'other'"):
        SavedModelTower(path, signature="other")
