"""Training-free baselines with a `score(histories)` method for the evaluator."""

from learn_tf.baselines.content_knn import ContentKNNBaseline
from learn_tf.baselines.popularity import PopularityBaseline

__all__ = ["ContentKNNBaseline", "PopularityBaseline"]
