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

An epoch is planned first (which window, or which cut and query positions,
each row holds, and the row order) from the sequence lengths and the seed;
rows are filled from the packed sequences one batch at a time, so memory
holds the sequences and a few integers per row, never the epoch's arrays.

`StreamedSampler` (`train.stream_shuffle_buffer: N` > 0) holds neither the
sequences nor a plan: each epoch it reads the sequences in blocks
(`inputs.RecordSequences`: the SequenceExample shards through tf.data, shards
in a fresh order), keeps N of them in a shuffle buffer, turns randomly drawn
ones into their rows exactly as `SequenceSampler` does for a sequence (the
same windows, every training pair once per epoch; the same cut distribution)
and hands out batches drawn at random from a buffer of N rows. Same rows per
sequence and per epoch, different batches; memory is bounded by N, not by the
interactions. `make_sampler` picks one by the setting.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Union

import numpy as np

from learn_tf.config import TrainConfig
from learn_tf.training.inputs import (PackedSequences, RecordSequences, TrainingSequences, as_packed, length_counts,
                                      sequence_chunks)

MODES = ("next_item", "dense", "window", "official")


def window_plan(lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next-item windows of sequences of these lengths: (sequence, start, end) per window, int32.

    Sequence by sequence, from the end: window k of a sequence with T = length - 1
    transitions covers inputs [start, end) with end = T - k * max_len and
    start = max(0, end - max_len) (labels: [start + 1, end + 1)).
    """
    lengths = np.asarray(lengths, np.int64)
    transitions = np.maximum(lengths - 1, 0)
    per_seq = -(-transitions // max_len)
    seq = np.repeat(np.arange(len(lengths), dtype=np.int32), per_seq)
    first = np.concatenate([[0], np.cumsum(per_seq)[:-1]]).astype(np.int64)
    k = np.arange(len(seq), dtype=np.int64) - np.repeat(first, per_seq)
    end = transitions[seq] - k * max_len
    return seq, np.maximum(end - max_len, 0).astype(np.int32), end.astype(np.int32)


def _fill_windows(values: np.ndarray, starts: np.ndarray, seq: np.ndarray, start: np.ndarray, end: np.ndarray,
                  max_len: int, shift: int) -> np.ndarray:
    """[len(seq), max_len] int32: row r holds sequence seq[r] (it begins at values[starts[seq[r]]]) at
    [start + shift, end + shift), right-padded with 0."""
    j = np.arange(max_len, dtype=np.int64)[None, :]
    mask = j < (end.astype(np.int64) - start)[:, None]
    idx = starts[seq][:, None] + start[:, None].astype(np.int64) + shift + j
    out = np.zeros(mask.shape, np.int32)
    out[mask] = values[idx[mask]]
    return out


def _shuffled(rng: np.random.Generator, n: int) -> np.ndarray:
    """`rng.permutation(n)` (the same order: numpy shuffles an arange in place) held as int32 when it fits."""
    order = np.arange(n, dtype=np.int32 if n < 2 ** 31 else np.int64)
    rng.shuffle(order)
    return order


def next_item_windows(sequences: TrainingSequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles each sequence's transitions into right-padded windows of <= `max_len`, from the end.

    Args:
      sequences: per-user item indices (>= 1), oldest first.
      max_len: window length.

    Returns:
      (inputs, labels), both [W, max_len] int32: labels[w, j] is the item that
      follows inputs[w, j]; 0 = padding. Every transition appears exactly once.
    """
    packed = as_packed(sequences)
    seq, start, end = window_plan(packed.lengths, max_len)
    starts = packed.offsets[:-1]
    return (_fill_windows(packed.values, starts, seq, start, end, max_len, 0),
            _fill_windows(packed.values, starts, seq, start, end, max_len, 1))


class _RowShape:
    """The row widths of a sampling mode (shared by the in-memory and the streamed sampler)."""

    mode: str
    max_len: int
    s: TrainConfig

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


class SequenceSampler(_RowShape):
    """Draws a fresh epoch of training rows each call.

    "next_item": {"history": [W, max_len], "labels": [W, max_len]} (the
    windows, shuffled). Other modes: history [S, max_len], query_positions
    [S, H], targets [S, T] and pair_mask [S, H, T]. `epoch_batches` yields the
    same rows a batch at a time (what training iterates); `epoch` all at once.

    Args:
      sequences: per-user int item indices (>= 1), oldest first (a list of
        arrays or `PackedSequences`); users with fewer than 2 items are skipped.
      settings: the train section (sampling, max_len, num_targets, ...).
      seed: base seed; epoch k uses seed + k (reproducible runs).
      mode: overrides `settings.sampling` (e.g. the pretraining stage).
    """

    def __init__(self, sequences: TrainingSequences, settings: TrainConfig, seed: int = 0,
                 mode: str | None = None) -> None:
        self.mode = mode or settings.sampling
        if self.mode not in MODES:
            raise ValueError(f"sampling mode must be one of {MODES}, got {self.mode!r}")
        packed = as_packed(sequences)
        lengths = packed.lengths
        keep = np.flatnonzero(lengths >= 2)
        if not len(keep):
            raise ValueError("no training sequence has 2 or more items")
        # The kept sequences by reference (no copy of the values): sequence i is
        # values[starts[i]:starts[i] + lengths[i]].
        self._values, self._starts = packed.values, packed.offsets[:-1][keep]
        self._lengths = lengths[keep].astype(np.int32)
        self.s, self.seed, self.epoch_index = settings, seed, 0
        self.max_len = settings.max_len
        self._windows = window_plan(self._lengths, self.max_len) if self.mode == "next_item" else None

    @property
    def num_sequences(self) -> int:
        """Training sequences sampled from (those with 2 or more items)."""
        return len(self._lengths)

    @property
    def memory_nbytes(self) -> int:
        """Bytes the sampler holds across an epoch besides the packed values: per-sequence starts and lengths,
        the windows (next_item) and one epoch's plan (the shuffled order, cuts and stored query positions)."""
        rows = self.samples_per_epoch
        order = 4 if rows < 2 ** 31 else 8
        held = self._starts.nbytes + self._lengths.nbytes
        if self._windows is not None:
            return held + sum(a.nbytes for a in self._windows) + rows * order
        cut = 2 if int(self._lengths.max()) < 2 ** 15 else 4
        positions = self.query_slots * (2 if self.s.max_len < 2 ** 15 else 4) if self.query_slots > 1 else 0
        return held + rows * (order + cut + positions)

    def _sequence(self, i: int) -> np.ndarray:
        start = int(self._starts[i])
        return self._values[start:start + int(self._lengths[i])]

    @property
    def samples_per_epoch(self) -> int:
        """Rows produced by one `epoch()` call."""
        if self._windows is not None:
            return len(self._windows[0])
        per_user = 1 if self.mode == "official" else self.s.samples_per_user
        return self.num_sequences * per_user

    def _cut(self, rng: np.random.Generator, n: int) -> int:
        lo = n // 2 if self.mode == "official" else 1
        lo = min(max(lo, 1), n - 1)
        cuts = np.arange(lo, n)  # the first target index
        if self.s.recency_weighted and len(cuts) > 1:
            a, b = self.s.recency_alpha, self.s.recency_beta
            w = np.log(a + np.arange(len(cuts)) * (b - a) / (len(cuts) - 1))
            return int(rng.choice(cuts, p=w / w.sum()))
        return int(rng.choice(cuts))

    def _plan(self, rng: Optional[np.random.Generator] = None) -> tuple[Any, ...]:
        """This epoch's rows, shuffled: next_item (order,); others (order, cut, query positions or None when
        there is one query slot), row r being sample r % samples_per_user of sequence r // samples_per_user.
        Draws from `rng` when given (the streamed sampler's blocks), else from the next epoch's seed."""
        if rng is None:
            rng = np.random.default_rng(self.seed + self.epoch_index)
            self.epoch_index += 1
        if self._windows is not None:
            return (_shuffled(rng, len(self._windows[0])),)
        n_h = self.query_slots
        per_user = 1 if self.mode == "official" else self.s.samples_per_user
        rows = self.num_sequences * per_user
        cut = np.zeros(rows, np.int16 if int(self._lengths.max()) < 2 ** 15 else np.int32)
        # One query position is always the history's last (h - 1): derived from the cut in `_rows`, not stored.
        positions = (np.full((rows, n_h), -1, np.int16 if self.s.max_len < 2 ** 15 else np.int32) if n_h > 1
                     else None)
        r = 0
        chunk = 1 << 16
        for first in range(0, self.num_sequences, chunk):
            for n in self._lengths[first:first + chunk].tolist():
                for _ in range(per_user):
                    c = self._cut(rng, n)
                    h = min(c, self.s.max_len)  # history length: the items [max(0, c - max_len), c)
                    last = h - 1
                    if h <= n_h:
                        pos = np.arange(h)
                    else:
                        others = rng.choice(last, size=n_h - 1, replace=False)
                        pos = np.sort(np.append(others, last))
                    cut[r] = c
                    if positions is not None:
                        positions[r, : len(pos)] = pos
                    r += 1
        return _shuffled(rng, rows), cut, positions

    def _rows(self, plan: tuple[Any, ...], take: np.ndarray) -> dict[str, np.ndarray]:
        """The rows plan[0][take] filled from the sequences."""
        order = plan[0][take]
        if self._windows is not None:
            seq, start, end = (a[order] for a in self._windows)
            return {"history": _fill_windows(self._values, self._starts, seq, start, end, self.max_len, 0),
                    "labels": _fill_windows(self._values, self._starts, seq, start, end, self.max_len, 1)}
        _, cut_of, pos_of = plan
        per_user = 1 if self.mode == "official" else self.s.samples_per_user
        k = 1 if self.mode == "official" else self.s.num_targets
        n_h, n_t = self.query_slots, self.target_slots
        b = len(order)
        history = np.zeros((b, self.s.max_len), np.int32)
        if pos_of is not None:
            positions = pos_of[order].astype(np.int32)
        else:  # one query slot: the history's last position
            positions = (np.minimum(cut_of[order].astype(np.int32), self.s.max_len) - 1)[:, None]
        targets = np.zeros((b, n_t), np.int32)
        pairs = np.zeros((b, n_h, n_t), bool)
        for i, row in enumerate(order):
            seq = self._sequence(int(row) // per_user)
            c = int(cut_of[row])
            start = max(0, c - self.s.max_len)
            hist = seq[start:c]
            history[i, : len(hist)] = hist
            pos = positions[i][positions[i] >= 0]
            if self.mode != "window":
                tgt = seq[c:c + n_t]
                targets[i, : len(tgt)] = tgt
                pairs[i, : len(pos), : len(tgt)] = True
            else:
                tgt = seq[start + 1:min(len(seq), c + k)]  # slot j holds the item at history index j + 1
                targets[i, : len(tgt)] = tgt
                j = np.arange(1, len(tgt) + 1)
                pairs[i, : len(pos), : len(tgt)] = (j[None, :] > pos[:, None]) & (j[None, :] <= pos[:, None] + k)
        return {"history": history, "query_positions": positions, "targets": targets, "pair_mask": pairs}

    def epoch_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """One epoch in batches of `batch_size` rows (the last may be smaller): `epoch()` cut into pieces."""
        plan = self._plan()
        rows = len(plan[0])
        for start in range(0, rows, batch_size):
            yield self._rows(plan, np.arange(start, min(start + batch_size, rows)))

    def epoch(self) -> dict[str, np.ndarray]:
        """One epoch: see the class docstring (rows shuffled, reproducibly per epoch)."""
        plan = self._plan()
        return self._rows(plan, np.arange(len(plan[0])))


class _RowBuffer:
    """Training rows (arrays with a common first axis) waiting to be batched; `take` draws rows at random."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.size = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated (the capacity, not only the rows held)."""
        return sum(a.nbytes for a in self.arrays.values())

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Appends `rows` (growing the arrays when full)."""
        m = len(next(iter(rows.values())))
        cap = len(next(iter(self.arrays.values()))) if self.arrays else 0
        if self.size + m > cap:
            new = max(2 * cap, self.size + m, 1024)
            for k, v in rows.items():
                grown = np.empty((new,) + v.shape[1:], v.dtype)
                if k in self.arrays:
                    grown[:self.size] = self.arrays[k][:self.size]
                self.arrays[k] = grown
        for k, v in rows.items():
            self.arrays[k][self.size:self.size + m] = v
        self.size += m

    def take(self, rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
        """k rows drawn at random without replacement (removed; the last rows move into the holes)."""
        idx = rng.choice(self.size, k, replace=False)
        out = {key: a[idx] for key, a in self.arrays.items()}
        keep = self.size - k
        holes = idx[idx < keep]
        tail = np.setdiff1d(np.arange(keep, self.size), idx, assume_unique=True)
        for a in self.arrays.values():
            a[holes] = a[tail]
        self.size = keep
        return out


def _take_sequences(pool: list[np.ndarray], rng: np.random.Generator, k: int) -> list[np.ndarray]:
    """k sequences drawn at random without replacement from `pool` (removed by swapping in the last)."""
    idx = np.sort(rng.choice(len(pool), k, replace=False))[::-1].tolist()
    out = [pool[i] for i in idx]
    for i in idx:  # descending: the last element is never one still to be taken
        pool[i] = pool[-1]
        pool.pop()
    return out


class StreamedSampler(_RowShape):
    """Draws each epoch's rows from sequences streamed through bounded shuffle buffers (never all held).

    Each epoch (seed + epoch index): the sequences are read in blocks
    (`inputs.sequence_chunks`: the shards of `RecordSequences` in a fresh order,
    or blocks of packed sequences), those with 2 or more items enter a buffer
    of `buffer` sequences; groups of `draw` sequences drawn at random from it
    become their rows (`SequenceSampler` on the group: the same windows / cuts
    per sequence as in memory), which enter a buffer of `buffer` rows; batches
    are drawn at random from that. At the end both buffers drain. Per epoch:
    the same rows per sequence as `SequenceSampler` (next_item: the same
    multiset of windows; others: `samples_per_user` cuts per sequence from
    the same distribution) and the same number of rows and batches; only the
    order differs.

    Args:
      sequences: `RecordSequences` (streamed from the shards) or sequences in memory.
      settings: the train section (as `SequenceSampler`).
      seed: base seed; epoch k uses seed + k.
      mode: overrides `settings.sampling`.
      buffer: sequences (and rows) in the shuffle buffers; default `settings.stream_shuffle_buffer`.
      draw: sequences turned into rows at a time.

    Raises:
      ValueError: unknown mode, a buffer < 1, or no sequence has 2 or more items.
    """

    def __init__(self, sequences: TrainingSequences, settings: TrainConfig, seed: int = 0,
                 mode: str | None = None, buffer: Optional[int] = None, draw: int = 256) -> None:
        self.mode = mode or settings.sampling
        if self.mode not in MODES:
            raise ValueError(f"sampling mode must be one of {MODES}, got {self.mode!r}")
        self.buffer = settings.stream_shuffle_buffer if buffer is None else buffer
        if self.buffer < 1:
            raise ValueError(f"the streamed sampler needs a shuffle buffer of >= 1 sequences "
                             f"(train.stream_shuffle_buffer), got {self.buffer}")
        if draw < 1:
            raise ValueError(f"draw must be >= 1, got {draw}")
        self.source = sequences if isinstance(sequences, RecordSequences) else as_packed(sequences)
        self.s, self.seed, self.epoch_index, self.draw = settings, seed, 0, draw
        self.max_len = settings.max_len
        hist = length_counts(self.source)
        lengths = np.arange(len(hist), dtype=np.int64)
        kept = np.where(lengths >= 2, hist, 0)
        self._num_sequences = int(kept.sum())
        if not self._num_sequences:
            raise ValueError("no training sequence has 2 or more items")
        self._mean_length = float((kept * lengths).sum() / self._num_sequences)
        if self.mode == "next_item":
            per_seq = -(-np.maximum(lengths - 1, 0) // self.max_len)
            self._rows_per_epoch = int((kept * per_seq).sum())
            self._max_rows_per_sequence = int(per_seq[kept > 0].max())
        else:
            per_user = 1 if self.mode == "official" else settings.samples_per_user
            self._rows_per_epoch = self._num_sequences * per_user
            self._max_rows_per_sequence = per_user

    @property
    def num_sequences(self) -> int:
        """Training sequences sampled from (those with 2 or more items)."""
        return self._num_sequences

    @property
    def samples_per_epoch(self) -> int:
        """Rows per epoch (the same as `SequenceSampler`'s on the same sequences)."""
        return self._rows_per_epoch

    @property
    def memory_nbytes(self) -> int:
        """About the bytes the sampler holds during an epoch, whatever the number of interactions: the
        sequence buffer (plus a block being read and a group being drawn) and the row buffer (at most twice
        `buffer` + a batch + a group's rows, as it grows by doubling), plus the per-item and per-length counts
        of `RecordSequences`."""
        read_block = getattr(self.source, "batch_size", 512)
        sequences = (self.buffer + self.draw + read_block) * (self._mean_length * 4 + 112)
        n_h, n_t, w = self.query_slots, self.target_slots, self.max_len
        row = 2 * w * 4 if self.mode == "next_item" else w * 4 + n_h * 4 + n_t * 4 + n_h * n_t
        rows = 2 * (self.buffer + self.s.batch_size + self.draw * self._max_rows_per_sequence) * row
        counts = getattr(self.source, "item_counts", np.zeros(0)).nbytes + length_counts(self.source).nbytes
        return int(sequences + rows + counts)

    def _group_rows(self, group: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The rows of these sequences for this epoch (shuffled among themselves), as `SequenceSampler` makes them."""
        sub = SequenceSampler(PackedSequences.from_arrays(group), self.s, mode=self.mode)
        plan = sub._plan(rng)
        return sub._rows(plan, np.arange(len(plan[0])))

    def epoch_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """One epoch in batches of `batch_size` rows (the last may be smaller), as `SequenceSampler.epoch_batches`."""
        rng = np.random.default_rng(self.seed + self.epoch_index)
        self.epoch_index += 1
        n = self.buffer
        pool: list[np.ndarray] = []
        rows = _RowBuffer()
        for block in sequence_chunks(self.source, rng):
            pool.extend(block[i].copy() for i in np.flatnonzero(block.lengths >= 2).tolist())
            while len(pool) >= n + self.draw:
                rows.add(self._group_rows(_take_sequences(pool, rng, self.draw), rng))
                while rows.size >= n + batch_size:
                    yield rows.take(rng, batch_size)
        while pool:
            rows.add(self._group_rows(_take_sequences(pool, rng, min(self.draw, len(pool))), rng))
            while rows.size >= n + batch_size:
                yield rows.take(rng, batch_size)
        while rows.size:
            yield rows.take(rng, min(batch_size, rows.size))

    def epoch(self) -> dict[str, np.ndarray]:
        """One epoch's rows at once (tests and small data: it holds the epoch)."""
        batches = list(self.epoch_batches(max(self.s.batch_size, 1)))
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


Sampler = Union[SequenceSampler, StreamedSampler]


def make_sampler(sequences: TrainingSequences, settings: TrainConfig, seed: int = 0,
                 mode: str | None = None) -> Sampler:
    """The sampler `settings.stream_shuffle_buffer` selects: 0 = `SequenceSampler` (exact, in memory;
    `RecordSequences` are packed first), N > 0 = `StreamedSampler` with buffers of N, unless the buffer
    would hold every sequence: then the exact sampler (the same memory bound, and the same batches as 0).

    Raises:
      ValueError: a negative `stream_shuffle_buffer`, or as the samplers.
    """
    n = settings.stream_shuffle_buffer
    if n < 0:
        raise ValueError(f"train.stream_shuffle_buffer must be 0 (exact, in memory) or N > 0 (streamed), got {n}")
    if n > 0 and len(sequences) > n:
        return StreamedSampler(sequences, settings, seed=seed, mode=mode)
    return SequenceSampler(sequences, settings, seed=seed, mode=mode)
