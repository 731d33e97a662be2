"""CLLM4Rec's own protocol: binarised 80/10/10 split and Recall@k / NDCG@k by hand."""

import numpy as np
import pandas as pd
import pytest

from learn_tf.cllm4rec.protocol import binarised_split, own_metrics


def test_split_keeps_positives_and_partitions_each_user() -> None:
    rows = [("u1", f"i{k}", 5.0 if k % 4 else 2.0) for k in range(40)] + [("u2", "i1", 4.0), ("u2", "i2", 3.0)]
    parts = binarised_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]), seed=1)
    u1 = {p: set(f.loc[f["user_id"] == "u1", "item_id"]) for p, f in parts.items()}
    assert [len(u1[p]) for p in ("train", "validation", "test")] == [24, 3, 3]  # 30 positives of 40
    assert not (u1["train"] & u1["test"]) and not (u1["validation"] & u1["test"])
    assert set(parts["train"].loc[parts["train"]["user_id"] == "u2", "item_id"]) == {"i1"}  # 3.0 is not > 3


def test_split_needs_ratings() -> None:
    with pytest.raises(ValueError, match="ratings"):
        binarised_split(pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [None]}))


def test_metrics_by_hand() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    # Row 0: item 0 is a training item (excluded) -> ranking 1, 2, 3, 4; targets {2, 4} at ranks 2 and 4.
    # Row 1: ranking 4, 3, 2, 1, 0; target {0} at rank 5. Row 2: no target (skipped).
    m = own_metrics(np.vstack([scores, scores[:1]]), [[0], [], []], [[2, 4], [0], []], recall_ks=(2, 4),
                    ndcg_ks=(4,))
    assert m["users"] == 2
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@4"] == pytest.approx((2 / 2 + 0) / 2)
    idcg = 1 + 1 / np.log2(3)
    assert m["ndcg@4"] == pytest.approx(((1 / np.log2(3) + 1 / np.log2(5)) / idcg + 0) / 2)
