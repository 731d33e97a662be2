"""Training on a toy catalogue with a planted preference; the collapse guard."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.config import SplitConfig, SyntheticConfig, TrainConfig
from learn_tf.data.splits import make_splits
from learn_tf.data.synthetic import generate_synthetic
from learn_tf.evaluation.evaluator import evaluate
from learn_tf.models.catalogue import Catalogue, TowerScorer
from learn_tf.models.towers import LearnTowers
from learn_tf.models.retrieval_model import RetrievalModel
from learn_tf.training.trainer import (CollapseError, WeightAverage, content_neighbours, pick_cold_strength,
                                       pretrain, train)


def _toy_data(cold_item_fraction=0.0):
    items, inter = generate_synthetic(SyntheticConfig(num_items=120, num_users=150, num_topics=6,
                                                      mean_sequence_length=14, topic_concentration=0.05, seed=1))
    splits = make_splits(items, inter, SplitConfig(cold_item_fraction=cold_item_fraction))
    cat = Catalogue(np.sort(items["item_id"].to_numpy()))
    topic = items.set_index("item_id").loc[cat.item_ids, "topic"].to_numpy()
    rng = np.random.default_rng(0)
    # Content vectors: the item's topic (what an LLM would read from the text) plus noise.
    content = np.eye(8)[topic] + 0.3 * rng.normal(size=(len(cat), 8))
    content = (content - content.mean(0)) / np.linalg.norm(content - content.mean(0), axis=1, keepdims=True)
    seqs = [cat.indices(g["item_id"].tolist())
            for _, g in splits.train.sort_values(["user_id", "position"]).groupby("user_id")]
    return cat, content.astype(np.float32), seqs, splits


@pytest.fixture(scope="module")
def toy():
    return _toy_data()


def _settings(**kw):
    base = dict(sampling="dense", max_len=12, num_targets=3, num_query_positions=3, samples_per_user=4,
                batch_size=32, epochs=4, learning_rate=3e-3, patience=10, seed=0, optimizer="adamw",
                weight_decay=0.01, schedule="cosine", warmup_fraction=0.05, clipnorm=1.0)
    base.update(kw)
    return TrainConfig(**base)


def _towers(cat, content):
    tf.keras.utils.set_random_seed(0)  # weights are created before train() seeds: fix them here
    return LearnTowers(len(cat), content.shape[1], d_model=16, num_layers=1, num_heads=2, ff_dim=32, out_dim=8,
                       dropout=0.0, max_len=12, content_table=content)


def test_training_learns_the_planted_topic_preference(toy, tmp_path):
    cat, content, seqs, splits = toy
    towers = _towers(cat, content)
    val = splits.cases("validation")
    before = evaluate(TowerScorer(towers, cat, 12).score, val, cat.item_ids, ks=(10,), protocols=("unmasked",))
    result = train(towers, cat, seqs, val, _settings(), output_dir=str(tmp_path), verbose=0)
    after = evaluate(TowerScorer(towers, cat, 12).score, val, cat.item_ids, ks=(10,), protocols=("unmasked",))
    ndcg_before = before["protocols"]["unmasked"]["overall"]["metrics"]["ndcg@10"]
    ndcg_after = after["protocols"]["unmasked"]["overall"]["metrics"]["ndcg@10"]
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    # Random ranking of 120 items gives NDCG@10 ~0.04; users stick to one topic of ~20 items.
    # Untrained towers already pass some topic signal through; training must add to it.
    assert ndcg_after > 0.12 and ndcg_after > ndcg_before + 0.03
    assert result.best_metric == pytest.approx(max(h["val_ndcg@10"] for h in result.history))
    for name in ("history.json", "curves.png", "checkpoints/best.index"):
        assert os.path.exists(tmp_path / name), name
    with open(tmp_path / "history.json") as f:
        assert len(json.load(f)["history"]) == len(result.history)


def test_collapse_guard_fires_on_identical_content(toy):
    cat, content, seqs, splits = toy
    same = np.tile(content[:1], (len(cat), 1))  # every item reads the same: nothing to learn from
    with pytest.raises(CollapseError, match="collapsed"):
        train(_towers(cat, same), cat, seqs, splits.cases("validation"),
              _settings(logq_correction=False, epochs=3), verbose=0)


@pytest.mark.parametrize("negatives", ["full", "sampled", "in_batch"])
def test_next_item_objective_learns_the_planted_preference(toy, negatives):
    cat, content, seqs, splits = toy
    towers = _towers(cat, content)
    val = splits.cases("validation")
    settings = TrainConfig(sampling="next_item", negatives=negatives, num_sampled_negatives=16, max_len=12,
                           batch_size=16, epochs=3, learning_rate=3e-3, patience=10, seed=0)
    result = train(towers, cat, seqs, val, settings, verbose=0)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_metric > 0.12 and result.best_seconds > 0


def test_two_stage_and_learnable_scale_run(toy):
    cat, content, seqs, splits = toy
    settings = TrainConfig(sampling="next_item", negatives="full", max_len=12, batch_size=32, epochs=1,
                           pretrain_epochs=1, num_targets=2, num_query_positions=2, learnable_logit_scale=True,
                           seed=0)
    result = train(_towers(cat, content), cat, seqs, splits.cases("validation"), settings, verbose=0)
    assert len(result.history) == 1 and 1.0 <= result.history[0]["logit_scale"] <= 100.0


def test_fixed_length_run_keeps_the_last_weights_and_evaluates_every_k_epochs(toy):
    cat, content, seqs, splits = toy
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, epochs=3, eval_every=2,
                           restore_best=False, patience=1, seed=0)
    towers = _towers(cat, content)
    result = train(towers, cat, seqs, splits.cases("validation"), settings, verbose=0)
    evaluated = [h["epoch"] for h in result.history if "val_ndcg@10" in h]
    assert evaluated == [2, 3] and len(result.history) == 3  # every 2nd epoch and the last one
    assert result.best_epoch == 3 and result.best_metric == result.history[-1]["val_ndcg@10"]
    assert not result.stopped_early


def test_weight_average_equals_a_hand_computed_moving_average_and_swaps_back():
    v = tf.Variable([1.0, -2.0])
    avg = WeightAverage([v], decay=0.9)
    avg.on_train_batch_end(0)  # the first step starts the average
    expected = np.array([1.0, -2.0])
    for step in ([3.0, 0.0], [0.5, 4.0], [-1.0, 1.0]):
        v.assign(step)
        avg.on_train_batch_end(0)
        expected = 0.9 * expected + 0.1 * np.array(step)
    with avg.applied():
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(v.numpy(), [-1.0, 1.0])  # the raw weights are back for training


def test_ema_run_validates_and_keeps_the_averaged_weights(toy):
    cat, content, seqs, splits = toy
    val = splits.cases("validation")
    settings = TrainConfig(sampling="next_item", negatives="full", max_len=12, batch_size=32, epochs=2, seed=0,
                           ema_decay=0.8, restore_best=False)
    raw_towers = _towers(cat, content)
    train(raw_towers, cat, seqs, val, replace(settings, ema_decay=0.0), verbose=0)
    towers = _towers(cat, content)
    result = train(towers, cat, seqs, val, settings, verbose=0)
    # Same seed and data: the raw trajectory is the run without averaging; the kept weights are its average.
    diffs = [np.abs(a - b).max() for a, b in zip(towers.get_weights(), raw_towers.get_weights())]
    assert max(diffs) > 1e-4
    scored = evaluate(TowerScorer(towers, cat, 12).score, val, cat.item_ids, ks=(10,), protocols=("masked",))
    assert scored["protocols"]["masked"]["overall"]["metrics"]["ndcg@10"] == pytest.approx(result.best_metric)


def test_content_neighbours_are_the_nearest_allowed_items_by_cosine():
    rng = np.random.default_rng(5)
    content = rng.normal(size=(9, 4)).astype(np.float32)
    allowed = np.ones(10, bool)
    allowed[[0, 4]] = False  # padding, and item 4 (never trained) is nobody's neighbour
    ids, weights = content_neighbours(content, allowed, k=3, temperature=0.2, chunk=4)  # chunks of 4 rows
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)
    for item in range(1, 10):
        cos = {j: float(unit[item - 1] @ unit[j - 1]) for j in range(1, 10) if j != item and allowed[j]}
        best = sorted(cos, key=lambda j: -cos[j])[:3]
        assert ids[item].tolist() == best
        z = np.exp(np.array([cos[j] for j in best]) / 0.2)
        np.testing.assert_allclose(weights[item], z / z.sum(), rtol=1e-5)


def test_content_neighbour_targets_equal_the_soft_label_cross_entropy(toy):
    cat, content, _, _ = toy
    towers = _towers(cat, content)
    n = len(cat)
    seen = np.ones(n + 1, bool)
    seen[0] = False
    seen[[3, 7]] = False
    nbr_ids, nbr_w = content_neighbours(content, seen, k=4, temperature=0.1)
    model = RetrievalModel(towers, negatives="full", candidate_mask=seen, target_neighbours=(nbr_ids, nbr_w),
                           target_share=0.3)
    rng = np.random.default_rng(2)
    history = rng.integers(1, n + 1, size=(3, 12)).astype(np.int32)
    labels = rng.integers(1, n + 1, size=(3, 12)).astype(np.int32)
    labels[1, :5] = 0  # padding positions carry no loss
    loss = float(model.compute_loss({"history": history, "labels": labels}, training=False))
    seq = towers.sequence(history, training=False).numpy()
    items = towers.items(np.arange(1, n + 1), training=False).numpy()
    scale = 1.0 if towers.similarity == "dot" else 20.0  # RetrievalModel's default logit scale for cosine
    expected = []
    for b, t in zip(*np.nonzero(labels)):
        s = scale * items @ seq[b, t]
        target = np.zeros(n)
        target[labels[b, t] - 1] += 0.7
        target[nbr_ids[labels[b, t]] - 1] += 0.3 * nbr_w[labels[b, t]]
        expected.append(_lse_masked(s, seen[1:]) - target @ s)
    assert loss == pytest.approx(float(np.mean(expected)), rel=1e-4)


def _lse_masked(s, mask):
    s = s[mask]
    return float(s.max() + np.log(np.exp(s - s.max()).sum()))


def test_pretraining_on_content_alone_leaves_the_id_vectors_untrained(toy):
    cat, content, seqs, _ = toy
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(cat), content.shape[1], d_model=16, num_layers=1, num_heads=2, ff_dim=32, out_dim=16,
                         dropout=0.0, max_len=12, content_table=content, item_tower="e", item_inputs="hybrid",
                         id_dropout=0.1, similarity="dot", use_positions=True)  # input_norm on: any rank
    towers(np.ones((1, 12), np.int32))  # build
    ids_before, adaptor_before = towers.ids.get_weights()[0].copy(), towers.adaptor.get_weights()[0].copy()
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, pretrain_epochs=1, seed=0,
                           pretrain_id_dropout=1.0)
    pretrain(towers, cat, seqs, settings, verbose=0)
    np.testing.assert_array_equal(towers.ids.get_weights()[0], ids_before)  # no gradient reached the IDs
    assert np.abs(towers.adaptor.get_weights()[0] - adaptor_before).max() > 1e-4  # content path trained
    assert towers.id_dropout == 0.1  # the model's own rate for the next stage
    pretrain(towers, cat, seqs, replace(settings, pretrain_id_dropout=None), verbose=0)
    assert np.abs(towers.ids.get_weights()[0] - ids_before).max() > 1e-4  # the model's rate trains them


def test_cold_ids_ridge_keeps_the_l2_with_the_best_validation_ndcg():
    cat, content, seqs, splits = _toy_data(cold_item_fraction=0.15)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(cat), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.0, max_len=12,
                         item_tower="e", item_inputs="hybrid", id_dropout=0.2, similarity="dot", input_norm=False,
                         content_table=content)
    val = splits.cases("validation")
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, epochs=2, seed=0, cold_ids="ridge",
                           early_stopping_protocol="unmasked")
    result = train(towers, cat, seqs, val, settings, verbose=0)
    cold = result.cold_ids
    untrained = np.flatnonzero(~np.isin(cat.item_ids, splits.train["item_id"].unique())) + 1
    assert cold["untrained_items"] == len(untrained) > 0
    assert set(cold["validation_ndcg@10"]) == {"zero", *map(str, (0.3, 1.0, 3.0, 10.0, 30.0, 100.0))}
    best = max(cold["validation_ndcg@10"].values())
    key = "zero" if cold["l2"] is None else str(cold["l2"])
    assert cold["validation_ndcg@10"][key] == best  # the towers keep the best one ...
    now = evaluate(TowerScorer(towers, cat, 12).score, val, cat.item_ids, ks=(10,), protocols=("unmasked",))
    assert now["protocols"]["unmasked"]["overall"]["metrics"]["ndcg@10"] == pytest.approx(best, abs=1e-9)
    ids = towers.ids.get_weights()[0][untrained]
    assert (cold["l2"] is None) == (not ids.any())  # ... and untrained items carry its ID vectors


def test_learned_content_map_trains_and_gives_untrained_items_its_prediction():
    cat, content, seqs, splits = _toy_data(cold_item_fraction=0.15)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(cat), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.0, max_len=12,
                         item_tower="e", item_inputs="hybrid", id_dropout=0.5, id_fallback="content",
                         similarity="dot", input_norm=False, content_table=content)
    towers.users(tf.ones([1, 1], tf.int32))
    before = towers.id_map.numpy().copy()
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, epochs=2, seed=0,
                           early_stopping_protocol="unmasked")
    result = train(towers, cat, seqs, splits.cases("validation"), settings, verbose=0)
    w = towers.id_map.numpy()
    assert not np.allclose(w, before)  # the map learned from the dropped IDs
    untrained = np.flatnonzero(~np.isin(cat.item_ids, splits.train["item_id"].unique())) + 1
    assert result.cold_ids["fallback"] == "learned map" and result.cold_ids["l2"] is None
    assert np.allclose(towers.ids.get_weights()[0][untrained], content[untrained - 1] @ w, atol=1e-5)
    assert np.array_equal(towers.cold_map.numpy(), w)


def test_cold_ids_ridge_can_select_on_the_cold_item_validation_cases():
    cat, content, seqs, splits = _toy_data(cold_item_fraction=0.15)
    val = splits.cases("validation")
    cold_cases = val[val["cold_item"]].reset_index(drop=True)
    assert 0 < len(cold_cases) < len(val)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(cat), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.0, max_len=12,
                         item_tower="e", item_inputs="hybrid", id_dropout=0.2, similarity="dot", input_norm=False,
                         content_table=content)
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, epochs=2, seed=0, cold_ids="ridge",
                           cold_ridge_metric="cold_item", early_stopping_protocol="unmasked")
    cold = train(towers, cat, seqs, val, settings, verbose=0).cold_ids
    assert cold["selected_on"] == "cold_item"
    best = max(cold["validation_ndcg@10"].values())
    assert cold["validation_ndcg@10"]["zero" if cold["l2"] is None else str(cold["l2"])] == best
    # The recorded figures are NDCG@10 of the cold-item cases alone, as the towers now score them.
    now = evaluate(TowerScorer(towers, cat, 12).score, cold_cases, cat.item_ids, ks=(10,), protocols=("unmasked",))
    assert now["protocols"]["unmasked"]["overall"]["metrics"]["ndcg@10"] == pytest.approx(best, abs=1e-9)


def test_cold_ids_ridge_balanced_keeps_the_best_overall_above_the_cold_floor():
    cat, content, seqs, splits = _toy_data(cold_item_fraction=0.15)
    val = splits.cases("validation")
    cold_cases = val[val["cold_item"]].reset_index(drop=True)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(cat), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.0, max_len=12,
                         item_tower="e", item_inputs="hybrid", id_dropout=0.2, similarity="dot", input_norm=False,
                         content_table=content)
    settings = TrainConfig(sampling="next_item", max_len=12, batch_size=32, epochs=2, seed=0, cold_ids="ridge",
                           cold_ridge_metric="balanced", cold_ridge_floor=0.5, early_stopping_protocol="unmasked")
    cold = train(towers, cat, seqs, val, settings, verbose=0).cold_ids
    overall, on_cold = cold["validation_ndcg@10"], cold["validation_cold_item_ndcg@10"]
    assert cold["selected_on"] == "balanced" and set(overall) == set(on_cold) and len(overall) == 7
    allowed = [k for k in overall if on_cold[k] >= 0.5 * max(on_cold.values())]
    key = "zero" if cold["l2"] is None else str(cold["l2"])
    assert key in allowed and overall[key] == max(overall[k] for k in allowed)
    # Both recorded figures are what the towers now score on the whole and on the cold-item cases.
    score = TowerScorer(towers, cat, 12).score
    for cases, expected in ((val, overall[key]), (cold_cases, on_cold[key])):
        now = evaluate(score, cases, cat.item_ids, ks=(10,), protocols=("unmasked",))
        assert now["protocols"]["unmasked"]["overall"]["metrics"]["ndcg@10"] == pytest.approx(expected, abs=1e-9)


def test_pick_cold_strength_floor():
    overall = {"zero": 0.050, "0.3": 0.022, "1.0": 0.044, "3.0": 0.046, "10.0": 0.048}
    cold = {"zero": 0.000, "0.3": 0.070, "1.0": 0.042, "3.0": 0.020, "10.0": 0.007}
    assert pick_cold_strength(overall) == "zero"  # overall alone
    assert pick_cold_strength(overall, cold, 0.0) == "zero"  # no floor
    assert pick_cold_strength(overall, cold, 0.5) == "1.0"  # 0.042 >= 0.035; 3.0 (0.020) is below the floor
    assert pick_cold_strength(overall, cold, 0.25) == "3.0"  # 0.020 >= 0.0175
    assert pick_cold_strength(overall, cold, 1.0) == "0.3"  # the cold-item rule
    assert pick_cold_strength({"a": 0.1, "b": 0.1}, {"a": 0.0, "b": 0.0}, 0.5) == "a"  # first on ties
