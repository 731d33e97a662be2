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

Each version is written to a temporary directory and renamed into place, with
warmup requests in `assets.extra/tf_serving_warmup_requests`; `models.config`
(all four models), `models.stock.config` (no ScaNN model, `/models/...` paths
for the stock Docker image) and `batching_parameters.txt` sit in the base.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from learn_tf.config import ServingConfig
from learn_tf.models.catalogue import Catalogue, item_matrix
from learn_tf.utils.io import atomic_open

USER_MODEL, ITEM_MODEL = "learn_user", "learn_item"
RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL = "learn_retrieval", "learn_retrieval_bf"
ALL_MODELS = (USER_MODEL, ITEM_MODEL, RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL)
MODELS_CONFIG, STOCK_MODELS_CONFIG, BATCHING_FILE = "models.config", "models.stock.config", "batching_parameters.txt"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


@dataclass(frozen=True)
class ScannSettings:
    """The ScaNN index parameters chosen for a catalogue (and how they were chosen)."""

    num_leaves: int
    num_leaves_to_search: int
    num_reordering_candidates: int
    measured_recall_at_10: Optional[float] = None


class _TowerModule(tf.Module):
    """Holds the towers and the id lookup; exposes the user and item serving functions."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int) -> None:
        super().__init__()
        self.towers = towers
        self.max_len = max_len
        # Index 0 = unknown id or padding (""); 1..N = catalogue order, as in training.
        self.lookup = tf.keras.layers.StringLookup(vocabulary=list(catalogue.item_ids), num_oov_indices=1)

    def _history_indices(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """[B, T] ids -> ([B, max_len] right-padded indices of the last known items, [B] known counts)."""
        idx = tf.cast(self.lookup(history), tf.int32)
        known = tf.ragged.boolean_mask(idx, idx > 0)  # unknown ids and "" padding dropped
        counts = tf.cast(known.row_lengths(), tf.int32)
        tf.debugging.assert_greater(counts, 0, message="every history row needs at least one known item id")
        dense = known[:, -self.max_len:].to_tensor(default_value=0, shape=[None, self.max_len])
        return dense, counts

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
    def user(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
        """[B, T] right-padded ("") history ids, oldest first -> user embeddings and known-item counts."""
        dense, counts = self._history_indices(history)
        return {"user_embedding": self.towers.users(dense), "known_items": counts}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="item_ids")])
    def item(self, item_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        """[N] item ids -> {"item_embedding": [N, d], "known": [N] bool}."""
        idx = tf.cast(self.lookup(item_ids), tf.int32)
        return {"item_embedding": self.towers.items(idx), "known": idx > 0}


class _RetrievalModule(_TowerModule):
    """Adds a top-k index over the item tower's catalogue vectors (indices 1..N as identifiers)."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int, index: tf.keras.Model,
                 max_k: int) -> None:
        super().__init__(towers, catalogue, max_len)
        self.index = index
        self.max_k = int(max_k)
        self.num_items = len(catalogue)
        self.item_id_table = tf.constant(np.asarray(catalogue.item_ids, dtype=object).astype(bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history"),
                                  tf.TensorSpec([None], tf.int32, name="k"),
                                  tf.TensorSpec([None], tf.bool, name="exclude_history")])
    def retrieve(self, history: tf.Tensor, k: tf.Tensor, exclude_history: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-k item ids and scores for each history (see the module docstring)."""
        batch = tf.shape(history)[0]
        tf.debugging.assert_equal(tf.shape(k)[0], batch, message="k needs one value per history row")
        tf.debugging.assert_equal(tf.shape(exclude_history)[0], batch,
                                  message="exclude_history needs one value per history row")
        tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1")
        tf.debugging.assert_less_equal(k, self.max_k, message=f"k must be <= max_k ({self.max_k})")
        dense, _ = self._history_indices(history)
        users = self.towers.users(dense)
        all_idx = tf.cast(self.lookup(history), tf.int32)  # the whole history is excluded, not only max_len
        width = tf.reduce_max(k)
        # Fetch enough candidates that excluding every seen item still leaves k.
        fetch = tf.minimum(width + tf.shape(history)[1], self.num_items)
        scores, cand = self.index(users, k=fetch)
        cand = tf.cast(cand, tf.int32)
        seen = tf.reduce_any((cand[:, :, None] == all_idx[:, None, :]) & (all_idx[:, None, :] > 0), axis=-1)
        scores = tf.where(seen & exclude_history[:, None], tf.constant(-np.inf, scores.dtype), scores)
        width = tf.minimum(width, fetch)
        top, pos = tf.math.top_k(scores, k=width)
        picked = tf.gather(cand, pos, batch_dims=1)
        valid = (tf.range(width)[None, :] < k[:, None]) & tf.math.is_finite(top)
        ids = tf.where(valid, tf.gather(self.item_id_table, tf.maximum(picked - 1, 0)), tf.constant(b""))
        return {"item_ids": ids, "scores": tf.where(valid, top, tf.constant(-np.inf, top.dtype))}


def _exact_top(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 32) -> np.ndarray:
    """[Q, k] exact top-k item rows by dot product, scored `chunk` queries at a time (bounded memory)."""
    out = []
    for s in range(0, len(queries), chunk):
        scores = queries[s:s + chunk] @ items.T
        part = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
        out.append(np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1), 1))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact top-k found in the approximate top-k."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def tune_scann(items: np.ndarray, queries: np.ndarray, serving: ServingConfig, k: int = 10,
               exact: Optional[np.ndarray] = None) -> ScannSettings:
    """Chooses ScaNN parameters for a catalogue: leaves ~ sqrt(N), leaves searched tuned to the recall target.

    The smallest number of leaves searched whose recall@k against exact search
    on `queries` reaches `serving.scann_recall_target` wins (explicit config
    values are kept as given). `exact`: the queries' exact top-k item rows,
    when the caller has them already.
    """
    import scann

    n = items.shape[0]
    leaves = serving.scann_num_leaves or max(1, min(n, int(round(math.sqrt(n)))))
    # Exact re-scoring of the candidates is cheap next to the search; too few caps recall at any leaf count.
    reorder = min(n, max(1000, 4 * serving.max_k))
    if serving.scann_leaves_to_search is not None:
        return ScannSettings(leaves, min(leaves, serving.scann_leaves_to_search), reorder)
    exact = _exact_top(queries, items, min(k, n)) if exact is None else exact
    searcher = (scann.scann_ops_pybind.builder(items, min(k, n), "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=leaves, training_sample_size=min(n, 100_000))
                .score_ah(2).reorder(reorder).build())  # the quantizer tfrs' ScaNN layer builds
    candidates = sorted({max(1, int(round(leaves * f))) for f in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)})
    for search in candidates:  # the last candidate searches every leaf
        got, _ = searcher.search_batched(queries, leaves_to_search=search, pre_reorder_num_neighbors=reorder,
                                         final_num_neighbors=min(k, n))
        r = recall_at_k(np.asarray(got), exact)
        if r >= serving.scann_recall_target:
            break
    return ScannSettings(leaves, search, reorder, r)


def build_index(kind: str, items: np.ndarray, max_k: int, scann: Optional[ScannSettings] = None) -> tf.keras.Model:
    """A TFRS top-k layer (ScaNN or BruteForce) over `items`, identified by catalogue index 1..N."""
    import tensorflow_recommenders as tfrs

    ids = tf.range(1, items.shape[0] + 1, dtype=tf.int32)
    if kind == "brute_force":
        return tfrs.layers.factorized_top_k.BruteForce(k=min(10, items.shape[0])).index(tf.constant(items), ids)
    if scann is None:
        raise ValueError("a ScaNN index needs ScannSettings (see tune_scann)")
    layer = tfrs.layers.factorized_top_k.ScaNN(
        k=min(10, items.shape[0]), num_leaves=scann.num_leaves, num_leaves_to_search=scann.num_leaves_to_search,
        num_reordering_candidates=scann.num_reordering_candidates, parallelize_batch_searches=True)
    return layer.index(tf.constant(items), ids)


def index_recall(index: tf.keras.Model, queries: np.ndarray, exact: np.ndarray) -> float:
    """Recall of a built top-k layer (identifiers 1..N) against `exact`, the queries' exact top-k item rows."""
    _, got = index(tf.constant(queries), k=exact.shape[1])
    return recall_at_k(np.asarray(got) - 1, exact)


def build_tuned_scann(items: np.ndarray, queries: np.ndarray, serving: ServingConfig, max_k: int,
                      max_rebuilds: int = 4) -> tuple[tf.keras.Model, ScannSettings]:
    """The ScaNN layer to export, with its recall verified on that very index.

    Starts from `tune_scann`'s choice; ScaNN's tree differs between builds, so
    when the built index misses `serving.scann_recall_target` on `queries`,
    leaves searched grow by half and the index is rebuilt (at most
    `max_rebuilds` times; explicit `serving.scann_leaves_to_search` is kept).
    The returned settings carry the recall measured on the returned index.
    """
    exact = _exact_top(queries, items, min(10, items.shape[0]))  # once: the tuner and every rebuild share it
    settings = tune_scann(items, queries, serving, exact=exact)
    for attempt in range(max_rebuilds + 1):
        index = build_index("scann", items, max_k, settings)
        recall = index_recall(index, queries, exact)
        settings = ScannSettings(settings.num_leaves, settings.num_leaves_to_search,
                                 settings.num_reordering_candidates, recall)
        if (recall >= serving.scann_recall_target or serving.scann_leaves_to_search is not None
                or settings.num_leaves_to_search >= settings.num_leaves or attempt == max_rebuilds):
            return index, settings
        grown = min(settings.num_leaves, max(settings.num_leaves_to_search + 1,
                                             int(math.ceil(settings.num_leaves_to_search * 1.5))))
        settings = ScannSettings(settings.num_leaves, grown, settings.num_reordering_candidates)
    raise AssertionError("unreachable")  # pragma: no cover


def _warmup_records(name: str, examples: Sequence[dict[str, np.ndarray]]) -> list[bytes]:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    out = []
    for inputs in examples:
        req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default"))
        for key, value in inputs.items():
            req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        out.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())
    return out


