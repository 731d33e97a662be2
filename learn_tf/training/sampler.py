"""Training samples from users' time-ordered sequences.

"dense" (default; LEARN's history/target cut in PinnerFormer's dense
all-action form): each user gives `samples_per_user` cuts per epoch; at cut c
the history is the (up to) `max_len` items before c and the targets are the
next `num_targets` items; `num_query_positions` history positions (the last
always among them) are paired with every target.
"window" (experimental): every sampled position's positives are the
`num_targets` items that follow *it*; the targets are the history shifted by
one plus the items after the cut, each encoded on its own.
"official": the official LEARN pretraining scheme, one sample per user per
epoch, target index uniform in [len // 2, len - 1], last history position
only, one target. Cuts can be recency-weighted as in the paper's industrial
sampling: w_i = log(alpha + i (beta - alpha) / (N - 1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MODES = ("dense", "window", "official")


@dataclass(frozen=True)
class SamplerSettings:
    """How training samples are cut from sequences."""

    mode: str = "dense"
    max_len: int = 50
    num_targets: int = 10
    num_query_positions: int = 10
    samples_per_user: int = 4
    recency_weighted: bool = False
    recency_alpha: float = 10.0
    recency_beta: float = 10000.0


class SequenceSampler:
    """Draws a fresh epoch of (history, query positions, targets) arrays each call.

    Args:
      sequences: per-user int item indices (>= 1), oldest first; users with
        fewer than 2 items are skipped.
      settings: the sampling scheme.
      seed: base seed; epoch k uses seed + k (reproducible runs).
    """

    def __init__(self, sequences: Sequence[np.ndarray], settings: SamplerSettings, seed: int = 0) -> None:
        if settings.mode not in MODES:
            raise ValueError(f"sampling mode must be one of {MODES}, got {settings.mode!r}")
        self.sequences = [np.asarray(s, np.int32) for s in sequences if len(s) >= 2]
        if not self.sequences:
            raise ValueError("no training sequence has 2 or more items")
        self.s, self.seed, self.epoch_index = settings, seed, 0

    @property
    def samples_per_epoch(self) -> int:
        """Rows produced by one `epoch()` call."""
        per_user = 1 if self.s.mode == "official" else self.s.samples_per_user
        return len(self.sequences) * per_user

    def _cut(self, rng: np.random.Generator, n: int) -> int:
        lo = n // 2 if self.s.mode == "official" else 1
        lo = min(max(lo, 1), n - 1)
        cuts = np.arange(lo, n)  # the first target index
        if self.s.recency_weighted and len(cuts) > 1:
            a, b = self.s.recency_alpha, self.s.recency_beta
            w = np.log(a + np.arange(len(cuts)) * (b - a) / (len(cuts) - 1))
            return int(rng.choice(cuts, p=w / w.sum()))
        return int(rng.choice(cuts))

    @property
    def target_slots(self) -> int:
        """Width of the targets array."""
        if self.s.mode == "window":
            return self.s.max_len + self.s.num_targets - 1
        return 1 if self.s.mode == "official" else self.s.num_targets

    @property
    def query_slots(self) -> int:
        """Width of the query_positions array."""
        return 1 if self.s.mode == "official" else self.s.num_query_positions

    def epoch(self) -> dict[str, np.ndarray]:
        """One epoch: history [S, max_len], query_positions [S, H], targets [S, T],
        pair_mask [S, H, T] (S = samples; T = target_slots)."""
        rng = np.random.default_rng(self.seed + self.epoch_index)
        self.epoch_index += 1
        official = self.s.mode == "official"
        k = 1 if official else self.s.num_targets
        n_h, n_t = self.query_slots, self.target_slots
        per_user = 1 if official else self.s.samples_per_user
        rows = len(self.sequences) * per_user
        history = np.zeros((rows, self.s.max_len), np.int32)
        positions = np.full((rows, n_h), -1, np.int32)
        targets = np.zeros((rows, n_t), np.int32)
        pairs = np.zeros((rows, n_h, n_t), bool)
        r = 0
        for seq in self.sequences:
            for _ in range(per_user):
                c = self._cut(rng, len(seq))
                start = max(0, c - self.s.max_len)
                hist = seq[start:c]
                history[r, : len(hist)] = hist
                last = len(hist) - 1
                if len(hist) <= n_h:
                    pos = np.arange(len(hist))
                else:
                    others = rng.choice(last, size=n_h - 1, replace=False)
                    pos = np.sort(np.append(others, last))
                positions[r, : len(pos)] = pos
                if self.s.mode != "window":
                    tgt = seq[c:c + n_t]
                    targets[r, : len(tgt)] = tgt
                    pairs[r, : len(pos), : len(tgt)] = True
                else:
                    tgt = seq[start + 1:min(len(seq), c + k)]  # slot j holds the item at history index j + 1
                    targets[r, : len(tgt)] = tgt
                    j = np.arange(1, len(tgt) + 1)
                    pairs[r, : len(pos), : len(tgt)] = (j[None, :] > pos[:, None]) & (j[None, :] <= pos[:, None] + k)
                r += 1
        order = rng.permutation(rows)
        return {"history": history[order], "query_positions": positions[order], "targets": targets[order],
                "pair_mask": pairs[order]}
