"""The `learn train` and `learn evaluate` jobs: data loading, model building, saving, reporting."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.config import Config, ModelConfig, TrainConfig
from learn_tf.data.sequence_examples import ReadCounts
from learn_tf.models.catalogue import Catalogue
from learn_tf.models.towers import ContentDimError, LearnTowers, SASRecTowers
from learn_tf.training.inputs import PackedSequences, RecordSequences, sequences_from_records, sequences_from_split
from learn_tf.training.trainer import train
from learn_tf.utils.io import atomic_open, write_json

MODEL_KINDS = ("learn", "learn_c", "sasrec", "cllm4rec")
TOWERS_FILE = "towers.json"
CATALOGUE_FILE = "catalogue.txt"
WEIGHTS = "weights"


def training_inputs(items: pd.DataFrame, train: Union[pd.DataFrame, str], ids: np.ndarray, matrix: np.ndarray,
                    counts: Optional[ReadCounts] = None, stream: bool = False
                    ) -> tuple[Catalogue, np.ndarray, Union[PackedSequences, RecordSequences]]:
    """The catalogue (sorted item ids), its aligned content matrix and the users' training index sequences.

    Args:
      items: the items table (its item_id column is the catalogue).
      train: where the training sequences come from, one input builder fed two ways: a split's training
        interactions (in memory, `learn train`) or a directory of per-user SequenceExample shards
        (streamed with tf.data, the TFX Trainer; `learn_tf.data.sequence_examples`).
      ids, matrix: the item embeddings (ids [N], matrix [N, D]).
      counts: filled with what the streamed reader read (records, sequences, users without training items).
      stream: shards only: `RecordSequences` (counted, read again each epoch; `train.stream_shuffle_buffer` > 0)
        instead of packing every sequence in memory.

    Raises:
      ValueError: a catalogue item has no embedding. UnknownItemError / SequenceRecordError: a training
      item is not in the catalogue (named), or a record is malformed (named).
    """
    catalogue = Catalogue(np.sort(items["item_id"].astype(str).to_numpy()))
    content = catalogue.align(ids, matrix)
    if isinstance(train, str):
        sequences = (RecordSequences(train, catalogue, counts=counts) if stream
                     else sequences_from_records(train, catalogue, counts=counts))
    else:
        sequences = sequences_from_split(train, catalogue)
    return catalogue, content, sequences


def load_training_data(cfg: Config) -> dict[str, Any]:
    """Splits, interactions, the catalogue (all items) and its aligned content matrix.

    Raises:
      FileNotFoundError: naming what is missing and the command that makes it.
      ValueError: the embeddings do not cover the catalogue.
    """
    from learn_tf.data.ingest import read_ingested
    from learn_tf.data.splits import read_splits
    from learn_tf.embeddings.store import load_embeddings

    layout = cfg.layout()
    items, interactions = read_ingested(layout.data)
    splits = read_splits(layout.split)
    ids, matrix, manifest = load_embeddings(layout.embeddings)
    catalogue, content, sequences = training_inputs(items, splits.train, ids, matrix)
    return {"items": items, "interactions": interactions, "splits": splits, "catalogue": catalogue,
            "content": content, "sequences": sequences, "embedding_manifest": manifest}


def build_towers(m: ModelConfig, max_len: int, kind: str, catalogue: Catalogue, content: np.ndarray
                 ) -> tf.keras.Model:
    """LEARN towers (item tower from the model section, or "c" for `learn_c`) or SASRec towers.

    Args:
      m: the config's model section. max_len: the train section's history length.
    """
    common = dict(d_model=m.d_model, num_layers=m.num_layers, num_heads=m.num_heads, ff_dim=m.ff_dim,
                  max_len=max_len, initializer_range=m.initializer_range)
    if kind == "sasrec":
        dropout = m.dropout if m.sasrec_dropout is None else m.sasrec_dropout
        return SASRecTowers(len(catalogue), use_positions=m.sasrec_use_positions, similarity=m.sasrec_similarity,
                            dropout=dropout, **common)
    if kind not in ("learn", "learn_c"):
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    return LearnTowers(len(catalogue), content.shape[1], out_dim=m.out_dim,
                       item_tower="c" if kind == "learn_c" else m.item_tower, item_inputs=m.item_inputs,
                       id_dropout=m.id_dropout, use_positions=m.use_positions, input_norm=m.input_norm,
                       similarity=m.similarity, dropout=m.dropout, content_table=content,
                       id_fallback=m.id_fallback, **common)


def model_name(m: ModelConfig, kind: str) -> str:
    """Directory / report name of a trained model (`m`: the config's model section)."""
    if kind == "learn":
        suffix = "_hybrid" if m.item_inputs == "hybrid" else ""
        return f"learn_{m.item_tower}{suffix}"
    return kind


def save_towers(towers: tf.keras.Model, catalogue: Catalogue, out_dir: str, extra: dict[str, Any]) -> None:
    """Weights (TF checkpoint), the towers' config and the catalogue order (`load_towers` reads them)."""
    os.makedirs(out_dir, exist_ok=True)
    _build(towers)  # an unbuilt subclassed model would save no weights at all
    towers.save_weights(os.path.join(out_dir, WEIGHTS))
    with atomic_open(os.path.join(out_dir, CATALOGUE_FILE)) as f:
        f.write("\n".join(catalogue.item_ids) + "\n")
    write_json(os.path.join(out_dir, TOWERS_FILE), {"class": type(towers).__name__, "config": towers.get_config(),
                                                     **extra})


def embedding_info(manifest: Optional[dict[str, Any]]) -> dict[str, Any]:
    """What `save_towers` records about the content embeddings a model was trained on."""
    m = manifest or {}
    return {k: m.get(k) for k in ("model", "model_id", "postprocess", "dim", "run_id")}


def check_embeddings(meta: dict[str, Any], content: Optional[np.ndarray] = None,
                     manifest: Optional[dict[str, Any]] = None, name: str = "the towers") -> None:
    """Checks that content embeddings fit towers saved by `save_towers` (`meta` = towers.json).

    Args:
      meta: the saved towers.json content.
      content: optional [N, D] content matrix meant for these towers.
      manifest: optional embedding manifest (`learn embed` output) of `content`.
      name: how to call the model in messages.

    Raises:
      ContentDimError: the width differs from the towers' content_dim, or the
        embedding model differs from the one the towers were trained with;
        the message names both and the `learn embed` / `learn train` fix.
    """
    if meta.get("class") != "LearnTowers":
        return  # SASRec reads no content
    trained = meta.get("embedding") or {}
    want_dim = int(meta["config"]["content_dim"])
    model = trained.get("model")
    fix = (f"re-run `learn embed` with embedding.model: {model} (the model they were trained with)" if model
           else "re-run `learn embed` with the embedding model the towers were trained with")
    fix += ", or retrain them on these embeddings (`learn train`)"
    got_dim = content.shape[1] if content is not None else (manifest or {}).get("dim")
    if got_dim is not None and int(got_dim) != want_dim:
        source = f" (embedding model {manifest.get('model')!r})" if manifest and manifest.get("model") else ""
        raise ContentDimError(f"content embeddings{source} have width {int(got_dim)} but {name} were trained on "
                              f"content_dim {want_dim}: {fix}")
    if manifest and model and manifest.get("model") and manifest["model"] != model:
        raise ContentDimError(f"content embeddings come from {manifest['model']!r} but {name} were trained on "
                              f"{model!r} embeddings (same width {want_dim}, different space): {fix}")


def _build(towers: tf.keras.Model) -> None:
    """Creates every weight of the towers (a no-op when they are built)."""
    towers.users(tf.zeros([1, 1], tf.int32))
    towers.items(tf.ones([1], tf.int32))


def load_towers(model_dir: str, content: Optional[np.ndarray] = None,
                embedding_manifest: Optional[dict[str, Any]] = None
                ) -> tuple[tf.keras.Model, Catalogue, dict[str, Any]]:
    """Rebuilds trained towers from `save_towers` (`learn train`) output.

    Args:
      model_dir: e.g. runs/movielens/models/learn_a.
      content: optional [N, content_dim] content vectors in catalogue order to
        replace the saved table with (e.g. re-embedded item text).
      embedding_manifest: optional manifest of those embeddings, checked
        against the embedding model the towers were trained with.

    Returns:
      (towers, catalogue, meta): built towers with the trained weights, the
      catalogue order they use, and the saved towers.json.

    Raises:
      FileNotFoundError: the directory holds no trained model.
      ContentDimError: `content` / the manifest do not fit the towers (see `check_embeddings`).
    """
    path = os.path.join(model_dir, TOWERS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; run `learn train` first")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    with open(os.path.join(model_dir, CATALOGUE_FILE), encoding="utf-8") as f:
        catalogue = Catalogue([line.rstrip("\n") for line in f if line.rstrip("\n")])
    check_embeddings(meta, content, embedding_manifest, name=f"the towers in {model_dir}")
    cls = {"LearnTowers": LearnTowers, "SASRecTowers": SASRecTowers}[meta["class"]]
    towers = cls.from_config(meta["config"])
    _build(towers)
    status = towers.load_weights(os.path.join(model_dir, WEIGHTS))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"{model_dir}: the checkpoint does not hold every weight of the towers in "
                         f"{TOWERS_FILE} ({str(e).splitlines()[0][:200]}); re-run `learn train`") from None
    status.expect_partial()
    if content is not None and isinstance(towers, LearnTowers):
        towers.content.set_table(np.asarray(content, np.float32))
    return towers, catalogue, meta


def train_settings(t: TrainConfig, kind: str) -> TrainConfig:
    """The train section as one model kind trains with: SASRec single-stage unless `pretrain_sasrec`."""
    if kind == "sasrec" and t.pretrain_epochs and not t.pretrain_sasrec:
        return replace(t, pretrain_epochs=0)
    return t


def train_job(cfg: Config, kinds: Sequence[str], models_dir: Optional[str] = None, verbose: int = 2) -> dict[str, Any]:
    """Trains each model kind and saves it under `<models_dir>/<name>/`."""
    summary: dict[str, Any] = {}
    if "cllm4rec" in kinds:  # ID tokens in a frozen LLM: its own data path, no content embeddings
        from learn_tf.cllm4rec.job import train_cllm4rec_job  # keras-hub LLM stack, loaded only for this kind

        summary["cllm4rec"] = train_cllm4rec_job(cfg, models_dir)
        kinds = [k for k in kinds if k != "cllm4rec"]
        if not kinds:
            return summary
    data = load_training_data(cfg)
    models_dir = models_dir or cfg.layout().models
    val = _with_earlier(data["splits"].cases("validation"), data["interactions"])
    for kind in kinds:
        name = model_name(cfg.model, kind)
        out = os.path.join(models_dir, name)
        print(f"[learn train] {name}: {len(data['sequences']):,} training sequences, "
              f"{len(data['catalogue']):,} items -> {out}")
        towers = build_towers(cfg.model, cfg.train.max_len, kind, data["catalogue"], data["content"])
        result = train(towers, data["catalogue"], data["sequences"], val, train_settings(cfg.train, kind),
                       output_dir=out, verbose=verbose)
        save_towers(towers, data["catalogue"], out, {"kind": kind, "max_len": cfg.train.max_len,
                                                     "best_epoch": result.best_epoch,
                                                     "best_val_ndcg@10": result.best_metric,
                                                     "model_config": asdict(cfg.model),
                                                     "embedding": embedding_info(data["embedding_manifest"])})
        summary[name] = {"best_epoch": result.best_epoch, "best_val_ndcg@10": result.best_metric,
                         "seconds": round(result.seconds, 1), "best_seconds": round(result.best_seconds, 1)}
        print(f"[learn train] {name}: best validation NDCG@10 {result.best_metric:.4f} at epoch "
              f"{result.best_epoch} ({result.seconds:.0f} s)")
    return summary


def _with_earlier(cases: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    from learn_tf.evaluation.cases import add_earlier_items

    return add_earlier_items(cases, interactions)


def evaluate_job(cfg: Config, models_dir: Optional[str] = None, results_dir: Optional[str] = None,
                 split: str = "test") -> dict[str, Any]:
    """Scores every trained model plus Popularity and content-kNN; writes JSON, markdown and PNGs."""
    from learn_tf.evaluation.report import format_table, write_report
    from learn_tf.evaluation.trained import evaluate_trained

    data = load_training_data(cfg)
    models_dir = models_dir or cfg.layout().models
    names = sorted(n for n in os.listdir(models_dir)
                   if os.path.exists(os.path.join(models_dir, n, TOWERS_FILE))) if os.path.isdir(models_dir) else []
    trained = {n: load_towers(os.path.join(models_dir, n), embedding_manifest=data["embedding_manifest"])
               for n in names}
    results = evaluate_trained(trained, data["catalogue"], data["content"], data["splits"], data["interactions"],
                               split, baselines=("content_knn", "popularity"))
    out = results_dir or cfg.layout().results
    write_report(results, out)
    print(format_table(results))
    print(f"[learn evaluate] wrote {out}/results.json, results.md, recall_at_k.png, segments.png")
    return results