def attach_transform(module: tf.Module, transform_output: str) -> Any:
    """Attaches a TFX Transform graph to `module`; returns its `transform_features` serving function.

    The function takes serialized raw `tf.Example`s (`examples` [N] string, the
    pipeline's interaction features) and returns the transformed features
    (vocabulary indices and pass-through fields), exactly as in training. The
    transform graph's variables and vocabulary assets are saved inside the
    SavedModel.
    """
    import tensorflow_transform as tft

    tft_output = tft.TFTransformOutput(transform_output)
    module.tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples: tf.Tensor) -> dict[str, tf.Tensor]:
        out = module.tft_layer(tf.io.parse_example(examples, raw_spec))
        return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v) for k, v in out.items()}

    return transform_features


def _save(module: tf.Module, fn: Any, base: str, name: str, version: int, warmup: Sequence[dict[str, np.ndarray]],
          scann: bool = False, transform_output: Optional[str] = None) -> str:
    final = os.path.join(base, name, str(version))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; export a new version instead of overwriting")
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=os.path.dirname(final))
    try:
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if scann else None
        signatures = {"serving_default": fn}
        if transform_output:
            signatures["transform_features"] = attach_transform(module, transform_output)
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(tmp, WARMUP_FILE)) as w:
            for rec in _warmup_records(name, warmup):
                w.write(rec)
        os.rename(tmp, final)  # TF Serving never sees a half-written version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def next_version(base: str, names: Sequence[str] = ALL_MODELS) -> int:
    """One above the highest version of any of `names` under `base` (1 for an empty base)."""
    existing = [int(v) for n in names if os.path.isdir(os.path.join(base, n))
                for v in os.listdir(os.path.join(base, n)) if v.isdigit()]
    return max(existing, default=0) + 1


