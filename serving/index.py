"""The top-k index of the retrieval exports: ScaNN tuning to a recall target, index building, recall.

ScaNN (`scann`, the `scann` extra) is optional: `scann_available()` says
whether a ScaNN index can be built; brute force always can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from learn_tf.config import ServingConfig


@dataclass(frozen=True)
class ScannSettings:
    """The ScaNN index parameters chosen for a catalogue (and how they were chosen)."""

    num_leaves: int
    num_leaves_to_search: int
    num_reordering_candidates: int
    measured_recall_at_10: Optional[float] = None


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
    # Local: scann is an optional extra (`pip install .[scann]`); only the ScaNN export needs it.
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


def scann_available() -> bool:
    """Whether `scann` imports (then a ScaNN index can be built and served)."""
    try:
        import scann  # noqa: F401  (local: an optional extra, imported only to test for it)
    except ImportError:
        return False
    return True


def tuning_vectors(towers: tf.keras.Model, items: np.ndarray, query_histories: Optional[np.ndarray]) -> np.ndarray:
    """[Q, d] float32 query vectors to tune ScaNN on.

    Args:
      towers: trained towers (`users` maps [B, max_len] index histories to [B, d]).
      items: [N, d] item-tower vectors of the catalogue.
      query_histories: [Q, max_len] index histories (e.g. real training
        histories); None or empty: 1,000 item vectors (seed 0) stand in.
    """
    if query_histories is not None and len(query_histories):
        queries = np.concatenate([towers.users(tf.constant(query_histories[s:s + 1024])).numpy()
                                  for s in range(0, len(query_histories), 1024)])
    else:
        queries = items[np.random.default_rng(0).choice(len(items), size=min(1000, len(items)), replace=False)]
    return queries.astype(np.float32)
