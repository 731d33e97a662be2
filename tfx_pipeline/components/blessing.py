"""The blessing rule and its record: the Evaluator writes a ModelBlessing, the Pusher reads it."""

from __future__ import annotations

from tfx.types.artifact import Artifact

BLESSED_KEY = "blessed"  # the custom property TFX's Pusher and Evaluator use
PUSHED_KEY = "pushed"


def blessing_reasons(ndcg: float, content_knn_ndcg: float, min_ndcg_at_10: float,
                     must_beat_content_knn: bool) -> list[str]:
    """Why a model is not blessed (empty when it is): masked NDCG@10 below the minimum, or not above content-kNN."""
    reasons = []
    if ndcg < min_ndcg_at_10:
        reasons.append(f"NDCG@10 {ndcg:.4f} < pipeline.min_ndcg_at_10 {min_ndcg_at_10:.4f}")
    if must_beat_content_knn and ndcg <= content_knn_ndcg:
        reasons.append(f"NDCG@10 {ndcg:.4f} does not beat content-kNN {content_knn_ndcg:.4f}")
    return reasons


def record_blessing(blessing: Artifact, blessed: bool, model_uri: str, ndcg: float, content_knn_ndcg: float,
                    reasons: list[str]) -> None:
    """Sets the ModelBlessing's custom properties (`blessed`, `current_model`, the NDCGs, `reasons`)."""
    blessing.set_int_custom_property(BLESSED_KEY, 1 if blessed else 0)
    blessing.set_string_custom_property("current_model", model_uri)
    blessing.set_float_custom_property("ndcg_at_10", ndcg)
    blessing.set_float_custom_property("content_knn_ndcg_at_10", content_knn_ndcg)
    if reasons:
        blessing.set_string_custom_property("reasons", "; ".join(reasons))


def is_blessed(blessing: Artifact) -> bool:
    """True when the Evaluator blessed the model."""
    return bool(blessing.get_int_custom_property(BLESSED_KEY))


def not_blessed_reasons(blessing: Artifact) -> str:
    """The reasons the Evaluator recorded for not blessing."""
    return blessing.get_string_custom_property("reasons")