def write_models_config(base: str, names: Sequence[str] = ALL_MODELS) -> str:
    """Writes `models.config` (absolute paths), `models.stock.config` and `batching_parameters.txt`."""
    def config(entries: Sequence[tuple[str, str]]) -> str:
        body = "".join(f'  config {{\n    name: "{n}"\n    base_path: "{p}"\n    model_platform: "tensorflow"\n'
                       "    model_version_policy { latest { num_versions: 1 } }\n  }\n" for n, p in entries)
        return "model_config_list {\n" + body + "}\n"

    base = os.path.abspath(base)
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


def _warmup_inputs(catalogue: Catalogue, n: int) -> tuple[list[dict[str, np.ndarray]], ...]:
    ids = list(catalogue.item_ids)
    rng = np.random.default_rng(0)
    users, items, retr = [], [], []
    for r in range(max(1, n)):
        hist = np.array([[ids[i] for i in rng.choice(len(ids), size=min(3, len(ids)), replace=False)]], dtype=object)
        users.append({"history": hist.astype(bytes)})
        items.append({"item_ids": np.array([ids[r % len(ids)]], dtype=object).astype(bytes)})
        retr.append({"history": hist.astype(bytes), "k": np.array([10], np.int32),
                     "exclude_history": np.array([True])})
    return users, items, retr


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
        every model as the `transform_features` signature (see `attach_transform`).

    Returns:
      {model name: version path, ..., "version": int, "scann": ScannSettings or None, "seconds": float}.
    """
    t0 = time.time()
    serving = serving or ServingConfig()
    if include_scann is None:
        try:
            import scann  # noqa: F401
            include_scann = True
        except ImportError:
            include_scann = False
    version = version or next_version(base)
    items = item_matrix(towers, len(catalogue), batch_size=4096).astype(np.float32)
    max_k = min(serving.max_k, len(catalogue))
    users_w, items_w, retr_w = _warmup_inputs(catalogue, serving.warmup_requests)
    paths: dict[str, Any] = {}
    tower_module = _TowerModule(towers, catalogue, max_len)
    tx = transform_output
    paths[USER_MODEL] = _save(tower_module, tower_module.user, base, USER_MODEL, version, users_w,
                              transform_output=tx)
    paths[ITEM_MODEL] = _save(tower_module, tower_module.item, base, ITEM_MODEL, version, items_w,
                              transform_output=tx)
    bf = _RetrievalModule(towers, catalogue, max_len, build_index("brute_force", items, max_k), max_k)
    paths[RETRIEVAL_BF_MODEL] = _save(bf, bf.retrieve, base, RETRIEVAL_BF_MODEL, version, retr_w,
                                      transform_output=tx)
    settings = None
    if include_scann:
        if query_histories is not None and len(query_histories):
            queries = np.concatenate([towers.users(tf.constant(query_histories[s:s + 1024])).numpy()
                                      for s in range(0, len(query_histories), 1024)])
        else:
            queries = items[np.random.default_rng(0).choice(len(items), size=min(1000, len(items)), replace=False)]
        index, settings = build_tuned_scann(items, queries.astype(np.float32), serving, max_k)
        sc = _RetrievalModule(towers, catalogue, max_len, index, max_k)
        paths[RETRIEVAL_MODEL] = _save(sc, sc.retrieve, base, RETRIEVAL_MODEL, version, retr_w, scann=True,
                                       transform_output=tx)
    write_models_config(base, [n for n in ALL_MODELS if n in paths])
    paths.update({"version": version, "scann": settings, "seconds": time.time() - t0})
    return paths


def export_towers(towers: tf.keras.Model, catalogue: Catalogue, max_len: int, base: str,
                  version: Optional[int] = None) -> dict[str, str]:
    """Writes only `learn_user` and `learn_item` SavedModels under `base`; returns their paths."""
    version = version or next_version(base, (USER_MODEL, ITEM_MODEL))
    module = _TowerModule(towers, catalogue, max_len)
    users_w, items_w, _ = _warmup_inputs(catalogue, 1)
    return {USER_MODEL: _save(module, module.user, base, USER_MODEL, version, users_w),
            ITEM_MODEL: _save(module, module.item, base, ITEM_MODEL, version, items_w)}
