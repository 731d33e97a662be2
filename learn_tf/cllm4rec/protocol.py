"""CLLM4Rec's own evaluation protocol (CLLM4REC.md section 5), beside the shared leave-one-out evaluator.

Implicit feedback: ratings > 3 are positives (the only place the paper
binarises); each user's positives are split at random 80/10/10 into train /
validation / test. The prompt holds all training items, which are scored
-inf. Recall@k = hits / min(k, |targets|); NDCG@k with binary gains and the
ideal DCG over min(k, |targets|); both averaged over users with targets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

OWN_KS = {"recall": (20, 40), "ndcg": (100,)}


def binarised_split(interactions: pd.DataFrame, threshold: float = 3.0, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0) -> dict[str, pd.DataFrame]:
    """Positives (rating > threshold), split per user at random into "train", "validation", "test".

    Args:
      interactions: canonical interactions (user_id, item_id, rating).
      threshold: ratings above it are positives.
      fractions: train / validation / test shares of each user's positives.
      seed: the shuffle seed.

    Returns:
      {"train", "validation", "test"}: frames of (user_id, item_id); per user, validation and test get
      round(share * n) items (test first), train the rest.

    Raises:
      ValueError: the interactions carry no ratings.
    """
    if "rating" not in interactions.columns or interactions["rating"].isna().all():
        raise ValueError("CLLM4Rec's protocol binarises ratings; these interactions have none")
    pos = interactions.loc[interactions["rating"] > threshold, ["user_id", "item_id"]].astype(str)
    pos = pos.drop_duplicates().sort_values(["user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    part = np.empty(len(pos), dtype=object)
    for _, idx in pos.groupby("user_id", sort=True).indices.items():
        idx = rng.permutation(idx)
        n_test = int(round(fractions[2] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        part[idx[:n_test]] = "test"
        part[idx[n_test:n_test + n_val]] = "validation"
        part[idx[n_test + n_val:]] = "train"
    return {p: pos[part == p].reset_index(drop=True) for p in ("train", "validation", "test")}


def own_metrics(scores: np.ndarray, train_items: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                recall_ks: Sequence[int] = OWN_KS["recall"], ndcg_ks: Sequence[int] = OWN_KS["ndcg"]
                ) -> dict[str, float]:
    """Recall@k and NDCG@k of CLLM4Rec's protocol over users with at least one target.

    Args:
      scores: [B, I] item scores.
      train_items: per row, the item columns of the user's training items (scored -inf).
      targets: per row, the held-out item columns.
      recall_ks, ndcg_ks: cut-offs.

    Returns:
      {"recall@k": mean, "ndcg@k": mean, "users": count}.
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    for row, items in enumerate(train_items):
        s[row, list(items)] = -np.inf
    kmax = max([*recall_ks, *ndcg_ks])
    top = np.argsort(-s, axis=1, kind="stable")[:, :kmax]  # fewer columns when the catalogue is smaller
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    sums = {f"recall@{k}": 0.0 for k in recall_ks} | {f"ndcg@{k}": 0.0 for k in ndcg_ks}
    users = 0
    for row, t in enumerate(targets):
        t = set(int(x) for x in t)
        if not t:
            continue
        users += 1
        hits = np.isin(top[row], list(t))
        for k in recall_ks:
            sums[f"recall@{k}"] += hits[:k].sum() / min(k, len(t))
        for k in ndcg_ks:
            h = hits[:k]
            sums[f"ndcg@{k}"] += (h * discounts[: len(h)]).sum() / discounts[: min(k, len(t))].sum()
    return {**{m: (v / users if users else float("nan")) for m, v in sums.items()}, "users": users}
