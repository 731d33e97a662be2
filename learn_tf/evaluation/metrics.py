"""Full-catalogue ranking metrics for one target item per case: Recall@K, NDCG@K, MRR.

Rank of the target. For each case we count, among the rankable items (all
items, minus the excluded ones in the masked protocol), how many score
strictly higher than the target (`n_greater`) and how many other items score
exactly the same (`n_tied`). The tie rule then places the target:

- "expected" (default): the target's position among its ties is uniformly
  random, and every metric is its exact expectation over that random order
  (so the mean rank is n_greater + n_tied / 2 + 1). A constant scorer gets
  exactly random-ranking metrics, and the result is deterministic.
- "optimistic": rank = n_greater + 1 (ties resolved in the target's favour).
  This is the official LEARN evaluator (`Ranker` in adxcreative/LEARN
  src/tools/metric_tools.py: `rank = (predicts < scores).sum(-1)`). It rewards
  ties: a model that scores every item 0 gets Recall@K = 1.
- "pessimistic": rank = n_greater + n_tied + 1.

RecBole does not count strictly greater scores: its top-K metrics take the
order of `torch.topk` (recbole/evaluator/collector.py, `rec.topk`), whose tie
order is unspecified, and its mean-rank metrics use the average rank of ties
(`_average_rank`). "expected" is the deterministic version of that random
tie order. For real-valued model scores ties are rare and all rules agree.

Masking: excluded items (the user's earlier items) are simply not rankable:
they neither outrank nor tie with the target. The target itself is always
rankable, even when it appears in the exclusion mask (a repeat consumption
stays a hit); RecBole would mask it.

Metrics per case, with rank r (1-based): Recall@K = 1 if r <= K (one target,
so this is the hit rate); NDCG@K = 1 / log2(r + 1) if r <= K, else 0 (the
ideal DCG is 1); MRR = 1 / r over the whole list (no cut-off).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

TIE_RULES = ("expected", "optimistic", "pessimistic")


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}; got {ties!r}")


def rank_counts(scores: Any, targets: Any, exclude: Optional[Any] = None) -> tuple[np.ndarray, np.ndarray]:
    """Counts the rankable items scored above and equal to each target.

    Args:
      scores: [B, N] float scores over the whole catalogue (numpy or an eager tf tensor).
      targets: [B] int column index of each case's target item.
      exclude: optional [B, N] bool, True = not rankable (history items). The
        target's own entry is ignored: the target always stays rankable.

    Returns:
      (n_greater, n_tied): two [B] int64 arrays; n_tied excludes the target itself.

    Raises:
      ValueError: on shape mismatches, out-of-range targets or NaN scores.
    """
    s = np.asarray(scores)
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if s.ndim != 2 or s.shape[0] != t.shape[0]:
        raise ValueError(f"scores must be [B, N] with B = len(targets) = {t.shape[0]}; got shape {s.shape}")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"target indices must be in [0, {s.shape[1]}); got range [{t.min()}, {t.max()}]")
    if np.isnan(s).any():
        row = int(np.flatnonzero(np.isnan(s).any(axis=1))[0])
        raise ValueError(f"scores contain NaN (first in row {row}); NaN cannot be ranked")
    rows = np.arange(t.shape[0])
    target_score = s[rows, t][:, None]
    greater = s > target_score
    tied = s == target_score
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != s.shape:
            raise ValueError(f"exclude must have the shape of scores {s.shape}; got {ex.shape}")
        keep = ~ex
        keep[rows, t] = True
        greater &= keep
        tied &= keep
    return greater.sum(axis=1).astype(np.int64), tied.sum(axis=1).astype(np.int64) - 1


def _placement(n_greater: np.ndarray, n_tied: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """(first possible 0-based position, number of equally likely positions) of each target."""
    g = np.asarray(n_greater, dtype=np.int64)
    t = np.asarray(n_tied, dtype=np.int64)
    if ties == "optimistic":
        return g, np.ones_like(g)
    if ties == "pessimistic":
        return g + t, np.ones_like(g)
    return g, t + 1


def target_ranks(n_greater: np.ndarray, n_tied: np.ndarray, ties: str = "expected") -> np.ndarray:
    """The 1-based rank of each target under a tie rule.

    Args:
      n_greater: [B] int, rankable items scored above the target.
      n_tied: [B] int, other rankable items with the target's score.
      ties: "expected" (mean rank over random tie orders), "optimistic" or "pessimistic".

    Returns:
      [B] float64 ranks (fractional only for "expected" with ties).
    """
    _check_ties(ties)
    start, m = _placement(n_greater, n_tied, ties)
    return start + (m - 1) / 2.0 + 1.0


def case_metrics(n_greater: np.ndarray, n_tied: np.ndarray, ks: Sequence[int] = (10, 50, 200),
                 ties: str = "expected") -> dict[str, np.ndarray]:
    """Per-case Recall@K, NDCG@K and MRR from rank counts.

    Args:
      n_greater: [B] int, rankable items scored above the target.
      n_tied: [B] int, other rankable items with the target's score.
      ks: cut-offs.
      ties: tie rule, see the module docstring.

    Returns:
      {"recall@K": [B], "ndcg@K": [B] for each K, "mrr": [B]}, float64 each
      (under "expected", the exact expectation over random tie orders).
    """
    _check_ties(ties)
    start, m = _placement(n_greater, n_tied, ties)
    end = start + m  # positions start+1 .. end (1-based) are equally likely
    top = int(end.max()) if end.size else 0
    # cum_dcg[r] = sum_{i=1..r} 1/log2(i+1); harmonic[r] = sum_{i=1..r} 1/i.
    kmax = max(ks) if ks else 0
    cum_dcg = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, kmax + 2)))])
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"cut-offs must be >= 1; got {k}")
        hit_positions = np.clip(k - start, 0, m)
        out[f"recall@{k}"] = hit_positions / m
        out[f"ndcg@{k}"] = (cum_dcg[np.minimum(end, k)] - cum_dcg[np.minimum(start, k)]) / m
    out["mrr"] = (harmonic[end] - harmonic[start]) / m
    return out


def metric_names(ks: Sequence[int]) -> list[str]:
    """Metric keys in display order: recall@K..., ndcg@K..., mrr."""
    return [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]


def ranking_metrics(scores: Any, targets: Any, exclude: Optional[Any] = None, ks: Sequence[int] = (10, 50, 200),
                    ties: str = "expected", batch_size: int = 256) -> dict[str, float]:
    """Mean Recall@K, NDCG@K and MRR of a whole score matrix, processed in row batches.

    Args:
      scores: [B, N] float scores (numpy or an eager tf tensor).
      targets: [B] int target column per case.
      exclude: optional [B, N] bool mask of non-rankable items (target stays rankable).
      ks: cut-offs.
      ties: tie rule, see the module docstring.
      batch_size: rows compared at once (bounds the [batch, N] temporaries).

    Returns:
      {metric name: mean over the B cases}; NaN metrics when B = 0.
    """
    s = np.asarray(scores)
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    ex = None if exclude is None else np.asarray(exclude, dtype=bool)
    sums = {name: 0.0 for name in metric_names(ks)}
    for lo in range(0, t.shape[0], max(1, batch_size)):
        hi = lo + max(1, batch_size)
        g, tied = rank_counts(s[lo:hi], t[lo:hi], None if ex is None else ex[lo:hi])
        for name, v in case_metrics(g, tied, ks, ties).items():
            sums[name] += float(v.sum())
    n = t.shape[0]
    return {name: (v / n if n else float("nan")) for name, v in sums.items()}
