"""The evaluator: protocols, segments and counts, errors, batching."""

import numpy as np
import pandas as pd
import pytest

from learn_tf.baselines.popularity import PopularityBaseline
from learn_tf.config import SplitConfig, SyntheticConfig
from learn_tf.data.splits import SEGMENTS, make_splits
from learn_tf.data.synthetic import generate_synthetic
from learn_tf.evaluation.evaluator import PROTOCOLS, evaluate, evaluate_models
from learn_tf.evaluation.metrics import case_metrics, rank_counts


@pytest.fixture(scope="module")
def synthetic():
    items, inter = generate_synthetic(SyntheticConfig(num_items=80, num_users=60, mean_sequence_length=8, seed=3))
    splits = make_splits(items, inter, SplitConfig(cold_item_fraction=0.1, short_history_max=5))
    catalogue = splits.item_stats["item_id"].to_numpy()
    pop = PopularityBaseline.from_interactions(catalogue, splits.train["item_id"].to_numpy(), break_ties=False)
    return splits, catalogue, pop


def _case(user, target, history):
    return {"split": "test", "user_id": user, "target_item_id": target, "history": history}


def test_segments_and_counts_match_the_split(synthetic):
    splits, catalogue, pop = synthetic
    cases = splits.cases("test")
    res = evaluate(pop.score, cases, catalogue, ks=(5, 10), batch_size=16)
    assert res["n_cases"] == len(cases) and res["n_items"] == len(catalogue) and res["splits"] == ["test"]
    expected_counts = splits.summary["segments"]["test"]
    for p in ("masked", "unmasked"):
        out = res["protocols"][p]
        assert out["label"] == PROTOCOLS[p]
        assert out["overall"]["count"] == len(cases)
        assert set(out["segments"]) == set(SEGMENTS)
        for s in SEGMENTS:
            assert out["segments"][s]["count"] == expected_counts[s] == int(cases[s].sum())
    assert res["protocols"]["masked"]["mask_source"] == "history"
    assert res["protocols"]["masked"]["segments"]["cold_item"]["count"] > 0


def test_segment_metrics_are_means_over_their_cases(synthetic):
    splits, catalogue, pop = synthetic
    cases = splits.cases("test")
    res = evaluate(pop.score, cases, catalogue, ks=(10,), batch_size=7)
    col = {v: i for i, v in enumerate(catalogue)}
    targets = np.array([col[t] for t in cases["target_item_id"]])
    scores = pop.score(list(cases["history"]))
    exclude = np.zeros_like(scores, dtype=bool)
    for b, h in enumerate(cases["history"]):
        exclude[b, [col[x] for x in h]] = True
    for p, ex in (("masked", exclude), ("unmasked", None)):
        per_case = case_metrics(*rank_counts(scores, targets, ex), ks=(10,))
        for s in SEGMENTS:
            sel = cases[s].to_numpy()
            got = res["protocols"][p]["segments"][s]["metrics"]["ndcg@10"]
            assert got == pytest.approx(per_case["ndcg@10"][sel].mean())
        assert res["protocols"][p]["overall"]["metrics"]["mrr"] == pytest.approx(per_case["mrr"].mean())
    # Cold targets have zero training count, so popularity cannot rank them well.
    cold = res["protocols"]["unmasked"]["segments"]["cold_item"]["metrics"]["recall@10"]
    head = res["protocols"]["unmasked"]["segments"]["head_item"]["metrics"]["recall@10"]
    assert cold < head


def test_batch_size_invariance(synthetic):
    splits, catalogue, pop = synthetic
    cases = splits.eval_cases  # both splits
    a = evaluate(pop.score, cases, catalogue, batch_size=1)
    b = evaluate(pop.score, cases, catalogue, batch_size=1000)
    assert a["splits"] == ["test", "validation"]
    for p in ("masked", "unmasked"):
        for k, v in a["protocols"][p]["overall"]["metrics"].items():
            assert b["protocols"][p]["overall"]["metrics"][k] == pytest.approx(v, abs=1e-12)


