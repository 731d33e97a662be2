"""The training loop: Adam(W) with a constant or warmup/cosine schedule, optional in-batch
pretraining stage, early stopping on validation NDCG@10, best-weights checkpoints,
TensorBoard logs, training curves and a collapse guard. Settings: the config's `TrainConfig`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.config import TrainConfig
from learn_tf.embeddings.postprocess import mean_pairwise_cosine
from learn_tf.models.catalogue import Catalogue, TowerScorer, UnknownItemError, check_towers_fit
from learn_tf.models.retrieval_model import RetrievalModel
from learn_tf.models.task import resolve_negatives
from learn_tf.training.distribute import distributed_towers, worker_output_dir
from learn_tf.training.inputs import (RecordSequences, SequencesLike, TrainingSequences, as_packed,
                                      as_training_sequences, item_counts)
from learn_tf.training.sampler import Sampler, make_sampler
from learn_tf.training.schedule import WarmupCosine
from learn_tf.utils.io import atomic_path, write_json


class CollapseError(RuntimeError):
    """Training collapsed: every user and item vector became the same."""


@dataclass
class TrainResult:
    """What training produced."""

    model: RetrievalModel
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    stopped_early: bool
    seconds: float
    # Wall time from the start of `train` to the end of the best epoch (evaluation included).
    best_seconds: float = 0.0
    # `train.cold_ids: ridge`: the chosen L2 strength and the validation NDCG@10 of each tried.
    cold_ids: Optional[dict[str, Any]] = None


# L2 strengths `train.cold_ids: ridge` tries on validation (content vectors are unit-norm).
COLD_RIDGE_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def item_log_frequencies(sequences: TrainingSequences, num_items: int) -> np.ndarray:
    """[N + 1] log of each item index's share of training interactions (add-one smoothed)."""
    counts = item_counts(sequences, num_items).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


def epoch_dataset(sampler: Sampler, batch_size: int) -> tf.data.Dataset:
    """Batches of a fresh epoch (`sampler.epoch_batches`) each time the dataset is iterated; rows are
    filled a batch at a time, so memory holds the packed sequences, never the epoch's arrays."""
    n_t, n_h = sampler.target_slots, sampler.query_slots
    if sampler.mode == "next_item":
        sig = {"history": tf.TensorSpec([None, sampler.max_len], tf.int32),
               "labels": tf.TensorSpec([None, sampler.max_len], tf.int32)}
    else:
        sig = {
            "history": tf.TensorSpec([None, sampler.max_len], tf.int32),
            "query_positions": tf.TensorSpec([None, n_h], tf.int32),
            "targets": tf.TensorSpec([None, n_t], tf.int32),
            "pair_mask": tf.TensorSpec([None, n_h, n_t], tf.bool),
        }

    def gen():
        yield from sampler.epoch_batches(batch_size)

    return tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)


@dataclass
class TrainingSetup:
    """The compiled model, its sampler and dataset, as `train` runs them (also used by benchmarks)."""

    model: RetrievalModel
    sampler: Sampler
    dataset: tf.data.Dataset
    steps_per_epoch: int


def negatives_mode(settings: TrainConfig, num_items: int, sampling: Optional[str] = None) -> str:
    """The task's negatives: "dense" (in-batch all-action) for the dense/window/official samplings,
    else `settings.negatives` resolved by catalogue size."""
    if (sampling or settings.sampling) != "next_item":
        return "dense"
    return resolve_negatives(settings.negatives, num_items, settings.full_softmax_max_items)


def seen_items(train_sequences: TrainingSequences, num_items: int) -> np.ndarray:
    """[N + 1] bool: item indices that occur in training (the only items trained as candidates)."""
    seen = item_counts(train_sequences, num_items) > 0
    seen[0] = False
    return seen


