"""TF Serving layout of the exports: model names, version directories, `models.config`, warmup records.

Each model version is `<base>/<model_name>/<version>/`, written to a temporary
`.<version>.tmp-*` directory and renamed into place (TF Serving never sees a
half-written version); on an object store (`gs://`, `s3://`) it is saved
locally and uploaded with `saved_model.pb` last (a version is loadable only
once that file is there), with warmup requests in
`assets.extra/tf_serving_warmup_requests`. `models.config` (all models),
`models.stock.config` (no ScaNN model, `/models/...` paths for the stock
Docker image) and `batching_parameters.txt` sit in the base.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Mapping, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from learn_tf.utils import io
from learn_tf.utils.io import atomic_open

USER_MODEL, ITEM_MODEL = "learn_user", "learn_item"
RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL = "learn_retrieval", "learn_retrieval_bf"
ALL_MODELS = (USER_MODEL, ITEM_MODEL, RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL)
MODELS_CONFIG, STOCK_MODELS_CONFIG, BATCHING_FILE = "models.config", "models.stock.config", "batching_parameters.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SAVED_MODEL_FILE = "saved_model.pb"


def _warmup_records(name: str, examples: Sequence[dict[str, np.ndarray]]) -> list[bytes]:
    """Serialized `PredictionLog`s of `serving_default` PredictRequests to model `name`, one per example."""
    out = []
    for inputs in examples:
        req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default"))
        for key, value in inputs.items():
            req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        out.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())
    return out


def save_version(module: tf.Module, signatures: Mapping[str, Any], base: str, name: str, version: int,
                 warmup: Sequence[dict[str, np.ndarray]], scann: bool = False) -> str:
    """Saves `module` as `<base>/<name>/<version>/` with `signatures` and warmup requests; returns the path.

    Args:
      module: the tf.Module to save.
      signatures: signature key -> tf.function (`serving_default` first).
      base: TF Serving model base.
      name: model name.
      version: version number.
      warmup: `serving_default` input dicts replayed by the server before it serves the version.
      scann: the module holds ScaNN ops (their namespace is allowed in the SavedModel).

    Raises:
      FileExistsError: the version exists (versions are never overwritten).
    """
    final = os.path.join(base, name, str(version))
    if io.exists(final):
        raise FileExistsError(f"{final} exists; export a new version instead of overwriting")
    if io.is_uri(base):
        # Object store: no directory rename; save locally (scratch), upload with saved_model.pb last.
        with tempfile.TemporaryDirectory(prefix=f".{version}.tmp-") as tmp:  # local scratch, then uploaded
            _save(module, signatures, tmp, name, warmup, scann)
            io.copy_tree(tmp, final, last=(SAVED_MODEL_FILE,))
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)  # local model base
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=os.path.dirname(final))  # beside the version (local)
    try:
        _save(module, signatures, tmp, name, warmup, scann)
        os.rename(tmp, final)  # TF Serving never sees a half-written version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the local temporary directory, if the rename did not happen
    return final


def _save(module: tf.Module, signatures: Mapping[str, Any], directory: str, name: str,
          warmup: Sequence[dict[str, np.ndarray]], scann: bool) -> None:
    """The SavedModel and its warmup records in one (local) directory."""
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if scann else None
    tf.saved_model.save(module, directory, signatures=dict(signatures), options=options)
    os.makedirs(os.path.join(directory, "assets.extra"), exist_ok=True)  # `directory` is local (see callers)
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILE)) as w:
        for rec in _warmup_records(name, warmup):
            w.write(rec)


def next_version(base: str, names: Sequence[str] = ALL_MODELS) -> int:
    """One above the highest version of any of `names` under `base` (1 for an empty base)."""
    existing = [int(v) for n in names if io.isdir(os.path.join(base, n))
                for v in io.listdir(os.path.join(base, n)) if v.isdigit()]
    return max(existing, default=0) + 1


def write_models_config(base: str, names: Sequence[str] = ALL_MODELS) -> str:
    """Writes `models.config` (absolute paths), `models.stock.config` and `batching_parameters.txt`."""
    def config(entries: Sequence[tuple[str, str]]) -> str:
        body = "".join(f'  config {{\n    name: "{n}"\n    base_path: "{p}"\n    model_platform: "tensorflow"\n'
                       "    model_version_policy { latest { num_versions: 1 } }\n  }\n" for n, p in entries)
        return "model_config_list {\n" + body + "}\n"

    base = base if io.is_uri(base) else os.path.abspath(base)
    with atomic_open(os.path.join(base, MODELS_CONFIG)) as f:
        f.write(config([(n, os.path.join(base, n)) for n in names]))
    with atomic_open(os.path.join(base, STOCK_MODELS_CONFIG)) as f:
        f.write(config([(n, f"/models/{n}") for n in names if n != RETRIEVAL_MODEL]))
    with atomic_open(os.path.join(base, BATCHING_FILE)) as f:
        f.write("# TF Serving --enable_batching --batching_parameters_file=<this file>.\n"
                "# pad_variable_length_inputs stays off: TF Serving pads with the batch's first value, which\n"
                "# would add a real item id to histories. With batching on, clients send histories padded\n"
                "# with \"\" to one fixed width (serving.client.retrieve(..., pad_to=...)).\n"
                "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
                "max_enqueued_batches { value: 256 }\nnum_batch_threads { value: 2 }\n")
    return os.path.join(base, MODELS_CONFIG)
