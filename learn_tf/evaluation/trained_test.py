"""evaluate_trained: trained towers and baselines scored on one split, in a fixed order, with clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.baselines import ContentKNNBaseline
from learn_tf.config import SplitConfig, SyntheticConfig
from learn_tf.data.splits import make_splits
from learn_tf.data.synthetic import generate_synthetic
from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.evaluation.evaluator import evaluate_models
from learn_tf.evaluation.trained import evaluate_trained
from learn_tf.models.catalogue import Catalogue
from learn_tf.models.towers import LearnTowers

D = 6


@pytest.fixture(scope="module")
def run():
    items, inter = generate_synthetic(SyntheticConfig(num_items=40, num_users=30, mean_sequence_length=6, seed=1))
    splits = make_splits(items, inter, SplitConfig(cold_item_fraction=0.1))
    catalogue = Catalogue(np.sort(items["item_id"].astype(str).to_numpy()))
    content = np.random.default_rng(0).normal(size=(len(catalogue), D)).astype(np.float32)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(catalogue), D, d_model=8, num_layers=1, num_heads=2, ff_dim=16, out_dim=4, dropout=0.0,
                         max_len=4, content_table=content)
    return splits, inter, catalogue, content, towers


def test_models_then_baselines_in_order_on_the_split(run):
    splits, inter, catalogue, content, towers = run
    res = evaluate_trained({"learn_a": (towers, catalogue, {"max_len": 4})}, catalogue, content, splits, inter,
                           "validation", baselines=("content_knn", "popularity"))
    assert list(res["models"]) == ["learn_a", "content_knn", "popularity"]
    assert res["split"] == "validation" and res["splits"] == ["validation"]
    # The same numbers as scoring the baseline by hand on the cases with every earlier item.
    cases = add_earlier_items(splits.cases("validation"), inter)
    knn = evaluate_models({"content_knn": ContentKNNBaseline(catalogue.item_ids, content).score}, cases,
                          catalogue.item_ids)
    assert res["models"]["content_knn"] == knn["models"]["content_knn"]


def test_baselines_only_and_errors(run):
    splits, inter, catalogue, content, towers = run
    res = evaluate_trained({}, catalogue, content, splits, inter, baselines=("popularity",))
    assert list(res["models"]) == ["popularity"] and res["split"] == "test"
    other = Catalogue(list(catalogue.item_ids[::-1]))
    with pytest.raises(ValueError, match="model m was trained on a different catalogue"):
        evaluate_trained({"m": (towers, other, {"max_len": 4})}, catalogue, content, splits, inter)
    with pytest.raises(ValueError, match="unknown baseline 'random'"):
        evaluate_trained({}, catalogue, content, splits, inter, baselines=("random",))


def test_evaluate_cases_fed_from_packed_training_counts_equals_evaluate_trained(run):
    """The pipeline's Evaluator path: cases with earlier items + training counts from the packed sequences."""
    from learn_tf.evaluation.trained import evaluate_cases
    from learn_tf.training.inputs import sequences_from_split

    splits, inter, catalogue, content, towers = run
    trained = {"learn_a": (towers, catalogue, {"max_len": 4})}
    expected = evaluate_trained(trained, catalogue, content, splits, inter, "test")
    packed = sequences_from_split(splits.train, catalogue)
    counts = np.bincount(packed.values, minlength=len(catalogue) + 1)[1:]
    cases = add_earlier_items(splits.cases("test"), inter)
    assert evaluate_cases(trained, catalogue, content, cases, counts, "test") == expected
    with pytest.raises(ValueError, match="popularity baseline needs the training counts"):
        evaluate_cases({}, catalogue, content, cases, None, baselines=("popularity",))
