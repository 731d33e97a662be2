"""One evaluator of trained towers: `learn evaluate` and the pipeline's Evaluator both score through it."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.baselines import ContentKNNBaseline, PopularityBaseline
from learn_tf.data.splits import Splits
from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.evaluation.evaluator import evaluate_models
from learn_tf.models.catalogue import Catalogue, TowerScorer
from learn_tf.training.trainer import check_cases

BASELINES = ("content_knn", "popularity")


def evaluate_trained(trained: Mapping[str, tuple[tf.keras.Model, Catalogue, dict[str, Any]]], catalogue: Catalogue,
                     content: np.ndarray, splits: Splits, interactions: pd.DataFrame, split: str = "test",
                     baselines: Sequence[str] = BASELINES) -> dict[str, Any]:
    """Scores trained towers and training-free baselines over the whole catalogue on one split's cases.

    Args:
      trained: {model name: (towers, their catalogue, their towers.json)}, as
        `learn_tf.training.jobs.load_towers` returns them (which also checks
        the content embeddings against the towers).
      catalogue: the evaluation catalogue (sorted item ids); every model must use the same order.
      content: [N, D] content embeddings in catalogue order (the content-kNN baseline).
      splits: the leave-one-out split (training interactions, evaluation cases).
      interactions: the interactions the split was made from (every earlier item, for the masked protocol).
      split: "test" or "validation".
      baselines: any of "content_knn", "popularity", scored after the trained models in this order.

    Returns:
      `learn_tf.evaluation.evaluator.evaluate_models` results (models in the
      order given, then the baselines) with "split" added.

    Raises:
      ValueError: a model was trained on another catalogue, an unknown baseline,
        or a case history the towers cannot read (naming the row and user).
    """
    counts = (PopularityBaseline.from_interactions(catalogue.item_ids, splits.train["item_id"]).counts
              if "popularity" in baselines else None)
    return evaluate_cases(trained, catalogue, content, add_earlier_items(splits.cases(split), interactions), counts,
                          split, baselines)


def evaluate_cases(trained: Mapping[str, tuple[tf.keras.Model, Catalogue, dict[str, Any]]], catalogue: Catalogue,
                   content: np.ndarray, cases: pd.DataFrame, train_counts: Optional[np.ndarray],
                   split: str = "test", baselines: Sequence[str] = BASELINES,
                   scorers: Optional[Mapping[str, tuple[Callable[[list[list[str]]], np.ndarray],
                                                        Sequence[str]]]] = None) -> dict[str, Any]:
    """`evaluate_trained` on prepared inputs: cases with `earlier_items` and the training counts per item.

    The pipeline's Evaluator feeds it from the Split's cases and SequenceGen's
    shards (no interactions table); `evaluate_trained` from a split in memory.

    Args:
      trained, catalogue, content, split, baselines: as `evaluate_trained`.
      cases: one split's evaluation cases with their `earlier_items` column.
      train_counts: [N] training interactions per catalogue item (the popularity
        baseline; None when it is not asked for).
      scorers: other trained models as {name: (score_fn, their catalogue item ids)}, e.g. CLLM4Rec's
        (`learn_tf.cllm4rec.job.case_scorer`); scored after the towers, before the baselines.

    Raises:
      ValueError: as `evaluate_trained`, or the popularity baseline without `train_counts`.
    """
    fns: dict[str, Any] = {}
    max_lens = []
    for name, (towers, model_catalogue, meta) in trained.items():
        if list(model_catalogue.item_ids) != list(catalogue.item_ids):
            raise ValueError(f"model {name} was trained on a different catalogue; retrain it")
        fns[name] = TowerScorer(towers, catalogue, int(meta["max_len"])).score
        max_lens.append(int(meta["max_len"]))
    for name, (score, model_item_ids) in (scorers or {}).items():
        if list(map(str, model_item_ids)) != list(catalogue.item_ids):
            raise ValueError(f"model {name} was trained on a different catalogue; retrain it")
        fns[name] = score
    for baseline in baselines:
        if baseline == "content_knn":
            fns[baseline] = ContentKNNBaseline(catalogue.item_ids, content).score
        elif baseline == "popularity":
            if train_counts is None:
                raise ValueError("the popularity baseline needs the training counts per item (train_counts)")
            fns[baseline] = PopularityBaseline(catalogue.item_ids, train_counts).score
        else:
            raise ValueError(f"unknown baseline {baseline!r}; choose from {', '.join(BASELINES)}")
    if max_lens:  # fail before scoring, naming the case row and user
        check_cases(catalogue, cases, max(max_lens))
    results = evaluate_models(fns, cases, catalogue.item_ids)
    results["split"] = split
    return results
