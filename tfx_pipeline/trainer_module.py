"""The Trainer module: `run_fn` builds and trains LEARN with learn_tf and saves the trained towers
(or, for the model kind "cllm4rec", trains CLLM4Rec as `learn train --model cllm4rec` does).

`custom_config` carries the `model` and `train` config sections and the model
kind (see `tfx_pipeline.components.trainer`); LearnTrainer's executor adds
`item_embeddings_uri`, `split_uri` and `sequences_uri`. The training input
streams from SequenceGen's per-user SequenceExamples (`tf.data`, catalogue
indices; `tfx_pipeline.training_data.load_streamed_data`): the
interactions are never read into memory. Output: `<serving_model_dir>/towers/`,
saved with `learn_tf.training.jobs.save_towers` and the metadata `learn train`
writes, for the Evaluator and the Pusher (which exports the serving models);
training curves and `train_summary.json` in `model_run_dir`.

Model kind "cllm4rec" (`pipeline.model_kind`): `learn_tf.cllm4rec.job.train_cllm4rec` (the code path of
`learn train --model cllm4rec`) on the ingested items (the ItemEmbeddings artifact's catalogue and item
text) and the Split's training interactions; its learning curve scores the first `cllm4rec.curve_users`
users' validation cases (earlier items from SequenceGen's shards). Output: `<serving_model_dir>/cllm4rec/`
(`tables.npz`, `curve.json`, `cllm4rec.json` written last), which the Evaluator scores and the Pusher
exports with `serving.cllm4rec_export`.

Only `run_fn` is public (TFX loads it by path); imports carry a leading underscore.
"""

from __future__ import annotations

import json as _json
import os as _os
from dataclasses import asdict as _asdict

import tensorflow_transform as _tft

from learn_tf.cllm4rec import job as _cllm4rec_job
from learn_tf.cllm4rec import store as _cllm4rec_store
from learn_tf.config import CLLM4RecConfig as _CLLM4RecConfig
from learn_tf.data.splits import read_splits as _read_splits
from learn_tf.training import distribute as _distribute
from learn_tf.training import jobs as _jobs
from learn_tf.training import trainer as _trainer
from learn_tf.utils import io as _io
from tfx_pipeline import data_io as _data_io
from tfx_pipeline import training_data as _training_data
from tfx_pipeline.components.trainer import read_custom_config as _read_custom_config

__all__ = ["run_fn"]


def run_fn(fn_args: "tfx.components.FnArgs") -> None:
    """TFX Trainer entry point: trains the configured model kind and saves the towers."""
    cc = dict(fn_args.custom_config or {})
    sections = _read_custom_config(cc)
    kind = sections.model_kind
    if sections.cllm4rec is not None:
        _run_cllm4rec(fn_args, sections.cllm4rec, sections.template)
        return
    data = _training_data.load_streamed_data(cc["item_embeddings_uri"], cc["split_uri"], cc["sequences_uri"],
                                             "validation", stream=sections.train.stream_shuffle_buffer > 0)
    catalogue = data["catalogue"]
    vocab = _tft.TFTransformOutput(fn_args.transform_output).vocabulary_by_name("item_id")
    outside = {v.decode() if isinstance(v, bytes) else v for v in vocab} - set(catalogue.item_ids)
    name = _jobs.model_name(sections.model, kind)
    read = data["read_counts"]
    print(f"[learn pipeline] train {name}: {len(data['sequences']):,} sequences ({read.training_items:,} training "
          f"items streamed from {read.records:,} user records in {len(read.files)} shards, "
          f"{read.users_without_training:,} users without training items), {len(catalogue):,} items, "
          f"vocabulary {len(vocab):,} ({len(outside)} ids outside the catalogue)")
    towers = _jobs.build_towers(sections.model, sections.train.max_len, kind, catalogue, data["content"])
    # The trainer and save_towers write local files (checkpoints, curves, Keras weights): on an object
    # store they write into local folders that are uploaded afterwards, towers.json last.
    with _io.staged_dir(fn_args.model_run_dir) as run_dir:
        result = _trainer.train(towers, catalogue, data["sequences"], data["cases"],
                                _jobs.train_settings(sections.train, kind), output_dir=run_dir, verbose=0)
    # Under MultiWorkerMirroredStrategy (TF_CONFIG) every worker ends with the same weights; only the chief
    # publishes them, the others write to scratch.
    towers_out = _distribute.worker_output_dir(_os.path.join(fn_args.serving_model_dir, _data_io.TOWERS_SUBDIR))
    with _io.staged_dir(towers_out, last=(_jobs.TOWERS_FILE,)) as towers_dir:
        _jobs.save_towers(towers, catalogue, towers_dir,
                          {"kind": kind, "max_len": sections.train.max_len, "best_epoch": result.best_epoch,
                           "best_val_ndcg@10": result.best_metric, "model_config": _asdict(sections.model),
                           "embedding": _jobs.embedding_info(data["embedding_manifest"])})
    if not _distribute.is_chief():
        return
    _data_io.write_text(_os.path.join(fn_args.model_run_dir, "train_summary.json"), _json.dumps(
        {"name": name, "best_epoch": result.best_epoch, "best_val_ndcg@10": result.best_metric,
         "seconds": round(result.seconds, 1)}, indent=2))
    print(f"[learn pipeline] {name}: best validation NDCG@10 {result.best_metric:.4f} at epoch {result.best_epoch} "
          f"(training {result.seconds:.0f} s)")


def _run_cllm4rec(fn_args: "tfx.components.FnArgs", c: _CLLM4RecConfig, template: str) -> None:
    """Trains CLLM4Rec with `train_cllm4rec` (as `learn train --model cllm4rec`) into `<serving_model_dir>/cllm4rec/`."""
    cc = fn_args.custom_config
    items = _io.read_parquet(_os.path.join(cc["item_embeddings_uri"], _data_io.ITEMS_FILE))
    train = _read_splits(cc["split_uri"]).train
    curve = None
    if c.curve_users > 0:  # validation cases with their earlier items, from the Split and SequenceGen's shards
        cases = _training_data.load_streamed_data(cc["item_embeddings_uri"], cc["split_uri"], cc["sequences_uri"],
                                                  "validation", sequences=False)["cases"]
        curve = _cllm4rec_job.curve_cases(cases, c.curve_users)
    print(f"[learn pipeline] train {_cllm4rec_job.MODEL_NAME}: {len(train):,} training interactions, "
          f"{len(items):,} items, backbone {c.model}")
    out = _distribute.worker_output_dir(_os.path.join(fn_args.serving_model_dir, _data_io.CLLM4REC_SUBDIR))
    # train_cllm4rec writes local files (tables, curve, metadata after every epoch): on an object store into a
    # local folder uploaded afterwards, cllm4rec.json last.
    with _io.staged_dir(out, last=(_cllm4rec_store.META_FILE,)) as model_dir:
        summary = _cllm4rec_job.train_cllm4rec(c, items, train, template, model_dir, curve)[2]
    if not _distribute.is_chief():
        return
    _data_io.write_text(_os.path.join(fn_args.model_run_dir, "train_summary.json"), _json.dumps(
        {"name": _cllm4rec_job.MODEL_NAME, **summary}, indent=2, default=str))
    print(f"[learn pipeline] {_cllm4rec_job.MODEL_NAME}: {summary['epochs']} epochs in {summary['seconds']:.0f} s, "
          f"frozen weights unchanged: {summary['frozen_weights_unchanged']}")
