"""Reproduces LEARN.md's Popularity sanity check on MovieLens-100K (large: reads the full data)."""

import numpy as np
import pytest

from learn_tf.baselines.popularity import PopularityBaseline
from learn_tf.config import DataConfig, SplitConfig
from learn_tf.data.ingest import ingest
from learn_tf.data.splits import make_splits
from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.evaluation.evaluator import evaluate_models

# LEARN.md, "Measured on MovieLens-100K here": test cases of the plain leave-one-out split.
REFERENCE = {
    "unmasked": {"ndcg@10": 0.0224, "recall@10": 0.0498},
    "masked": {"ndcg@10": 0.0449, "recall@10": 0.0859},
}


@pytest.mark.large
def test_popularity_reference_on_movielens100k(tmp_path):
    res = ingest(DataConfig(source="movielens100k"), str(tmp_path / "data"))
    splits = make_splits(res.items, res.interactions, SplitConfig(cold_item_fraction=0.0, history_max_len=50))
    catalogue = splits.item_stats["item_id"].to_numpy()
    # The masked reference excludes every earlier item of the user, not only the last 50.
    cases = add_earlier_items(splits.cases("test"), res.interactions)
    assert len(cases) == 943 and len(catalogue) == 1682
    # Equal training counts are ordered by the item file's row order.
    pop = PopularityBaseline.from_interactions(catalogue, splits.train["item_id"].to_numpy(),
                                               tie_order=res.items["item_id"].to_numpy())
    rng = np.random.default_rng(0)
    out = evaluate_models({"popularity": pop.score,
                           "constant": lambda h: np.zeros((len(h), len(catalogue)), np.float32),
                           "random": lambda h: rng.random((len(h), len(catalogue)))},
                          cases, catalogue, ks=(10, 50, 200))
    for protocol, ref in REFERENCE.items():
        got = out["models"]["popularity"][protocol]["overall"]["metrics"]
        for name, value in ref.items():
            assert got[name] == pytest.approx(value, abs=5e-5), (protocol, name, got[name])
    assert out["models"]["popularity"]["masked"]["mask_source"] == "earlier_items"
    # A strict order: every tie rule gives the same numbers.
    opt = evaluate_models({"popularity": pop.score}, cases, catalogue, ks=(10,), ties="optimistic")
    for protocol in REFERENCE:
        for name in ("ndcg@10", "recall@10", "mrr"):
            assert opt["models"]["popularity"][protocol]["overall"]["metrics"][name] == pytest.approx(
                out["models"]["popularity"][protocol]["overall"]["metrics"][name], abs=1e-12)
    # Random ranking: NDCG@10 = sum_{r<=10} 1/log2(r+1) / 1682 = 0.0027 (exact for a constant scorer).
    random_ndcg = sum(1 / np.log2(r + 1) for r in range(1, 11)) / 1682
    constant = out["models"]["constant"]["unmasked"]["overall"]["metrics"]["ndcg@10"]
    assert constant == pytest.approx(random_ndcg, abs=1e-9) and round(constant, 4) == 0.0027
    assert abs(out["models"]["random"]["unmasked"]["overall"]["metrics"]["ndcg@10"] - random_ndcg) < 0.003
