"""The training loop: AdamW + warmup/cosine, early stopping on validation NDCG@10,
best-weights checkpoints, TensorBoard logs, training curves and a collapse guard."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from learn_tf.embeddings.postprocess import mean_pairwise_cosine
from learn_tf.models.catalogue import Catalogue, TowerScorer, UnknownItemError, check_towers_fit
from learn_tf.models.retrieval_model import RetrievalModel
from learn_tf.training.distribute import distributed_towers, worker_output_dir
from learn_tf.training.sampler import SamplerSettings, SequenceSampler
from learn_tf.training.schedule import WarmupCosine
from learn_tf.utils.io import atomic_path, write_json


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (plain values; built from the config by the CLI)."""

    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    logit_scale: float = 20.0
    batch_size: int = 64
    epochs: int = 40
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    patience: int = 5
    early_stopping_protocol: str = "masked"
    collapse_guard: bool = True
    logq_correction: bool = True
    seed: int = 2024
    verbose: int = 2


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


def item_log_frequencies(sequences: list[np.ndarray], num_items: int) -> np.ndarray:
    """[N + 1] log of each item index's share of training interactions (add-one smoothed)."""
    counts = np.bincount(np.concatenate(sequences), minlength=num_items + 1).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


def epoch_dataset(sampler: SequenceSampler, batch_size: int) -> tf.data.Dataset:
    """Batches of a fresh `sampler.epoch()` each time the dataset is iterated (one epoch)."""
    n_t, n_h = sampler.target_slots, sampler.query_slots
    sig = {
        "history": tf.TensorSpec([None, sampler.s.max_len], tf.int32),
        "query_positions": tf.TensorSpec([None, n_h], tf.int32),
        "targets": tf.TensorSpec([None, n_t], tf.int32),
        "pair_mask": tf.TensorSpec([None, n_h, n_t], tf.bool),
    }

    def gen():
        ep = sampler.epoch()
        for start in range(0, sampler.samples_per_epoch, batch_size):
            yield {k: v[start:start + batch_size] for k, v in ep.items()}

    return tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)


@dataclass
class TrainingSetup:
    """The compiled model, its sampler and dataset, as `train` runs them (also used by benchmarks)."""

    model: RetrievalModel
    sampler: SequenceSampler
    dataset: tf.data.Dataset
    steps_per_epoch: int


def prepare_training(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: list[np.ndarray],
                     settings: TrainSettings) -> TrainingSetup:
    """Seeds, builds the sampler, schedule, logQ table and the compiled `RetrievalModel`.

    Raises:
      UnknownItemError: a training sequence holds an index outside 1..len(catalogue).
      ValueError: no sequence has 2 or more items, or the towers were built
        for another catalogue size.
    """
    check_towers_fit(towers, catalogue, "build them on this catalogue (jobs.build_towers)")
    check_sequences(train_sequences, len(catalogue))
    tf.keras.utils.set_random_seed(settings.seed)
    sampler = SequenceSampler(train_sequences, settings.sampler, seed=settings.seed)
    steps = math.ceil(sampler.samples_per_epoch / settings.batch_size)
    total = steps * settings.epochs
    schedule = WarmupCosine(settings.learning_rate, total, int(settings.warmup_fraction * total))
    log_q = item_log_frequencies(train_sequences, len(catalogue)) if settings.logq_correction else None
    model = RetrievalModel(towers, settings.logit_scale, log_q, independent_targets=settings.sampler.mode == "window")
    model.compile(optimizer=tf.keras.optimizers.AdamW(learning_rate=schedule, weight_decay=settings.weight_decay,
                                                      clipnorm=1.0))
    return TrainingSetup(model, sampler, epoch_dataset(sampler, settings.batch_size), steps)


def check_sequences(train_sequences: list[np.ndarray], num_items: int) -> None:
    """Every training index must be a catalogue item (1..num_items); 0 / padding inside a sequence is an error.

    Raises:
      UnknownItemError: naming the sequence (row) and the bad index.
    """
    for r, seq in enumerate(train_sequences):
        seq = np.asarray(seq)
        bad = (seq < 1) | (seq > num_items)
        if bad.any():
            raise UnknownItemError(
                f"training sequence {r} holds item index {int(seq[bad][0])}, outside the catalogue's 1..{num_items}: "
                "map item ids with Catalogue.indices (it names unknown ids) and build the towers on that catalogue")


def check_cases(catalogue: Catalogue, cases: pd.DataFrame, max_len: int) -> None:
    """Checks evaluation cases' histories (their last `max_len` items, what the user tower reads) up front,
    naming the case row and user of the first bad one.

    Raises:
      UnknownItemError: a history item is not in the catalogue. ValueError: a history is empty.
    """
    users = cases["user_id"].tolist() if "user_id" in cases.columns else None
    catalogue.check_histories([list(map(str, h)) for h in cases["history"]], max_len, users)


