"""The Trainer module: `run_fn` builds, trains and exports LEARN with learn_tf.

`custom_config` carries the whole config (`config`, as plain data; its
`model` and `train` sections are the hyperparameters), the model kind and,
injected by LearnTrainer's executor, `item_embeddings_uri`. Outputs:
`<serving_model_dir>/towers/` (weights, towers.json, catalogue.txt, for the
evaluator) and `<serving_model_dir>/serving/<name>/1/` (SavedModels with
explicit signatures in TF Serving layout; the transform graph ships inside
each as the `transform_features` signature); training curves in `model_run_dir`.
"""

from __future__ import annotations

import learn_tf as _learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

__all__ = ["run_fn"]


def _export(towers: "tf.keras.Model", catalogue: "Catalogue", max_len: int, base: str, serving: "ServingConfig",
            transform_output: str, version: int = 1) -> dict:
    from serving.export import export_serving_models

    return export_serving_models(towers, catalogue, max_len, base, version=version, serving=serving,
                                 transform_output=transform_output)


def run_fn(fn_args: "tfx.components.FnArgs") -> None:
    """TFX Trainer entry point: trains the configured model kind and writes the serving exports."""
    import json
    import os
    import time

    import tensorflow as tf
    import tensorflow_transform as tft

    from learn_tf.config import config_from_dict
    from learn_tf.training.jobs import build_towers, model_name, save_towers, train_settings
    from learn_tf.training.trainer import train
    from tfx_pipeline import data_io
    from tfx_pipeline.training_data import load_pipeline_data

    cc = dict(fn_args.custom_config or {})
    cfg = config_from_dict(cc["config"], "<Trainer custom_config>")
    kind = cc.get("model_kind") or cfg.pipeline.model_kind
    files = sorted(f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern))
    interactions = data_io.interactions_frame(data_io.read_examples(files))
    data = load_pipeline_data(cfg, interactions, cc["item_embeddings_uri"])
    catalogue = data["catalogue"]
    vocab = tft.TFTransformOutput(fn_args.transform_output).vocabulary_by_name("item_id")
    outside = {v.decode() if isinstance(v, bytes) else v for v in vocab} - set(catalogue.item_ids)
    name = model_name(cfg, kind)
    print(f"[learn pipeline] train {name}: {len(data['sequences']):,} sequences, {len(catalogue):,} items, "
          f"vocabulary {len(vocab):,} ({len(outside)} ids outside the catalogue, "
          f"{data['unknown_dropped']:,} interactions dropped)")
    towers = build_towers(cfg, kind, catalogue, data["content"])
    result = train(towers, catalogue, data["sequences"], data["cases"]("validation"), train_settings(cfg, verbose=0),
                   output_dir=fn_args.model_run_dir)
    save_towers(towers, catalogue, os.path.join(fn_args.serving_model_dir, data_io.TOWERS_SUBDIR),
                {"kind": kind, "name": name, "max_len": cfg.train.max_len, "best_epoch": result.best_epoch,
                 "best_val_ndcg@10": result.best_metric, "model_config": cc["config"]["model"],
                 "embedding_run_id": data["embedding_manifest"]["run_id"]})
    t_export = time.time()
    # The transform graph ships inside every serving model (signature `transform_features`).
    paths = _export(towers, catalogue, cfg.train.max_len,
                    os.path.join(fn_args.serving_model_dir, data_io.SERVING_SUBDIR),
                    cfg.serving, fn_args.transform_output)
    export_seconds = time.time() - t_export
    with open(os.path.join(fn_args.model_run_dir, "train_summary.json"), "w", encoding="utf-8") as f:
        json.dump({"name": name, "best_epoch": result.best_epoch, "best_val_ndcg@10": result.best_metric,
                   "seconds": round(result.seconds, 1), "export_seconds": round(export_seconds, 1)}, f, indent=2)
    print(f"[learn pipeline] {name}: best validation NDCG@10 {result.best_metric:.4f} at epoch {result.best_epoch} "
          f"(training {result.seconds:.0f} s, export {export_seconds:.0f} s)")