def content_neighbours(content: np.ndarray, candidates: np.ndarray, k: int, temperature: float,
                       chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `k` nearest candidate items by content cosine (itself excluded) and softmax weights.

    Args:
      content: [N, dim] item content vectors (item index i + 1 in row i).
      candidates: [N + 1] bool, the items that may be neighbours (index 0 is padding).
      k: neighbours per item (at most the candidates other than the item).
      temperature: weights are softmax(cosine / temperature) over the k.

    Returns:
      ([N + 1, k] int32 item indices, [N + 1, k] float32 weights summing to 1 per row); row 0 is unused.
    """
    x = np.asarray(content, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    allowed = np.asarray(candidates, bool)[1:]
    k = int(min(k, max(int(allowed.sum()) - 1, 1)))
    ids = np.ones((n + 1, k), np.int32)
    weights = np.full((n + 1, k), 1.0 / k, np.float32)
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T  # [c, N]
        sims[:, ~allowed] = -np.inf
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        top = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, 1), np.take_along_axis(top_sims, order, 1)
        z = np.exp((top_sims - top_sims[:, :1]) / temperature)
        ids[start + 1:start + 1 + len(sims)] = top + 1
        weights[start + 1:start + 1 + len(sims)] = z / z.sum(axis=1, keepdims=True)
    return ids, weights


def _optimizer(settings: TrainConfig, steps_per_epoch: int, epochs: int) -> tf.keras.optimizers.Optimizer:
    total = steps_per_epoch * epochs
    lr: Any = settings.learning_rate
    if settings.schedule == "cosine":
        lr = WarmupCosine(settings.learning_rate, total, int(settings.warmup_fraction * total))
    clip = {"clipnorm": settings.clipnorm} if settings.clipnorm else {}
    if settings.optimizer == "adamw":
        return tf.keras.optimizers.AdamW(learning_rate=lr, weight_decay=settings.weight_decay, **clip)
    return tf.keras.optimizers.Adam(learning_rate=lr, **clip)


def prepare_training(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: TrainingSequences,
                     settings: TrainConfig, sampling: Optional[str] = None,
                     epochs: Optional[int] = None) -> TrainingSetup:
    """Seeds, builds the sampler, optimizer, logQ table and the compiled `RetrievalModel`.

    Args:
      towers, catalogue, train_sequences: as `train`.
      settings: the train section.
      sampling: overrides `settings.sampling` (the pretraining stage uses "dense").
      epochs: epochs of this stage (for the cosine schedule); default `settings.epochs`.

    Raises:
      UnknownItemError: a training sequence holds an index outside 1..len(catalogue).
      ValueError: no sequence has 2 or more items, or the towers were built
        for another catalogue size.
    """
    check_towers_fit(towers, catalogue, "build them on this catalogue (jobs.build_towers)")
    train_sequences = as_training_sequences(train_sequences)
    check_sequences(train_sequences, len(catalogue))
    tf.keras.utils.set_random_seed(settings.seed)
    sampling = sampling or settings.sampling
    sampler = make_sampler(train_sequences, settings, seed=settings.seed, mode=sampling)  # stream_shuffle_buffer
    steps = math.ceil(sampler.samples_per_epoch / settings.batch_size)
    seen = seen_items(train_sequences, len(catalogue))
    if hasattr(towers, "zero_ids"):
        towers.zero_ids(np.flatnonzero(~seen[1:]) + 1)  # untrained ID vectors: cold items fall back to content
    log_q = item_log_frequencies(train_sequences, len(catalogue)) if settings.logq_correction else None
    negatives = negatives_mode(settings, len(catalogue), sampling)
    neighbours = None
    share = settings.content_target_share if negatives == "full" else 0.0
    if share:
        content = getattr(towers, "content", None)
        if content is None:
            raise ValueError("train.content_target_share needs towers with item content (LEARN), not "
                             f"{type(towers).__name__}")
        neighbours = content_neighbours(content.rows(), seen, settings.content_target_neighbours,
                                        settings.content_target_temperature)
    model = RetrievalModel(towers, settings.logit_scale, log_q, independent_targets=sampling == "window",
                           negatives=negatives, candidate_mask=seen, num_sampled=settings.num_sampled_negatives,
                           sampled_distribution=settings.sampled_distribution,
                           learnable_logit_scale=settings.learnable_logit_scale,
                           chunk_size=settings.full_softmax_chunk, target_neighbours=neighbours,
                           target_share=share)
    model.compile(optimizer=_optimizer(settings, steps, epochs or settings.epochs))
    return TrainingSetup(model, sampler, epoch_dataset(sampler, settings.batch_size), steps)


def check_sequences(train_sequences: TrainingSequences, num_items: int) -> None:
    """Every training index must be a catalogue item (1..num_items); 0 / padding inside a sequence is an error
    (`RecordSequences`: their reader already mapped every item through the catalogue).

    Raises:
      UnknownItemError: naming the sequence (row) and the bad index.
    """
    if isinstance(train_sequences, RecordSequences):
        item_counts(train_sequences, num_items)  # read with this catalogue's size
        return
    packed = as_packed(train_sequences)
    bad = (packed.values < 1) | (packed.values > num_items)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        r = int(np.searchsorted(packed.offsets, k, side="right")) - 1
        raise UnknownItemError(
            f"training sequence {r} holds item index {int(packed.values[k])}, outside the catalogue's "
            f"1..{num_items}: map item ids with Catalogue.indices (it names unknown ids) and build the towers on "
            "that catalogue")


def check_cases(catalogue: Catalogue, cases: pd.DataFrame, max_len: int) -> None:
    """Checks evaluation cases' histories (their last `max_len` items, what the user tower reads) up front,
    naming the case row and user of the first bad one.

    Raises:
      UnknownItemError: a history item is not in the catalogue. ValueError: a history is empty.
    """
    users = cases["user_id"].tolist() if "user_id" in cases.columns else None
    catalogue.check_histories([list(map(str, h)) for h in cases["history"]], max_len, users)


def validation_ndcg(towers: tf.keras.Model, catalogue: Catalogue, cases: pd.DataFrame,
                    settings: TrainConfig) -> tuple[float, TowerScorer]:
    """NDCG@10 of `cases` (the early-stopping protocol) and the scorer that produced it."""
    from learn_tf.evaluation.evaluator import evaluate

    scorer = TowerScorer(towers, catalogue, settings.max_len)
    res = evaluate(scorer.score, cases, catalogue.item_ids, ks=(10,), protocols=(settings.early_stopping_protocol,))
    return float(res["protocols"][settings.early_stopping_protocol]["overall"]["metrics"]["ndcg@10"]), scorer


def fit_cold_ids(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: SequencesLike,
                 val_cases: pd.DataFrame, settings: TrainConfig) -> Optional[dict[str, Any]]:
    """`train.cold_ids: ridge` on hybrid towers: fits the content -> ID map of untrained items.

    The L2 strength is `settings.cold_ridge_l2`, or the one of the fallback
    (None: zero ID vectors, or the learned content map of towers with
    `id_fallback` "content") and `COLD_RIDGE_GRID` with the best validation
    NDCG@10 (first best on ties) over every case, over the cold-item cases,
    or over every case above a cold-item floor (`settings.cold_ridge_metric`,
    `pick_cold_strength`). Towers with a learned map get its
    prediction when no ridge is asked for. Returns what was chosen and tried;
    None when nothing was fitted.
    """
    learned = getattr(towers, "id_map", None) is not None
    if getattr(towers, "ids", None) is None or (settings.cold_ids != "ridge" and not learned):
        return None
    seen = seen_items(train_sequences, len(catalogue))
    fallback = "learned map" if learned else "zero"
    chosen: Optional[float] = settings.cold_ridge_l2 if settings.cold_ids == "ridge" else None
    tried: dict[str, float] = {}
    tried_cold: dict[str, float] = {}
    cases, metric, cold_cases = _cold_selection_cases(val_cases, settings)
    if settings.cold_ids == "ridge" and chosen is None:  # the fallback or a ridge strength, by validation NDCG@10
        for l2 in (None, *COLD_RIDGE_GRID):
            towers.fit_cold_ids(seen, l2)
            key = fallback if l2 is None else str(l2)
            tried[key] = validation_ndcg(towers, catalogue, cases, settings)[0]
            if cold_cases is not None:
                tried_cold[key] = validation_ndcg(towers, catalogue, cold_cases, settings)[0]
        best_key = pick_cold_strength(tried, tried_cold or None, settings.cold_ridge_floor)
        chosen = None if best_key == fallback else float(best_key)
    towers.fit_cold_ids(seen, chosen)
    untrained = int((~seen[1:]).sum())
    what = (("ID vectors from the learned content map" if learned else "zero ID vectors") if chosen is None
            else f"ridge ID vectors (l2 {chosen:g})")
    print(f"  cold ids: {untrained} untrained items get {what}"
          + (f"; validation NDCG@10 ({'overall' if metric == 'balanced' else metric}) by l2: {tried}" if tried else "")
          + (f"; cold items: {tried_cold} (floor {settings.cold_ridge_floor:g} x best)" if tried_cold else ""),
          flush=True)
    out = {"l2": chosen, "fallback": fallback, "selected_on": metric, "validation_ndcg@10": tried,
           "untrained_items": untrained}
    if tried_cold:
        out.update({"validation_cold_item_ndcg@10": tried_cold, "cold_floor": settings.cold_ridge_floor})
    return out


def pick_cold_strength(overall: dict[str, float], cold: Optional[dict[str, float]] = None,
                       floor: float = 0.5) -> str:
    """The key (fallback or ridge strength) with the best `overall` NDCG, first on ties; with `cold`, only
    among the keys whose cold-item NDCG is at least `floor` x the best cold-item NDCG."""
    keys = list(overall)
    if cold is not None:
        bar = floor * max(cold.values())
        keys = [k for k in keys if cold[k] >= bar]
    return max(keys, key=lambda k: overall[k])  # max returns the first maximum


def _cold_item_cases(val_cases: pd.DataFrame) -> Optional[pd.DataFrame]:
    """The validation cases whose target was never trained (the `cold_item` segment); None when there are none."""
    if "cold_item" in val_cases and val_cases["cold_item"].any():
        return val_cases[val_cases["cold_item"]].reset_index(drop=True)
    return None


def _cold_selection_cases(val_cases: pd.DataFrame, settings: TrainConfig
                          ) -> tuple[pd.DataFrame, str, Optional[pd.DataFrame]]:
    """The validation cases `train.cold_ridge_metric` selects the ridge strength on, the rule's name, and the
    cold-item cases the "balanced" rule also scores (else None).

    "overall": every case; "cold_item": the cold-item cases; "balanced": every
    case, among the strengths whose cold-item NDCG keeps `cold_ridge_floor` of
    the best one. Without cold-item cases the rule is "overall".
    """
    cold = _cold_item_cases(val_cases) if settings.cold_ridge_metric != "overall" else None
    if cold is None:
        return val_cases, "overall", None
    if settings.cold_ridge_metric == "cold_item":
        return cold, "cold_item", None
    return val_cases, "balanced", cold


class WeightAverage(tf.keras.callbacks.Callback):
    """Exponential moving average of trainable weights after every training step (Polyak averaging).

    `source` is a list of variables or a layer whose trainable variables are
    read at the first step (Keras builds towers on their first batch); the
    average starts from the weights after that step. `applied()` swaps the
    averages in (and the raw weights back on exit), so validation and
    checkpoints see the averaged model while training goes on from the raw one.
    """

    def __init__(self, source: Any, decay: float) -> None:  # noqa: ANN401 - variables or a layer
        super().__init__()
        self.source, self.decay = source, float(decay)
        self.variables: list[tf.Variable] = []
        self.averages: list[tf.Variable] = []
        self._update = tf.function(self._update_fn)

    def _update_fn(self) -> None:
        for v, a in zip(self.variables, self.averages):
            a.assign(self.decay * a + (1.0 - self.decay) * tf.convert_to_tensor(v))

    def on_train_batch_end(self, batch: int, logs: Optional[dict[str, float]] = None) -> None:
        if not self.averages:
            source = self.source
            self.variables = list(source.trainable_variables if hasattr(source, "trainable_variables") else source)
            self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False) for v in self.variables]
            return
        self._update()

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the variables for the duration of the block (as they are before a step)."""
        raw = [tf.convert_to_tensor(v) for v in self.variables]
        for v, a in zip(self.variables, self.averages):
            v.assign(tf.convert_to_tensor(a))
        try:
            yield
        finally:
            for v, r in zip(self.variables, raw):
                v.assign(r)


class _EvalCallback(tf.keras.callbacks.Callback):
    """Validation NDCG@10 each epoch, best weights in memory and on disk, collapse detection."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, val_cases: pd.DataFrame, settings: TrainConfig,
                 uniform_loss: float, checkpoint_prefix: Optional[str]) -> None:
        super().__init__()
        self.towers, self.catalogue, self.cases, self.s = towers, catalogue, val_cases, settings
        self.uniform_loss, self.prefix = uniform_loss, checkpoint_prefix
        self.best, self.best_epoch, self.wait, self.best_weights = -1.0, -1, 0, None
        self.history: list[dict[str, float]] = []
        self.stopped_early = False
        self.t0 = time.time()
        self.best_seconds = 0.0
        self.average: Optional[WeightAverage] = None  # validate and keep the averaged weights

    def _last(self, epoch: int) -> bool:
        return epoch + 1 == self.params.get("epochs", -1)

    def _evaluates(self, epoch: int) -> bool:
        """Whether validation runs after `epoch` (every `eval_every` epochs, and after the last one)."""
        return (epoch + 1) % self.s.eval_every == 0 or self._last(epoch)

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        # The averaged weights are swapped in only around a validation (and the best-weights copy it may take).
        averaged = self.average is not None and self._evaluates(epoch)
        with self.average.applied() if averaged else contextlib.nullcontext():
            self._epoch_end(epoch, logs)

    def _epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        logs = logs if logs is not None else {}
        last = self._last(epoch)
        if not self._evaluates(epoch):
            self.history.append({"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                                 "seconds": round(time.time() - self.t0, 1)})
            return
        ndcg, scorer = validation_ndcg(self.towers, self.catalogue, self.cases, self.s)
        sample = scorer.item_matrix[:: max(1, len(scorer.item_matrix) // 1000)]
        item_cos = mean_pairwise_cosine(sample)
        logs["val_ndcg@10"] = ndcg
        logs["item_mean_cosine"] = item_cos
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))), "val_ndcg@10": ndcg,
               "item_mean_cosine": item_cos, "seconds": round(time.time() - self.t0, 1),
               # Under a distribution strategy the rate is a MirroredVariable: read it as a tensor.
               "learning_rate": float(lr(self.model.optimizer.iterations)) if callable(lr)
               else float(tf.convert_to_tensor(lr))}
        scale = self.model.scale() if hasattr(self.model, "scale") else None
        if scale is not None:
            row["logit_scale"] = float(scale)
        self.history.append(row)
        print(f"  epoch {epoch + 1}: loss {row['loss']:.4f} (uniform {self.uniform_loss:.2f}), "
              f"val NDCG@10 {ndcg:.4f} ({self.s.early_stopping_protocol}), item mean cosine {item_cos:.3f}",
              flush=True)
        # Collapse: item vectors all alike (every item gets the same score) two evaluations running.
        alike = [h["item_mean_cosine"] > 0.98 for h in self.history[-2:] if "item_mean_cosine" in h]
        if self.s.collapse_guard and len(alike) == 2 and all(alike):
            self.model.stop_training = True
            raise CollapseError(
                f"training collapsed at epoch {epoch + 1}: item vectors are all alike (mean cosine {item_cos:.3f}) "
                f"and the loss is {row['loss']:.3f} (all scores equal would give about {self.uniform_loss:.3f}). "
                "Check that the "
                "content embeddings were post-processed (embedding.postprocess: center) and lower the learning rate."
            )
        if ndcg > self.best or (not self.s.restore_best and last):
            if ndcg > self.best or self.best_epoch < 0:
                self.wait = 0
            self.best, self.best_epoch = ndcg, epoch + 1
            self.best_seconds = time.time() - self.t0
            self.best_weights = self.towers.get_weights()
            if self.prefix:
                self.towers.save_weights(self.prefix)
        elif self.s.restore_best:
            self.wait += self.s.eval_every
            if self.wait >= self.s.patience:
                self.model.stop_training = True
                self.stopped_early = True


def train(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: SequencesLike, val_cases: pd.DataFrame,
          settings: TrainConfig, output_dir: Optional[str] = None, verbose: int = 2) -> TrainResult:
    """`_train` under the `TF_CONFIG` strategy (`learn_tf.training.distribute`); unchanged without one."""
    with distributed_towers(towers) as replica:
        return _train(replica, catalogue, train_sequences, val_cases, settings, worker_output_dir(output_dir),
                      verbose=verbose)


def _train(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: SequencesLike, val_cases: pd.DataFrame,
           settings: TrainConfig, output_dir: Optional[str] = None, verbose: int = 2) -> TrainResult:
    """Trains `towers` with the configured objective; restores the best-validation weights.

    With `settings.pretrain_epochs` > 0 and next-item sampling, the towers
    first train that many epochs with in-batch dense all-action negatives
    (LEARN's pretraining stage), then with the next-item objective.

    Args:
      towers: `LearnTowers` or `SASRecTowers` built on `catalogue`.
      catalogue: item id <-> index mapping.
      train_sequences: per-user training item indices, oldest first (a list of arrays or
        `PackedSequences`, e.g. from `learn_tf.training.inputs`).
      val_cases: validation cases (split == "validation"), for early stopping.
      settings: the config's train section.
      output_dir: where checkpoints, TensorBoard logs, history.json and
        curves.png go (None: nothing written).
      verbose: Keras progress output (0, 1, 2).

    Raises:
      CollapseError: the collapse guard fired.
      UnknownItemError: a training sequence or validation history holds an
        item that is not in the catalogue (naming the row and user).
      ValueError: a validation history is empty (naming the row and user).
    """
    t0 = time.time()
    train_sequences = as_training_sequences(train_sequences)  # RecordSequences stay streamed
    check_cases(catalogue, val_cases, settings.max_len)
    if settings.pretrain_epochs and settings.sampling == "next_item":
        pretrain(towers, catalogue, train_sequences, settings, verbose)
    setup = prepare_training(towers, catalogue, train_sequences, settings)
    model = setup.model
    if model.negatives == "dense":
        n_t = 1 if settings.sampling == "official" else settings.num_targets
        uniform = math.log(1 + (settings.batch_size - 1) * n_t)
    elif model.negatives == "full":
        uniform = math.log(max(int(seen_items(train_sequences, len(catalogue)).sum()), 1))
    else:
        uniform = math.log(settings.batch_size * settings.max_len + model.num_sampled)
    prefix = None
    callbacks: list[tf.keras.callbacks.Callback] = []
    if output_dir:
        os.makedirs(os.path.join(output_dir, "checkpoints"), exist_ok=True)
        prefix = os.path.join(output_dir, "checkpoints", "best")
    evaluator = _EvalCallback(towers, catalogue, val_cases, settings, uniform, prefix)
    evaluator.t0 = t0
    if settings.ema_decay:
        evaluator.average = WeightAverage(towers, settings.ema_decay)
        callbacks.append(evaluator.average)  # before the evaluator: the epoch's last step is averaged in
    callbacks.append(evaluator)
    if output_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), write_graph=False))
    model.fit(setup.dataset, epochs=settings.epochs, callbacks=callbacks, verbose=verbose)
    if evaluator.best_weights is not None:
        towers.set_weights(evaluator.best_weights)
    cold = fit_cold_ids(towers, catalogue, train_sequences, val_cases, settings)
    result = TrainResult(model, evaluator.history, evaluator.best_epoch, evaluator.best, evaluator.stopped_early,
                         time.time() - t0, evaluator.best_seconds, cold)
    if output_dir:
        write_training_curves(result, output_dir, settings)
    return result


def pretrain(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: TrainingSequences,
             settings: TrainConfig, verbose: int = 2) -> None:
    """LEARN's pretraining stage: `settings.pretrain_epochs` epochs of in-batch dense all-action negatives,
    hybrid towers' IDs dropped with `settings.pretrain_id_dropout` (when set) instead of the model's rate."""
    stage = prepare_training(towers, catalogue, train_sequences, settings, sampling="dense",
                             epochs=settings.pretrain_epochs)
    print(f"  pretraining: {settings.pretrain_epochs} epochs of in-batch dense all-action negatives", flush=True)
    model_id_dropout = getattr(towers, "id_dropout", None)
    if settings.pretrain_id_dropout is not None and getattr(towers, "ids", None) is not None:
        towers.id_dropout = settings.pretrain_id_dropout  # read when the stage's train step is traced
    try:
        stage.model.fit(stage.dataset, epochs=settings.pretrain_epochs, verbose=verbose)
    finally:
        if model_id_dropout is not None:
            towers.id_dropout = model_id_dropout


def write_training_curves(result: TrainResult, output_dir: str, settings: TrainConfig) -> None:
    """history.json and curves.png (loss and validation NDCG@10 per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json(os.path.join(output_dir, "history.json"), {
        "settings": asdict(settings), "history": result.history, "best_epoch": result.best_epoch,
        "best_val_ndcg@10": result.best_metric, "stopped_early": result.stopped_early, "seconds": result.seconds,
        "best_seconds": result.best_seconds, "cold_ids": result.cold_ids})
    epochs = [h["epoch"] for h in result.history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [h["loss"] for h in result.history], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    b.plot(epochs, [h["val_ndcg@10"] for h in result.history], marker="o", color="#dd8452")
    b.axvline(result.best_epoch, ls="--", color="grey")
    b.set_xlabel("epoch")
    b.set_ylabel(f"validation NDCG@10 ({settings.early_stopping_protocol})")
    fig.tight_layout()
    with atomic_path(os.path.join(output_dir, "curves.png")) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
