"""Training samples from users' time-ordered sequences.

"next_item" (default): each user's training sequence x is tiled into windows
of <= `max_len` from the end; a window's input is a slice of x[:-1] and its
labels the same slice of x[1:], so every training transition x[i] -> x[i+1]
is a target exactly once per epoch (the standard SASRec objective).
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

from typing import Sequence

import numpy as np

from learn_tf.config import TrainConfig

MODES = ("next_item", "dense", "window", "official")


def next_item_windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles each sequence's transitions into right-padded windows of <= `max_len`, from the end.

    Args:
      sequences: per-user item indices (>= 1), oldest first.
      max_len: window length.

    Returns:
      (inputs, labels), both [W, max_len] int32: labels[w, j] is the item that
      follows inputs[w, j]; 0 = padding. Every transition appears exactly once.
    """
    inputs, labels = [], []
    for seq in sequences:
        seq = np.asarray(seq, np.int32)
        end = len(seq) - 1  # transitions: seq[i] -> seq[i + 1] for i < end
        while end > 0:
            start = max(0, end - max_len)
            row_in = np.zeros(max_len, np.int32)
            row_out = np.zeros(max_len, np.int32)
            row_in[: end - start] = seq[start:end]
            row_out[: end - start] = seq[start + 1:end + 1]
            inputs.append(row_in)
            labels.append(row_out)
            end = start
    if not inputs:
        return np.zeros((0, max_len), np.int32), np.zeros((0, max_len), np.int32)
    return np.stack(inputs), np.stack(labels)


class SequenceSampler:
    """Draws a fresh epoch of training rows each call.

    "next_item": {"history": [W, max_len], "labels": [W, max_len]} (the
    windows, shuffled). Other modes: history [S, max_len], query_positions
    [S, H], targets [S, T] and pair_mask [S, H, T].

    Args:
      sequences: per-user int item indices (>= 1), oldest first; users with
        fewer than 2 items are skipped.
      settings: the train section (sampling, max_len, num_targets, ...).
      seed: base seed; epoch k uses seed + k (reproducible runs).
      mode: overrides `settings.sampling` (e.g. the pretraining stage).
    """

    def __init__(self, sequences: Sequence[np.ndarray], settings: TrainConfig, seed: int = 0,
                 mode: str | None = None) -> None:
        self.mode = mode or settings.sampling
        if self.mode not in MODES:
            raise ValueError(f"sampling mode must be one of {MODES}, got {self.mode!r}")
        self.sequences = [np.asarray(s, np.int32) for s in sequences if len(s) >= 2]
        if not self.sequences:
            raise ValueError("no training sequence has 2 or more items")
        self.s, self.seed, self.epoch_index = settings, seed, 0
        self.max_len = settings.max_len
        self._windows = next_item_windows(self.sequences, self.max_len) if self.mode == "next_item" else None

    @property
    def samples_per_epoch(self) -> int:
        """Rows produced by one `epoch()` call."""
        if self._windows is not None:
            return len(self._windows[0])
        per_user = 1 if self.mode == "official" else self.s.samples_per_user
        return len(self.sequences) * per_user

    def _cut(self, rng: np.random.Generator, n: int) -> int:
        lo = n // 2 if self.mode == "official" else 1
        lo = min(max(lo, 1), n - 1)
        cuts = np.arange(lo, n)  # the first target index
        if self.s.recency_weighted and len(cuts) > 1:
            a, b = self.s.recency_alpha, self.s.recency_beta
            w = np.log(a + np.arange(len(cuts)) * (b - a) / (len(cuts) - 1))
            return int(rng.choice(cuts, p=w / w.sum()))
        return int(rng.choice(cuts))

    @property
    def target_slots(self) -> int:
        """Width of the targets array (next_item: the labels, max_len)."""
        if self.mode == "next_item":
            return self.max_len
        if self.mode == "window":
            return self.s.max_len + self.s.num_targets - 1
        return 1 if self.mode == "official" else self.s.num_targets

    @property
    def query_slots(self) -> int:
        """Width of the query_positions array (next_item: every position)."""
        if self.mode == "next_item":
            return self.max_len
        return 1 if self.mode == "official" else self.s.num_query_positions

    def epoch(self) -> dict[str, np.ndarray]:
        """One epoch: see the class docstring (rows shuffled, reproducibly per epoch)."""
        rng = np.random.default_rng(self.seed + self.epoch_index)
        self.epoch_index += 1
        if self._windows is not None:
            order = rng.permutation(len(self._windows[0]))
            return {"history": self._windows[0][order], "labels": self._windows[1][order]}
        official = self.mode == "official"
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
                if self.mode != "window":
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