class _EvalCallback(tf.keras.callbacks.Callback):
    """Validation NDCG@10 each epoch, best weights in memory and on disk, collapse detection."""

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, val_cases: pd.DataFrame, settings: TrainSettings,
                 uniform_loss: float, checkpoint_prefix: Optional[str]) -> None:
        super().__init__()
        self.towers, self.catalogue, self.cases, self.s = towers, catalogue, val_cases, settings
        self.uniform_loss, self.prefix = uniform_loss, checkpoint_prefix
        self.best, self.best_epoch, self.wait, self.best_weights = -1.0, -1, 0, None
        self.history: list[dict[str, float]] = []
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        from learn_tf.evaluation.evaluator import evaluate

        logs = logs if logs is not None else {}
        scorer = TowerScorer(self.towers, self.catalogue, self.s.sampler.max_len)
        res = evaluate(scorer.score, self.cases, self.catalogue.item_ids, ks=(10,),
                       protocols=(self.s.early_stopping_protocol,))
        ndcg = float(res["protocols"][self.s.early_stopping_protocol]["overall"]["metrics"]["ndcg@10"])
        sample = scorer.item_matrix[:: max(1, len(scorer.item_matrix) // 1000)]
        item_cos = mean_pairwise_cosine(sample)
        logs["val_ndcg@10"] = ndcg
        logs["item_mean_cosine"] = item_cos
        row = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))), "val_ndcg@10": ndcg,
               "item_mean_cosine": item_cos, "learning_rate": float(self.model.optimizer.learning_rate(
                   self.model.optimizer.iterations)) if callable(self.model.optimizer.learning_rate) else
               float(tf.convert_to_tensor(self.model.optimizer.learning_rate))}
        self.history.append(row)
        print(f"  epoch {epoch + 1}: loss {row['loss']:.4f} (uniform {self.uniform_loss:.2f}), "
              f"val NDCG@10 {ndcg:.4f} ({self.s.early_stopping_protocol}), item mean cosine {item_cos:.3f}",
              flush=True)
        # Collapse: item vectors all alike (every item gets the same score) two epochs running.
        alike = [h["item_mean_cosine"] > 0.98 for h in self.history[-2:]]
        if self.s.collapse_guard and len(alike) == 2 and all(alike):
            self.model.stop_training = True
            raise CollapseError(
                f"training collapsed at epoch {epoch + 1}: item vectors are all alike (mean cosine {item_cos:.3f}) "
                f"and the loss is {row['loss']:.3f} (all scores equal would give about {self.uniform_loss:.3f}). "
                "Check that the "
                "content embeddings were post-processed (embedding.postprocess: center) and lower the learning rate."
            )
        if ndcg > self.best:
            self.best, self.best_epoch, self.wait = ndcg, epoch + 1, 0
            self.best_weights = self.towers.get_weights()
            if self.prefix:
                self.towers.save_weights(self.prefix)
        else:
            self.wait += 1
            if self.wait >= self.s.patience:
                self.model.stop_training = True
                self.stopped_early = True


def train(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: list[np.ndarray], val_cases: pd.DataFrame,
          settings: TrainSettings, output_dir: Optional[str] = None) -> TrainResult:
    """`_train` under the `TF_CONFIG` strategy (`learn_tf.training.distribute`); unchanged without one."""
    with distributed_towers(towers) as replica:
        return _train(replica, catalogue, train_sequences, val_cases, settings, worker_output_dir(output_dir))


def _train(towers: tf.keras.Model, catalogue: Catalogue, train_sequences: list[np.ndarray], val_cases: pd.DataFrame,
           settings: TrainSettings, output_dir: Optional[str] = None) -> TrainResult:
    """Trains `towers` with the dense all-action task; restores the best-validation weights.

    Args:
      towers: `LearnTowers` or `SASRecTowers` built on `catalogue`.
      catalogue: item id <-> index mapping.
      train_sequences: per-user training item indices, oldest first.
      val_cases: validation cases (split == "validation"), for early stopping.
      settings: optimisation settings.
      output_dir: where checkpoints, TensorBoard logs, history.json and
        curves.png go (None: nothing written).

    Raises:
      CollapseError: the collapse guard fired.
      UnknownItemError: a training sequence or validation history holds an
        item that is not in the catalogue (naming the row and user).
      ValueError: a validation history is empty (naming the row and user).
    """
    t0 = time.time()
    check_cases(catalogue, val_cases, settings.sampler.max_len)
    setup = prepare_training(towers, catalogue, train_sequences, settings)
    model = setup.model
    n_t = 1 if settings.sampler.mode == "official" else settings.sampler.num_targets
    uniform = math.log(1 + (settings.batch_size - 1) * n_t)
    prefix = None
    callbacks: list[tf.keras.callbacks.Callback] = []
    if output_dir:
        os.makedirs(os.path.join(output_dir, "checkpoints"), exist_ok=True)
        prefix = os.path.join(output_dir, "checkpoints", "best")
    evaluator = _EvalCallback(towers, catalogue, val_cases, settings, uniform, prefix)
    callbacks.append(evaluator)
    if output_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), write_graph=False))
    model.fit(setup.dataset, epochs=settings.epochs, callbacks=callbacks,
              verbose=settings.verbose)
    if evaluator.best_weights is not None:
        towers.set_weights(evaluator.best_weights)
    result = TrainResult(model, evaluator.history, evaluator.best_epoch, evaluator.best, evaluator.stopped_early,
                         time.time() - t0)
    if output_dir:
        write_training_curves(result, output_dir, settings)
    return result


def write_training_curves(result: TrainResult, output_dir: str, settings: TrainSettings) -> None:
    """history.json and curves.png (loss and validation NDCG@10 per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json(os.path.join(output_dir, "history.json"), {
        "settings": asdict(settings), "history": result.history, "best_epoch": result.best_epoch,
        "best_val_ndcg@10": result.best_metric, "stopped_early": result.stopped_early, "seconds": result.seconds})
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
