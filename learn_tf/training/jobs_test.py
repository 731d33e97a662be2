"""Saving / loading trained towers, and clear errors for bad input along the training and scoring path."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from learn_tf.models.catalogue import Catalogue, TowerScorer, UnknownItemError
from learn_tf.models.towers import ContentDimError, LearnTowers, SASRecTowers
from learn_tf.training.jobs import check_embeddings, embedding_info, load_towers, save_towers
from learn_tf.config import TrainConfig
from learn_tf.training.trainer import check_sequences, train

N, D = 10, 6
MANIFEST = {"model": "smollm2-135m", "model_id": "abc", "postprocess": "center", "dim": D, "run_id": "r1"}


def _content(seed=0, dim=D):
    x = np.random.default_rng(seed).normal(size=(N, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _towers():
    tf.keras.utils.set_random_seed(0)
    return LearnTowers(N, D, d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=4, dropout=0.0, max_len=4,
                       content_table=_content())


@pytest.fixture()
def saved(tmp_path):
    towers, cat = _towers(), Catalogue([f"i{k}" for k in range(N)])
    save_towers(towers, cat, str(tmp_path), {"kind": "learn", "max_len": 4, "embedding": embedding_info(MANIFEST)})
    return towers, cat, str(tmp_path)


def test_load_towers_roundtrip_and_content_replacement(saved):
    towers, cat, path = saved
    loaded, loaded_cat, meta = load_towers(path)
    assert list(loaded_cat.item_ids) == list(cat.item_ids) and meta["embedding"]["model"] == "smollm2-135m"
    hist = tf.constant([[1, 2, 3, 0]])
    assert np.allclose(loaded.users(hist).numpy(), towers.users(hist).numpy(), atol=1e-6)
    # Re-embedded content (same model, same width) replaces the saved table.
    other = _content(seed=3)
    swapped, _, _ = load_towers(path, content=other, embedding_manifest=MANIFEST)
    assert np.allclose(swapped.items(tf.range(1, N + 1)).numpy(),
                       towers.items_from_content(tf.constant(other)).numpy(), atol=1e-5)


def test_load_towers_refuses_embeddings_of_another_model(saved):
    _, _, path = saved
    with pytest.raises(ContentDimError, match=r"width 7 but the towers in .* were trained on content_dim 6: "
                                              r"re-run `learn embed` with embedding.model: smollm2-135m"):
        load_towers(path, content=_content(dim=7))
    with pytest.raises(ContentDimError, match=r"model 'minilm'\) have width 384 .* content_dim 6"):
        load_towers(path, embedding_manifest={**MANIFEST, "model": "minilm", "dim": 384})
    with pytest.raises(ContentDimError, match=r"come from 'gemma3' but .* 'smollm2-135m' embeddings"):
        load_towers(path, embedding_manifest={**MANIFEST, "model": "gemma3"})
    with pytest.raises(FileNotFoundError, match="run `learn train` first"):
        load_towers(path + "/nothing")


def test_check_embeddings_without_recorded_model_and_for_sasrec():
    meta = {"class": "LearnTowers", "config": {"content_dim": D}}  # saved before the embedding was recorded
    check_embeddings(meta, _content())
    with pytest.raises(ContentDimError, match="width 5 .* content_dim 6: re-run `learn embed` with the embedding "
                                              "model the towers were trained with"):
        check_embeddings(meta, _content(dim=5))
    check_embeddings({"class": "SASRecTowers", "config": {}}, _content(dim=5))  # reads no content


def test_training_sequences_with_unknown_indices_name_the_row():
    check_sequences([np.array([1, 2]), np.array([3, N])], N)
    with pytest.raises(UnknownItemError, match=f"training sequence 1 holds item index {N + 1}, outside .*1..{N}"):
        check_sequences([np.array([1, 2]), np.array([3, N + 1])], N)
    with pytest.raises(UnknownItemError, match="training sequence 0 holds item index 0"):
        check_sequences([np.array([1, 0, 2])], N)


def _settings():
    return TrainConfig(sampling="dense", max_len=4, num_targets=1, num_query_positions=1, samples_per_user=1,
                       batch_size=4, epochs=1)


def test_train_checks_validation_histories_before_training():
    cat, towers = Catalogue([f"i{k}" for k in range(N)]), _towers()
    seqs = [np.array([1, 2, 3]), np.array([4, 5, 6])]
    bad = pd.DataFrame({"user_id": ["u1", "u2"], "history": [["i1", "i2"], ["i3", "zzz"]],
                        "target_item_id": ["i4", "i5"], "split": "validation"})
    with pytest.raises(UnknownItemError, match=r"unknown item id 'zzz' \(history row 1, user 'u2'\)"):
        train(towers, cat, seqs, bad, _settings())
    empty = bad.assign(history=[["i1"], []])
    with pytest.raises(ValueError, match="history row 1, user 'u2' is empty"):
        train(towers, cat, seqs, empty, _settings())
    with pytest.raises(UnknownItemError, match="training sequence 1"):
        train(towers, cat, [np.array([1, 2]), np.array([3, 99])], bad.iloc[:1], _settings())


def test_scorer_names_user_and_checks_catalogue_size():
    cat = Catalogue([f"i{k}" for k in range(N)])
    scorer = TowerScorer(_towers(), cat, max_len=4)
    with pytest.raises(UnknownItemError, match=r"unknown item id 'x' \(history row 0, user 'u9'\)"):
        scorer.score([["i1", "x"]], users=["u9"])
    # Only the items the user tower reads (the last max_len) are looked up.
    assert scorer.score([["old", "i1", "i2", "i3", "i4"]]).shape == (1, N)
    with pytest.raises(ValueError, match="history row 0 is empty"):
        scorer.user_vectors([[]])
    with pytest.raises(ValueError, match="built for 10 items but the catalogue has 11"):
        TowerScorer(_towers(), Catalogue([f"i{k}" for k in range(N + 1)]), max_len=4)
    tf.keras.utils.set_random_seed(0)
    sasrec = SASRecTowers(N, d_model=8, num_layers=1, num_heads=2, ff_dim=16, max_len=4)
    assert TowerScorer(sasrec, cat, max_len=4).score([["i1"]]).shape == (1, N)


def test_save_towers_builds_unbuilt_towers_and_load_checks_the_checkpoint(tmp_path):
    towers = _towers()  # never called: nothing built yet
    save_towers(towers, Catalogue([f"i{k}" for k in range(N)]), str(tmp_path), {"max_len": 4})
    loaded, _, _ = load_towers(str(tmp_path))
    assert np.allclose(loaded.items(tf.range(1, N + 1)).numpy(), towers.items(tf.range(1, N + 1)).numpy(), atol=1e-6)
    # towers.json describing a deeper model than the checkpoint holds: refused, not silently random.
    import json

    meta = json.loads((tmp_path / "towers.json").read_text())
    meta["config"]["num_layers"] = 2
    (tmp_path / "towers.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="checkpoint does not hold every weight"):
        load_towers(str(tmp_path))


def test_train_refuses_towers_of_another_catalogue_size():
    cat = Catalogue([f"i{k}" for k in range(N + 2)])
    cases = pd.DataFrame({"user_id": ["u1"], "history": [["i1"]], "target_item_id": ["i2"], "split": "validation"})
    with pytest.raises(ValueError, match="built for 10 items but the catalogue has 12"):
        train(_towers(), cat, [np.array([1, 2])], cases, _settings())


def test_train_settings_keep_sasrec_single_stage_unless_asked():
    from learn_tf.config import TrainConfig
    from learn_tf.training.jobs import train_settings

    two_stage = TrainConfig(pretrain_epochs=30)
    assert train_settings(two_stage, "learn").pretrain_epochs == 30
    assert train_settings(two_stage, "sasrec").pretrain_epochs == 0
    assert train_settings(TrainConfig(pretrain_epochs=30, pretrain_sasrec=True), "sasrec").pretrain_epochs == 30
