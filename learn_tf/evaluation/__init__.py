"""Evaluation: full-catalogue ranking metrics, the two-protocol evaluator, reports."""

from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.evaluation.evaluator import PROTOCOLS, evaluate, evaluate_models
from learn_tf.evaluation.metrics import case_metrics, rank_counts, ranking_metrics, target_ranks
from learn_tf.evaluation.report import format_table, write_report

__all__ = [
    "PROTOCOLS", "add_earlier_items", "case_metrics", "evaluate", "evaluate_models", "format_table",
    "rank_counts", "ranking_metrics", "target_ranks", "write_report",
]
