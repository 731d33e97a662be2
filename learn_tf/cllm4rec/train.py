"""CLLM4Rec training: soft+hard-prompt pre-training (alternating) and recommendation-oriented fine-tuning.

Schedule (official scripts; CLLM4REC.md sections 3-4): `content_warmup_epochs`
content-LM epochs without regularisation, then `alternating_epochs` x
[collaborative epoch (L-step), content epoch (C-step)], then
`finetune_epochs` x [recommendation epoch, regularised content epoch]. Only
the user/item tables train; the backbone is frozen and never receives an
update (its variables are not trainable, so the tape does not even watch them).

Cost: each document is one causal pass; batches are length-bucketed under a
token cap; each step function has a dynamic [None, None] signature, so it is
traced once per (loss, optimiser) pair however the batch shapes vary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from learn_tf.cllm4rec.documents import Document, DocumentBuilder, bucket_batches, collate, prompt_batch
from learn_tf.cllm4rec.model import CLLM4Rec

FINETUNE_TARGETS = ("masked", "all")


@dataclass(frozen=True)
class Schedule:
    """Epochs, batches, optimisation and regularisation (defaults: the official scripts)."""

    content_warmup_epochs: int = 10
    alternating_epochs: int = 100
    finetune_epochs: int = 150
    batch_size: int = 20
    max_batch_tokens: int = 4096
    pretrain_learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    lambda_v: float = 1.0
    mask_fraction: float = 0.2
    finetune_target: str = "masked"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.finetune_target not in FINETUNE_TARGETS:
            raise ValueError(f"finetune_target must be one of {FINETUNE_TARGETS}, got {self.finetune_target!r}")


@dataclass
class TrainData:
    """Pre-training documents and fine-tuning histories (user index, item indices)."""

    collaborative: list[Document]
    content: list[Document]
    histories: list[tuple[int, np.ndarray]] = field(default_factory=list)


_LM_SPEC = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool),
            tf.TensorSpec([None, None], tf.bool), tf.TensorSpec([None, None], tf.bool), tf.TensorSpec([], tf.float32)]


class Trainer:
    """Runs the epochs of every phase on one `CLLM4Rec`.

    Args:
      model: the model (its tables are updated in place).
      builder: builds the fine-tuning prompts.
      schedule: the schedule.
    """

    def __init__(self, model: CLLM4Rec, builder: DocumentBuilder, schedule: Schedule) -> None:
        self.model, self.builder, self.schedule = model, builder, schedule
        self.rng = np.random.default_rng(schedule.seed)
        self._steps: dict[str, Callable[..., Any]] = {}
        self.traces: dict[str, int] = {}

    def _step(self, name: str) -> Callable[..., Any]:
        """The traced step of `name` (phase/loss), built on first use with its own Adam."""
        if name in self._steps:
            return self._steps[name]
        phase, which = name.split(":")
        lr = self.schedule.pretrain_learning_rate if phase == "pretrain" else self.schedule.finetune_learning_rate
        variables = self.model.trainable("content" if which == "content" else "collaborative")
        optimizer = keras.optimizers.Adam(learning_rate=lr)
        optimizer.build(variables)
        loss_fn = {"collaborative": self.model.collaborative_loss, "content": self.model.content_loss,
                   "recommend": self.model.recommendation_loss}[which]
        spec = list(_LM_SPEC)
        if which == "recommend":
            spec[2] = tf.TensorSpec([None, self.model.vocab.num_items], tf.float32)

        def step(tokens, padding_mask, labels, reg_mask, lam):
            self.traces[name] = self.traces.get(name, 0) + 1  # Python side effect: runs once per trace
            with tf.GradientTape() as tape:
                nll, reg = loss_fn(tokens, padding_mask, labels, reg_mask)
                loss = nll + lam * reg
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip([tf.convert_to_tensor(g) for g in grads], variables))
            return nll, reg

        self._steps[name] = tf.function(step, input_signature=spec)
        return self._steps[name]

    def lm_epoch(self, which: str, docs: Sequence[Document], lam: float, phase: str = "pretrain") -> dict[str, Any]:
        """One epoch of the collaborative ("collaborative", L-step) or content ("content", C-step) LM.

        The L-step regularises every ID token of the document, the C-step the prompt's ID tokens only.
        """
        s = self.schedule
        step = self._step(f"{phase}:{which}")
        scope = "all" if which == "collaborative" else "prompt"
        t0, nll_sum, reg_sum, tokens = time.time(), 0.0, 0.0, 0
        batches = bucket_batches([len(d) for d in docs], s.batch_size, s.max_batch_tokens, self.rng)
        for idx in batches:
            b = collate([docs[i] for i in idx], self.model.vocab, scope)
            nll, reg = step(b.tokens, b.padding_mask, b.label_mask, b.reg_mask, tf.constant(lam, tf.float32))
            nll_sum += float(nll) * len(idx)
            reg_sum += float(reg)
            tokens += int(b.padding_mask.sum())
        return {"loss": nll_sum / max(1, len(docs)), "reg": reg_sum, "tokens": tokens, "batches": len(batches),
                "seconds": time.time() - t0}

    def finetune_epoch(self, histories: Sequence[tuple[int, np.ndarray]], lam: float) -> dict[str, Any]:
        """One recommendation epoch: a fresh masked-history prompt per user, multinomial loss over the catalogue."""
        s = self.schedule
        step = self._step("finetune:recommend")
        examples = [self.builder.masked_history(u, items, s.mask_fraction, self.rng, s.finetune_target)
                    for u, items in histories]
        t0, nll_sum, reg_sum, tokens = time.time(), 0.0, 0.0, 0
        batches = bucket_batches([len(p) for p, _ in examples], s.batch_size, s.max_batch_tokens, self.rng)
        for idx in batches:
            b = prompt_batch([examples[i][0] for i in idx], self.model.vocab)
            targets = np.zeros((len(idx), self.model.vocab.num_items), np.float32)
            for row, i in enumerate(idx):
                targets[row, examples[i][1]] = 1.0
            nll, reg = step(b.tokens, b.padding_mask, targets, b.reg_mask, tf.constant(lam, tf.float32))
            nll_sum += float(nll) * len(idx)
            reg_sum += float(reg)
            tokens += int(b.padding_mask.sum())
        return {"loss": nll_sum / max(1, len(examples)), "reg": reg_sum, "tokens": tokens, "batches": len(batches),
                "seconds": time.time() - t0}

    def fit(self, data: TrainData, on_epoch: Optional[Callable[[dict[str, Any]], Optional[dict[str, Any]]]] = None,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
        """Runs the whole schedule; returns one record per epoch (phase, losses, tokens, seconds, + on_epoch's)."""
        s, lam = self.schedule, self.schedule.lambda_v
        records: list[dict[str, Any]] = []

        def record(phase: str, epoch: int, parts: dict[str, dict[str, Any]]) -> None:
            rec: dict[str, Any] = {"phase": phase, "epoch": epoch}
            for key, r in parts.items():
                rec.update({f"{key}_{k}": v for k, v in r.items()})
            rec["seconds"] = sum(r["seconds"] for r in parts.values())
            if on_epoch is not None:
                rec.update(on_epoch(rec) or {})
            records.append(rec)
            log("[cllm4rec] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in rec.items()))

        for e in range(s.content_warmup_epochs):
            record("content_warmup", e + 1, {"content": self.lm_epoch("content", data.content, 0.0)})
        for e in range(s.alternating_epochs):
            collab = self.lm_epoch("collaborative", data.collaborative, lam)
            record("pretrain", e + 1, {"collab": collab, "content": self.lm_epoch("content", data.content, lam)})
        for e in range(s.finetune_epochs):
            rec = self.finetune_epoch(data.histories, lam)
            content = self.lm_epoch("content", data.content, lam, phase="finetune")
            record("finetune", e + 1, {"rec": rec, "content": content})
        return records
