"""One loaded SavedModel version: loading (custom ops, SignatureDefs, signatures) and warm-up.

A version is a `<base>/<model_name>/<version>/` SavedModel directory. Its
warmup requests (`assets.extra/tf_serving_warmup_requests`, as TF Serving reads
them) are replayed before it is served; a failing request fails the version.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import tensorflow as tf
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from serving.layout import WARMUP_FILE
from serving.tensor_codec import RequestError, Signature, run_predict

MAX_WARMUP_RECORDS = 1000  # TF Serving's limit

_log = logging.getLogger("learn_tf.serving")

_custom_ops_registered = False


def _register_custom_ops() -> None:
    """Imports ScaNN so its TF ops are registered before a SavedModel using them is loaded."""
    global _custom_ops_registered
    if _custom_ops_registered:
        return
    _custom_ops_registered = True
    try:
        # Local: scann is an optional extra (`pip install .[scann]`); importing it registers its TF ops.
        import scann  # noqa: F401
    except ImportError:
        _log.info("scann is not installed: SavedModels with ScaNN ops will fail to load")
    except Exception as e:  # a broken op library must not stop the server serving other models
        _log.warning("importing scann failed (%s): SavedModels with ScaNN ops will fail to load", e)


@dataclass(frozen=True)
class Servable:
    """One loaded version of a model: the loaded object (kept alive), its signatures and SignatureDefs."""

    name: str
    version: int
    path: str
    loaded: Any
    signatures: dict[str, Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap


def _read_signature_defs(path: str) -> get_model_metadata_pb2.SignatureDefMap:
    """The serving MetaGraph's SignatureDefs, as TF Serving returns them in GetModelMetadata."""
    saved_model = saved_model_pb2.SavedModel()
    pb, pbtxt = os.path.join(path, "saved_model.pb"), os.path.join(path, "saved_model.pbtxt")
    try:
        if os.path.exists(pb):
            with open(pb, "rb") as f, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # the protobuf parser only warns on some garbage
                saved_model.ParseFromString(f.read())
            if caught:
                raise DecodeError(str(caught[0].message))
        elif os.path.exists(pbtxt):
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved_model)
        else:
            raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {path}")
    except (DecodeError, text_format.ParseError) as e:
        raise ValueError(f"{path} does not hold a valid SavedModel: {e}") from e
    graphs: list[meta_graph_pb2.MetaGraphDef] = list(saved_model.meta_graphs)
    serve = [g for g in graphs if "serve" in g.meta_info_def.tags] or graphs
    if not serve:
        raise ValueError(f"{path} does not hold a valid SavedModel: no MetaGraph")
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in serve[0].signature_def.items():
        result.signature_def[key].CopyFrom(sig)
    return result


def load_servable(name: str, version: int, path: str) -> Servable:
    """Loads one SavedModel version and indexes its signatures (raises on any failure)."""
    _register_custom_ops()
    signature_defs = _read_signature_defs(path)
    loaded = tf.saved_model.load(path, tags=["serve"])
    signatures: dict[str, Signature] = {}
    for key, fn in loaded.signatures.items():
        args, kwargs = fn.structured_input_signature
        if args:
            raise ValueError(f"signature {key!r} takes positional inputs; serving signatures take named inputs")
        outputs = fn.structured_outputs
        if not isinstance(outputs, dict):
            raise ValueError(f"signature {key!r} does not return a dict of named outputs")
        signatures[key] = Signature(fn=fn, inputs=dict(kwargs), outputs=tuple(sorted(outputs)))
    if not signatures:
        raise ValueError(f"SavedModel at {path} has no signatures")
    return Servable(name, version, path, loaded, signatures, signature_defs)


def warm_up(servable: Servable, max_elements: int) -> int:
    """Replays the version's warmup PredictRequests (as TF Serving does); raises if one fails."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"warmup record {count}: only predict_log records are supported")
        try:
            run_predict(servable, log.predict_log.request, max_elements)
        except RequestError as e:
            raise ValueError(f"warmup request {count} failed: {e.code.name}: {e.message}") from e
        count += 1
    return count