def test_masking_protocols_by_hand():
    catalogue = np.array(["a", "b", "c", "d"])
    cases = pd.DataFrame([_case("u1", "c", ["a", "b"]), _case("u2", "a", ["a"])])

    def history_first(histories):  # a=3, b=2, c=1, d=0 for everyone
        return np.tile(np.array([3.0, 2.0, 1.0, 0.0]), (len(histories), 1))

    res = evaluate(history_first, cases, catalogue, ks=(1, 2))
    un, ma = res["protocols"]["unmasked"]["overall"]["metrics"], res["protocols"]["masked"]["overall"]["metrics"]
    # u1: rank 3 unmasked, 1 masked; u2: target "a" is in its history but stays rankable: rank 1 in both.
    assert un["recall@1"] == 0.5 and un["mrr"] == pytest.approx((1 / 3 + 1) / 2)
    assert ma["recall@1"] == 1.0 and ma["mrr"] == 1.0
    assert res["protocols"]["unmasked"]["segments"] == {}  # no segment columns given


def test_earlier_items_column_drives_the_mask():
    catalogue = np.array(["a", "b", "c", "d"])
    cases = pd.DataFrame([_case("u1", "c", ["b"])])
    cases["earlier_items"] = [["a", "b"]]
    scores = lambda h: np.tile(np.array([3.0, 2.0, 1.0, 0.0]), (len(h), 1))  # noqa: E731
    res = evaluate(scores, cases, catalogue, ks=(1,), protocols=("masked",))
    assert res["protocols"]["masked"]["mask_source"] == "earlier_items"
    assert res["protocols"]["masked"]["overall"]["metrics"]["recall@1"] == 1.0
    assert list(res["protocols"]) == ["masked"]


def test_empty_history_and_unknown_history_ids_are_allowed():
    catalogue = np.array(["a", "b", "c"])
    cases = pd.DataFrame([_case("u1", "b", []), _case("u2", "c", ["zzz", "a"])])
    seen = []

    def fn(histories):
        seen.extend(histories)
        return np.zeros((len(histories), 3))

    res = evaluate(fn, cases, catalogue, ks=(1,))
    assert seen == [[], ["zzz", "a"]]
    # Constant scores: random ranking over 3 items, or 2 once "a" is masked for u2.
    assert res["protocols"]["unmasked"]["overall"]["metrics"]["recall@1"] == pytest.approx(1 / 3)
    assert res["protocols"]["masked"]["overall"]["metrics"]["recall@1"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_errors_name_the_problem():
    catalogue = np.array(["a", "b"])
    cases = pd.DataFrame([_case("u1", "a", []), _case("u7", "nope", ["a"])])
    with pytest.raises(ValueError, match=r"target item 'nope' of user 'u7'"):
        evaluate(lambda h: np.zeros((len(h), 2)), cases, catalogue)
    ok = cases.iloc[:1]
    with pytest.raises(ValueError, match=r"broken: score_fn returned shape \(1, 3\)"):
        evaluate_models({"broken": lambda h: np.zeros((len(h), 3))}, ok, catalogue)
    with pytest.raises(ValueError, match="unique"):
        evaluate(lambda h: np.zeros((len(h), 3)), ok, np.array(["a", "b", "a"]))
    with pytest.raises(ValueError, match="protocol"):
        evaluate(lambda h: np.zeros((len(h), 2)), ok, catalogue, protocols=("official",))


def test_evaluate_models_scores_each_model(synthetic):
    splits, catalogue, pop = synthetic
    cases = splits.cases("validation")
    rng = np.random.default_rng(0)
    res = evaluate_models({"pop": pop.score, "random": lambda h: rng.random((len(h), len(catalogue)))},
                          cases, catalogue, ks=(10,))
    assert list(res["models"]) == ["pop", "random"]
    single = evaluate(pop.score, cases, catalogue, ks=(10,))
    assert res["models"]["pop"] == single["protocols"]
