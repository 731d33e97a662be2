"""SavedModel exports of the trained towers with explicit, string-id signatures, in TF Serving layout.

Models (each `<base>/<model_name>/<version>/`, signature `serving_default`):

- `learn_user`: `history` [B, T] string (oldest first, right-padded with "")
  -> `user_embedding` [B, d] float32, `known_items` [B] int32.
- `learn_item`: `item_ids` [N] string -> `item_embedding` [N, d] float32, `known` [N] bool.
- `learn_retrieval` (ScaNN index) and `learn_retrieval_bf` (exact, brute force;
  serves on the stock `tensorflow_model_server`, which lacks ScaNN ops):
  `history` [B, T] string, `k` [B] int32, `exclude_history` [B] bool
  -> `item_ids` [B, K] string, `scores` [B, K] float32 with K = max(k) over
  the batch; row i holds its top k[i] items, then "" / -inf padding.

Clients pass item ids: the id -> index lookup, the frozen content table and
the index ship inside each SavedModel, so no LLM runs at request time. Unknown
history ids are ignored (counted in `known_items`); a row with no known item
is an INVALID_ARGUMENT error, as is k outside [1, max_k].

Each version is written to a temporary directory and renamed into place (on an
object store: uploaded with `saved_model.pb` last, see `serving.layout`), with
warmup requests in `assets.extra/tf_serving_warmup_requests`; `models.config`
(all four models), `models.stock.config` (no ScaNN model, `/models/...` paths
for the stock Docker image) and `batching_parameters.txt` sit in the base.

This module is the one export path (`learn export`, `learn add-items`, the TFX
pipeline): the modules and signatures are in `serving.signatures`, the top-k
index and its ScaNN tuning in `serving.index`, the layout in `serving.layout`.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.config import ServingConfig
from learn_tf.models.catalogue import Catalogue, item_matrix, tuning_queries
from learn_tf.training.jobs import load_towers
from learn_tf.utils import io
from serving.index import build_index, build_tuned_scann, scann_available, tuning_vectors
from serving.layout import (ALL_MODELS, ITEM_MODEL, RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL, USER_MODEL, next_version,
                            save_version, write_models_config)
from serving.signatures import RetrievalModule, TowerModule, serving_signatures, warmup_inputs


def export_serving_models(towers: tf.keras.Model, catalogue: Catalogue, max_len: int, base: str,
                          version: Optional[int] = None, serving: Optional[ServingConfig] = None,
                          query_histories: Optional[np.ndarray] = None, include_scann: Optional[bool] = None,
                          transform_output: Optional[str] = None) -> dict[str, Any]:
    """Writes `learn_user`, `learn_item`, `learn_retrieval` (ScaNN) and `learn_retrieval_bf` under `base`.

    Args:
      towers: trained towers (LearnTowers or SASRecTowers).
      catalogue: the id order the towers were built with.
      max_len: history length of the user tower (longer histories keep the last items).
      base: TF Serving model base directory.
      version: version number (default: one above the highest existing in `base`).
      serving: index and limit settings (default `ServingConfig()`).
      query_histories: [Q, max_len] index histories used to tune ScaNN's leaves
        searched (default: item vectors stand in for queries).
      include_scann: export the ScaNN model (default: when `scann` imports).
      transform_output: a TFX Transform output directory; its graph ships inside
        every model as the `transform_features` signature (see `serving.signatures.attach_transform`).

    Returns:
      {model name: version path, ..., "version": int, "scann": ScannSettings or None, "seconds": float}.
    """
    t0 = time.time()
    serving = serving or ServingConfig()
    if include_scann is None:
        include_scann = scann_available()
    version = version or next_version(base)
    items = item_matrix(towers, len(catalogue), batch_size=4096).astype(np.float32)
    max_k = min(serving.max_k, len(catalogue))
    users_w, items_w, retr_w = warmup_inputs(catalogue, serving.warmup_requests)
    paths: dict[str, Any] = {}
    tower_module = TowerModule(towers, catalogue, max_len)
    tx = transform_output
    paths[USER_MODEL] = save_version(tower_module, serving_signatures(tower_module, tower_module.user, tx), base,
                                     USER_MODEL, version, users_w)
    paths[ITEM_MODEL] = save_version(tower_module, serving_signatures(tower_module, tower_module.item, tx), base,
                                     ITEM_MODEL, version, items_w)
    bf = RetrievalModule(towers, catalogue, max_len, build_index("brute_force", items, max_k), max_k)
    paths[RETRIEVAL_BF_MODEL] = save_version(bf, serving_signatures(bf, bf.retrieve, tx), base, RETRIEVAL_BF_MODEL,
                                             version, retr_w)
    settings = None
    if include_scann:
        queries = tuning_vectors(towers, items, query_histories)
        index, settings = build_tuned_scann(items, queries, serving, max_k)
        sc = RetrievalModule(towers, catalogue, max_len, index, max_k)
        paths[RETRIEVAL_MODEL] = save_version(sc, serving_signatures(sc, sc.retrieve, tx), base, RETRIEVAL_MODEL,
                                              version, retr_w, scann=True)
    write_models_config(base, [n for n in ALL_MODELS if n in paths])
    paths.update({"version": version, "scann": settings, "seconds": time.time() - t0})
    return paths


def export_towers(towers: tf.keras.Model, catalogue: Catalogue, max_len: int, base: str,
                  version: Optional[int] = None) -> dict[str, str]:
    """Writes only `learn_user` and `learn_item` SavedModels under `base`; returns their paths."""
    version = version or next_version(base, (USER_MODEL, ITEM_MODEL))
    module = TowerModule(towers, catalogue, max_len)
    users_w, items_w, _ = warmup_inputs(catalogue, 1)
    return {USER_MODEL: save_version(module, serving_signatures(module, module.user), base, USER_MODEL, version,
                                     users_w),
            ITEM_MODEL: save_version(module, serving_signatures(module, module.item), base, ITEM_MODEL, version,
                                     items_w)}


def export_trained(model_dir: str, base: str, settings: ServingConfig, train: Optional[pd.DataFrame],
                   version: Optional[int] = None, extra_items: Optional[tuple[Sequence[str], np.ndarray]] = None,
                   transform_output: Optional[str] = None) -> dict[str, Any]:
    """Loads trained towers (`save_towers` output), optionally extended by onboarded items, and exports every model.

    Args:
      model_dir: the trained towers' directory (towers.json, catalogue.txt, weights).
      base: TF Serving model base directory.
      settings: index and limit settings.
      train: the split's training interactions (user_id, item_id, position):
        ScaNN is tuned on these users' histories (`tuning_queries`), the same
        queries for `learn export`, `learn add-items` and the TFX Pusher;
        None: item vectors stand in (see `export_serving_models`).
      version: version number (default: one above the highest existing in `base`).
      extra_items: (new item ids, [M, content_dim] content vectors) appended to
        the catalogue at indices N+1.. without retraining (LEARN towers only).
      transform_output: a TFX Transform output directory to ship inside every
        model (see `export_serving_models`).

    Returns:
      As `export_serving_models`.

    Raises:
      FileNotFoundError: `model_dir` holds no trained towers.
      ValueError: `extra_items` for towers that cannot score unseen items (SASRec).
    """
    with io.local_copy(model_dir) as local:  # load_towers reads local files; a URI is downloaded first
        towers, catalogue, meta = load_towers(local)
    max_len = int(meta["max_len"])
    queries = tuning_queries(catalogue, train, max_len) if train is not None else None
    if extra_items is not None and len(extra_items[0]):
        ids, rows = extra_items
        if not hasattr(towers, "with_extra_items"):
            raise ValueError(f"{model_dir} holds a {type(towers).__name__} model, which cannot score items it never "
                             "saw in training; onboard items with a LEARN model (content-based item tower)")
        towers = towers.with_extra_items(np.asarray(rows, np.float32))
        catalogue = catalogue.extended(ids)
    return export_serving_models(towers, catalogue, max_len, base, version=version, serving=settings,
                                 query_histories=queries, transform_output=transform_output)
