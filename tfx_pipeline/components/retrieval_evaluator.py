"""RetrievalEvaluator: full-catalogue Recall/NDCG/MRR of the trained model (towers or CLLM4Rec) and content-kNN,
and the blessing."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from learn_tf.cllm4rec import store as cllm4rec_store
from learn_tf.cllm4rec.job import case_scorer
from learn_tf.evaluation.report import format_table, write_report
from learn_tf.evaluation.trained import evaluate_cases
from learn_tf.training.jobs import load_towers
from learn_tf.utils import io
from tfx_pipeline import data_io
from tfx_pipeline.components.artifacts import ItemEmbeddings, Split, UserSequences
from tfx_pipeline.components.blessing import blessing_reasons, record_blessing
from tfx_pipeline.training_data import load_streamed_data

BASELINES = ("content_knn",)  # the pipeline's table and blessing compare against content-kNN only


class RetrievalEvaluatorSpec(ComponentSpec):
    """RetrievalEvaluator: model + user sequences + embeddings + split in; evaluation + blessing out."""

    PARAMETERS = {
        "model_name": ExecutionParameter(type=str),
        "min_ndcg_at_10": ExecutionParameter(type=float),
        "must_beat_content_knn": ExecutionParameter(type=int),
        "eval_split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "sequences": ChannelParameter(type=UserSequences),
        "item_embeddings": ChannelParameter(type=ItemEmbeddings),
        "split": ChannelParameter(type=Split),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class RetrievalEvaluatorExecutor(base_executor.BaseExecutor):
    """Scores with `learn_tf.evaluation.trained.evaluate_cases` (the core of `learn evaluate`'s `evaluate_trained`,
    fed from the Split and SequenceGen's shards; a CLLM4Rec model through `learn_tf.cllm4rec.job.case_scorer`,
    as `learn evaluate --model cllm4rec`); blesses or not."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Evaluates the trained model and content-kNN on the held-out split; writes results and the blessing."""
        split = exec_properties["eval_split"]
        name = exec_properties["model_name"]
        model_uri = artifact_utils.get_single_uri(input_dict["model"])
        # The cases and their earlier items from the Split and SequenceGen's shards: the interactions are
        # never read; training sequences only when a baseline needs their counts (popularity).
        data = load_streamed_data(artifact_utils.get_single_uri(input_dict["item_embeddings"]),
                                  artifact_utils.get_single_uri(input_dict["split"]),
                                  artifact_utils.get_single_uri(input_dict["sequences"]), split,
                                  sequences="popularity" in BASELINES)
        counts = (np.bincount(data["sequences"].values, minlength=len(data["catalogue"]) + 1)[1:]
                  if data["sequences"] is not None else None)
        if data_io.holds_cllm4rec(model_uri):  # pipeline.model_kind "cllm4rec": the LLM scores each case's prompt
            with io.local_copy(data_io.trained_cllm4rec_dir(model_uri)) as model_dir:  # store.load reads local files
                model, builder, meta = cllm4rec_store.load(model_dir)
            scorers = {name: (case_scorer(model, builder, meta, data["cases"]), meta["item_ids"])}
            results = evaluate_cases({}, data["catalogue"], data["content"], data["cases"], counts, split,
                                     baselines=BASELINES, scorers=scorers)
        else:
            with io.local_copy(data_io.trained_towers_dir(model_uri)) as towers_dir:  # load_towers: local files
                trained = {name: load_towers(towers_dir, embedding_manifest=data["embedding_manifest"])}
            results = evaluate_cases(trained, data["catalogue"], data["content"], data["cases"], counts, split,
                                     baselines=BASELINES)
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        with io.staged_dir(evaluation.uri) as report_dir:  # write_report writes local files; uploaded if a URI
            write_report(results, report_dir, plots=False)
        print(format_table(results))

        def ndcg(model: str) -> float:
            return float(results["models"][model]["masked"]["overall"]["metrics"]["ndcg@10"] or 0.0)

        min_ndcg = float(exec_properties["min_ndcg_at_10"])
        must_beat = bool(exec_properties["must_beat_content_knn"])
        reasons = blessing_reasons(ndcg(name), ndcg("content_knn"), min_ndcg, must_beat)
        blessed = not reasons
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        data_io.write_text(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "")
        data_io.write_text(os.path.join(blessing.uri, "verdict.json"), json.dumps(
            {"blessed": blessed, "reasons": reasons, "ndcg@10": ndcg(name), "content_knn_ndcg@10": ndcg("content_knn"),
             "min_ndcg_at_10": min_ndcg, "must_beat_content_knn": must_beat, "split": split}, indent=2))
        record_blessing(blessing, blessed, model_uri, ndcg(name), ndcg("content_knn"), reasons)
        print(f"[learn pipeline] model {'BLESSED' if blessed else 'NOT blessed'}"
              + (": " + "; ".join(reasons) if reasons else ""))


class RetrievalEvaluator(base_component.BaseComponent):
    """Retrieval evaluation over the full catalogue (TFMA cannot) with a blessing threshold."""

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RetrievalEvaluatorExecutor)

    def __init__(self, model: types.BaseChannel, sequences: types.BaseChannel, item_embeddings: types.BaseChannel,
                 split: types.BaseChannel, model_name: str, min_ndcg_at_10: float = 0.0,
                 must_beat_content_knn: bool = False, eval_split: str = "test") -> None:
        """Args: the Trainer's model, SequenceGen's user sequences, embeddings, the split, the model's name and the
        blessing rule."""
        super().__init__(spec=RetrievalEvaluatorSpec(
            model=model, sequences=sequences, item_embeddings=item_embeddings, split=split, model_name=model_name,
            min_ndcg_at_10=float(min_ndcg_at_10), must_beat_content_knn=int(bool(must_beat_content_knn)),
            eval_split=eval_split, evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
