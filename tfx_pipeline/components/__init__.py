"""LEARN's custom TFX components, one module each, plus their artifact types and the blessing rule.

    data_gate            DataGate: stops the run on anomalies / unknown items
    item_embedding_gen   ItemEmbeddingGen: the Beam frozen-LLM job (incremental cache)
    split_gen            SplitGen: the run's one leave-one-out split
    sequence_gen         SequenceGen: the Beam sequence step (per-user SequenceExamples the Trainer streams)
    trainer              LearnTrainer: TFX's Trainer + embeddings + split (run_fn in tfx_pipeline.trainer_module)
    retrieval_evaluator  RetrievalEvaluator: full-catalogue metrics and the blessing
    serving_pusher       ServingPusher: exports and pushes blessed models
    artifacts            DataReport, ItemEmbeddings, Split, UserSequences
    blessing             the blessing rule the Evaluator writes and the Pusher reads

Each is a Python-class component (ComponentSpec + executor) so that it
compiles for Vertex AI Pipelines as well as running under LocalDagRunner.
The executors are thin: the work is done by `learn_tf`, `beam` and `serving`.
"""

from tfx_pipeline.components.artifacts import DataReport, ItemEmbeddings, Split, UserSequences
from tfx_pipeline.components.data_gate import DataGate, DataGateExecutor, DataValidationError
from tfx_pipeline.components.item_embedding_gen import ItemEmbeddingGen, ItemEmbeddingGenExecutor
from tfx_pipeline.components.retrieval_evaluator import RetrievalEvaluator, RetrievalEvaluatorExecutor
from tfx_pipeline.components.sequence_gen import SequenceGen, SequenceGenExecutor
from tfx_pipeline.components.serving_pusher import ServingPusher, ServingPusherExecutor, push_models
from tfx_pipeline.components.split_gen import SplitGen, SplitGenExecutor
from tfx_pipeline.components.trainer import LearnTrainer, LearnTrainerExecutor

__all__ = [
    "DataGate", "DataGateExecutor", "DataReport", "DataValidationError", "ItemEmbeddingGen",
    "ItemEmbeddingGenExecutor", "ItemEmbeddings", "LearnTrainer", "LearnTrainerExecutor", "RetrievalEvaluator",
    "RetrievalEvaluatorExecutor", "SequenceGen", "SequenceGenExecutor", "ServingPusher", "ServingPusherExecutor",
    "Split", "SplitGen", "SplitGenExecutor", "UserSequences", "push_models",
]
