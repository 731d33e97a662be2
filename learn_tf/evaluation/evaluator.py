"""Scores evaluation cases over the whole catalogue and reports metrics per protocol and segment.

Two protocols are computed from the same score matrix:
- "unmasked (official LEARN)": every catalogue item is rankable;
- "masked (history items excluded, HLLM/RecBole style)": the user's earlier
  items are not rankable, except the target itself. The earlier items are the
  case's `earlier_items` column when present (every earlier item, see
  `learn_tf.evaluation.cases.add_earlier_items`), otherwise its `history`
  (capped at the split's history_max_len); the result records which.

Items of a history or mask that are not in the catalogue cannot be masked and
are ignored; a target that is not in the catalogue is an error.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from learn_tf.data.splits import SEGMENTS
from learn_tf.evaluation.cases import EARLIER_ITEMS
from learn_tf.evaluation.metrics import TIE_RULES, case_metrics, metric_names, rank_counts

ScoreFn = Callable[[list[list[str]]], Any]

PROTOCOLS = {
    "masked": "masked (history items excluded, HLLM/RecBole style)",
    "unmasked": "unmasked (official LEARN)",
}


def _catalogue_index(item_ids: np.ndarray) -> pd.Index:
    index = pd.Index(np.asarray(item_ids).astype(str))
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise ValueError(f"item_ids must be unique; {dup!r} appears more than once")
    return index


def _target_columns(cases: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """[B] catalogue column of each target; raises naming the first unknown target."""
    cols = index.get_indexer(cases["target_item_id"].astype(str))
    missing = np.flatnonzero(cols < 0)
    if missing.size:
        i = int(missing[0])
        raise ValueError(
            f"target item {cases['target_item_id'].iloc[i]!r} of user {cases['user_id'].iloc[i]!r} is not in the "
            f"catalogue of {len(index):,} item ids ({missing.size:,} unknown targets in all)"
        )
    return cols.astype(np.int64)


def _mask(lists: Sequence[Sequence[str]], index: pd.Index) -> np.ndarray:
    """[B, N] bool, True at the catalogue columns of each row's items (unknown ids ignored)."""
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = [str(v) for x in lists for v in x]
    cols = index.get_indexer(flat) if flat else np.array([], dtype=np.int64)
    rows = np.repeat(np.arange(len(lists)), lengths)
    known = cols >= 0
    mask = np.zeros((len(lists), len(index)), dtype=bool)
    mask[rows[known], cols[known]] = True
    return mask


def _call(score_fn: ScoreFn, histories: list[list[str]], n_items: int, name: str) -> np.ndarray:
    scores = np.asarray(score_fn(histories))
    if scores.shape != (len(histories), n_items):
        raise ValueError(
            f"{name}: score_fn returned shape {scores.shape}; expected ({len(histories)}, {n_items}) "
            "= (histories in the batch, catalogue size)"
        )
    return scores


def _summarise(per_case: dict[str, np.ndarray], cases: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    def block(sel: np.ndarray) -> dict[str, Any]:
        n = int(sel.sum())
        return {"count": n, "metrics": {m: (float(per_case[m][sel].mean()) if n else None) for m in names}}

    everything = np.ones(len(cases), dtype=bool)
    return {
        "overall": block(everything),
        "segments": {s: block(cases[s].to_numpy(dtype=bool)) for s in SEGMENTS if s in cases.columns},
    }


def evaluate_models(models: Mapping[str, ScoreFn], cases: pd.DataFrame, item_ids: np.ndarray,
                    ks: Sequence[int] = (10, 50, 200), protocols: Sequence[str] = ("masked", "unmasked"),
                    batch_size: int = 256, ties: str = "expected") -> dict[str, Any]:
    """Evaluates several models on the same cases, one batch of cases at a time.

    Args:
      models: {name: score_fn}; score_fn(histories: list of B item-id lists,
        oldest first) returns [B, len(item_ids)] scores in catalogue order.
      cases: evaluation cases (user_id, target_item_id, history, optional
        earlier_items, split and segment columns).
      item_ids: [N] the catalogue; column j of the scores is item_ids[j].
      ks: cut-offs for Recall@K and NDCG@K.
      protocols: any of "masked", "unmasked".
      batch_size: cases scored at once (bounds memory to [batch_size, N]).
      ties: tie rule of `learn_tf.evaluation.metrics` ("expected" by default).

    Returns:
      {"n_cases", "n_items", "ks", "ties", "splits", "models": {name: {protocol:
      {"label", "mask_source", "overall": {"count", "metrics"}, "segments":
      {segment: {"count", "metrics"}}}}}}; metrics are {"recall@K", "ndcg@K",
      "mrr"} means, None for an empty segment.

    Raises:
      ValueError: an unknown protocol or tie rule, duplicate item ids, a target
        not in the catalogue (naming user and item), or scores of the wrong shape.
    """
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}; got {ties!r}")
    cases = cases.reset_index(drop=True)
    index = _catalogue_index(item_ids)
    targets = _target_columns(cases, index)
    histories = [list(map(str, h)) for h in cases["history"]]
    mask_source = EARLIER_ITEMS if EARLIER_ITEMS in cases.columns else "history"
    mask_lists = [list(map(str, h)) for h in cases[mask_source]]
    names = metric_names(ks)
    per_case = {m: {p: {n: np.zeros(len(cases)) for n in names} for p in protocols} for m in models}
    step = max(1, int(batch_size))
    for lo in range(0, len(cases), step):
        hi = min(lo + step, len(cases))
        exclude = _mask(mask_lists[lo:hi], index) if "masked" in protocols else None
        for name, fn in models.items():
            scores = _call(fn, histories[lo:hi], len(index), name)
            for p in protocols:
                g, t = rank_counts(scores, targets[lo:hi], exclude if p == "masked" else None)
                for metric, v in case_metrics(g, t, ks, ties).items():
                    per_case[name][p][metric][lo:hi] = v
    results: dict[str, Any] = {}
    for name in models:
        results[name] = {}
        for p in protocols:
            results[name][p] = {"label": PROTOCOLS[p], "mask_source": mask_source if p == "masked" else None,
                                **_summarise(per_case[name][p], cases, names)}
    splits = sorted(cases["split"].unique().tolist()) if "split" in cases.columns else []
    return {"n_cases": len(cases), "n_items": len(index), "ks": list(ks), "ties": ties, "splits": splits,
            "models": results}


def evaluate(score_fn: ScoreFn, cases: pd.DataFrame, item_ids: np.ndarray, ks: Sequence[int] = (10, 50, 200),
             protocols: Sequence[str] = ("masked", "unmasked"), batch_size: int = 256,
             ties: str = "expected") -> dict[str, Any]:
    """Evaluates one model: see `evaluate_models` for the arguments.

    Returns:
      {"n_cases", "n_items", "ks", "ties", "splits", "protocols": {protocol:
      {"label", "mask_source", "overall", "segments"}}}.
    """
    res = evaluate_models({"model": score_fn}, cases, item_ids, ks, protocols, batch_size, ties)
    out = {k: v for k, v in res.items() if k != "models"}
    out["protocols"] = res["models"]["model"]
    return out
