"""The top-k index of the retrieval exports: ScaNN tuning to a recall target, index building, recall.

ScaNN (`scann`, the `scann` extra) is optional: `scann_available()` says
whether a ScaNN index can be built; brute force always can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

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


class ExactTopK(tf.keras.layers.Layer):
    """Exact top-k by dot product over a fixed item matrix: tfrs' `BruteForce`, ranked in two stages.

    `call(queries, k)` returns (scores [B, k], identifiers 1..N [B, k]), the same values and
    identifiers as `tf.math.top_k` over all N scores (ties go to the lower index, as there). The
    N scores of a row are cut into blocks of `block` items (about sqrt(N)); the k + 1 blocks with
    the highest maxima hold the k best items, so the second `top_k` ranks only their (k + 1) x
    block scores instead of N. One extra block covers the last block, whose padding rows (zeros)
    may lift its maximum; padded positions are masked out. `tf.math.top_k` over 1M scores costs
    about as much per row as the whole batched product, so this is what lets a batch of rows
    share most of the work. With (k + 1) x block x 2 > N (small catalogues, large k) a single
    `top_k` over the masked scores is used. Only stock TensorFlow ops: the stock
    `tensorflow_model_server` serves it.
    """

    def __init__(self, items: np.ndarray, block: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        n, d = items.shape
        if n < 1:
            raise ValueError("ExactTopK needs at least one item")
        self.num_items = int(n)
        self.block = int(block or max(1, int(round(math.sqrt(n)))))
        self.num_blocks = -(-self.num_items // self.block)
        padded = np.zeros((self.num_blocks * self.block, d), np.float32)
        padded[:n] = items
        self.items = tf.Variable(padded, trainable=False, name="items")

    def call(self, queries: tf.Tensor, k: Any = 10) -> tuple[tf.Tensor, tf.Tensor]:  # noqa: ANN401 - int or tensor
        """[B, d] queries -> (top-k scores [B, k], item identifiers 1..N [B, k]), best first."""
        k = tf.cast(k, tf.int32)
        scores = tf.linalg.matmul(queries, self.items, transpose_b=True)  # [B, num_blocks * block]
        n, block, blocks = self.num_items, self.block, self.num_blocks
        padding = blocks * block - n

        def two_stage() -> tuple[tf.Tensor, tf.Tensor]:
            rows = tf.shape(scores)[0]
            by_block = tf.reshape(scores, [rows, blocks, block])
            _, best = tf.math.top_k(tf.reduce_max(by_block, axis=2), k=k + 1)
            best = tf.sort(best, axis=1)  # in item order, so ties still go to the lower index
            cand = tf.gather(by_block, best, batch_dims=1)  # [B, k + 1, block]
            index = best[:, :, None] * block + tf.range(block)[None, None, :]
            cand = tf.where(index < n, cand, tf.constant(-np.inf, cand.dtype))
            values, pos = tf.math.top_k(tf.reshape(cand, [rows, -1]), k=k)
            return values, tf.gather(tf.reshape(index, [rows, -1]), pos, batch_dims=1)

        def single() -> tuple[tf.Tensor, tf.Tensor]:
            masked = scores
            if padding:
                masked = tf.where(tf.range(blocks * block)[None, :] < n, scores, tf.constant(-np.inf, scores.dtype))
            values, index = tf.math.top_k(masked, k=k)
            return values, index

        values, index = tf.cond((k + 1) * block * 2 <= n, two_stage, single)
        return values, index + 1


def build_index(kind: str, items: np.ndarray, max_k: int, scann: Optional[ScannSettings] = None) -> tf.keras.Model:
    """The top-k layer over `items`, identified by catalogue index 1..N: `ExactTopK` or TFRS' ScaNN."""
    ids = tf.range(1, items.shape[0] + 1, dtype=tf.int32)
    if kind == "brute_force":
        return ExactTopK(np.asarray(items, np.float32))
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
