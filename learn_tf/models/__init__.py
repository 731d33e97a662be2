"""LEARN twin towers, the SASRec baseline, and the dense all-action retrieval task."""

from learn_tf.models.task import DenseAllActionRetrieval
from learn_tf.models.towers import LearnTowers, SASRecTowers
from learn_tf.models.retrieval_model import RetrievalModel

__all__ = ["DenseAllActionRetrieval", "LearnTowers", "RetrievalModel", "SASRecTowers"]
