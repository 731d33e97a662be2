"""The training input builder: users' training sequences as catalogue indices, packed into two flat arrays.

One function, `pack_sequences`, builds what the sampler trains on from batches of
(user ids, index values, lengths) in user order; it is fed either

- streamed: `sequences_from_records` reads the per-user SequenceExample shards
  (`learn_tf.data.sequence_examples`, written by `beam/sequences.py`) with `tf.data`,
  so the interactions never exist as strings in memory (the TFX Trainer), or
- in memory: `sequences_from_split` walks a split's training interactions (`learn train`).

Both give the same `PackedSequences` for the same split (users sorted by id, items
oldest first), so the sampler draws the same windows and pairs with the same seed.
The packed form costs 4 bytes per training interaction plus 8 per user.

`RecordSequences` is the shards' streamed form for `train.stream_shuffle_buffer` > 0
(`sampler.StreamedSampler`): one counting pass, then the sequences are read again
each epoch a batch of records at a time and never held all at once; its memory is the
catalogue's item counts, not the interactions.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

from learn_tf.data import sequence_examples as sx
from learn_tf.models.catalogue import Catalogue, user_histories
from learn_tf.utils import io


class PackedSequences(Sequence[np.ndarray]):
    """Many int32 sequences in one array: sequence i is values[offsets[i]:offsets[i + 1]].

    Args:
      values: [total] int32 item indices, sequence after sequence.
      offsets: [num_sequences + 1] int64, starting at 0, non-decreasing, ending at len(values).
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values = np.asarray(values, np.int32)
        self.offsets = np.asarray(offsets, np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != len(self.values) or (np.diff(self.offsets) < 0).any():
            raise ValueError("PackedSequences: offsets must start at 0, never decrease and end at len(values)")

    @classmethod
    def from_arrays(cls, sequences: Iterable[Sequence[int]]) -> "PackedSequences":
        """Packs a list of int sequences."""
        arrays = [np.asarray(s, np.int32) for s in sequences]
        lengths = np.array([len(a) for a in arrays], np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
        return cls(values, np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]  # int -> one sequence (a view)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {i} of {len(self)}")
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.values[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """[num_sequences] int64 lengths."""
        return np.diff(self.offsets)

    def equals(self, other: "PackedSequences") -> bool:
        """Same sequences, same order."""
        return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.values, other.values)


class RecordSequences:
    """The training sequences of a directory of SequenceExample shards, streamed on demand (never all held).

    Construction reads the shards once (`tf.data`, `sequence_examples.training_batches`) and keeps only what
    training needs up front: the number of sequences, a histogram of their lengths (rows per epoch) and
    the training count of every catalogue index (logQ correction, seen items). `chunks` then reads the
    sequences again, a batch of records at a time, each time it is iterated.

    Args:
      directory: the shards (`sequence_examples.shard_files`).
      catalogue: maps item ids to indices (index i + 1 is catalogue.item_ids[i]).
      batch_size: records parsed per step.
      counts: filled with what the counting pass read.

    Raises:
      FileNotFoundError: no shards under `directory`.
      SequenceRecordError: a malformed record or a training item outside the catalogue (named).
    """

    def __init__(self, directory: str, catalogue: Catalogue, batch_size: int = 512,
                 counts: Optional[sx.ReadCounts] = None) -> None:
        self.directory, self.batch_size = directory, batch_size
        self.files = sx.shard_files(directory)
        self.catalogue, self.item_ids = catalogue, catalogue.item_ids
        items = np.zeros(len(catalogue) + 1, np.int64)
        lengths = np.zeros(1, np.int64)
        for _, values, lens in sx.training_batches(self.files, self.item_ids, batch_size, counts):
            items += np.bincount(values, minlength=len(items))
            hist = np.bincount(lens)
            if len(hist) > len(lengths):
                lengths = np.concatenate([lengths, np.zeros(len(hist) - len(lengths), np.int64)])
            lengths[:len(hist)] += hist
        self.item_counts = items
        self.length_counts = lengths

    def __len__(self) -> int:
        """Sequences (users with at least one training item), as `len` of the packed form."""
        return int(self.length_counts.sum())

    @property
    def num_values(self) -> int:
        """Training items over all sequences."""
        return int(self.item_counts.sum())

    def chunks(self, rng: Optional[np.random.Generator] = None) -> Iterator[PackedSequences]:
        """The sequences a batch of records at a time: shards in shard order, or in an order drawn from `rng`."""
        files = self.files if rng is None else [self.files[i] for i in rng.permutation(len(self.files))]
        for _, values, lens in sx.training_batches(files, self.item_ids, self.batch_size):
            yield PackedSequences(values, np.concatenate([[0], np.cumsum(lens)]))

    def pack(self) -> PackedSequences:
        """All sequences packed in user order (the in-memory form `sequences_from_records` builds)."""
        return sequences_from_records(self.directory, self.catalogue, self.batch_size)


SequencesLike = Union[PackedSequences, Sequence[np.ndarray]]
# What the trainer accepts: sequences in memory, or the shards streamed (`RecordSequences`).
TrainingSequences = Union[PackedSequences, RecordSequences, Sequence[np.ndarray]]


def as_packed(sequences: TrainingSequences) -> PackedSequences:
    """`sequences` as PackedSequences (no copy when they already are; `RecordSequences` are read and packed)."""
    if isinstance(sequences, RecordSequences):
        return sequences.pack()
    return sequences if isinstance(sequences, PackedSequences) else PackedSequences.from_arrays(sequences)


def as_training_sequences(sequences: TrainingSequences) -> Union[PackedSequences, RecordSequences]:
    """`RecordSequences` as they are (streamed), anything else as PackedSequences."""
    return sequences if isinstance(sequences, RecordSequences) else as_packed(sequences)


def item_counts(sequences: TrainingSequences, num_items: int) -> np.ndarray:
    """[num_items + 1] int64: how often each catalogue index occurs in the training sequences.

    Raises:
      ValueError: streamed sequences were read with another catalogue size.
    """
    if isinstance(sequences, RecordSequences):
        if len(sequences.item_counts) != num_items + 1:
            raise ValueError(f"the streamed sequences were read with a catalogue of {len(sequences.item_counts) - 1:,} "
                             f"items, not {num_items:,}")
        return sequences.item_counts
    return np.bincount(as_packed(sequences).values, minlength=num_items + 1).astype(np.int64)


def length_counts(sequences: TrainingSequences) -> np.ndarray:
    """Histogram of the sequence lengths: entry L = sequences of L items."""
    if isinstance(sequences, RecordSequences):
        return sequences.length_counts
    return np.bincount(as_packed(sequences).lengths, minlength=1)


def sequence_chunks(sequences: Union[PackedSequences, RecordSequences], rng: np.random.Generator,
                    chunk: int = 512) -> Iterator[PackedSequences]:
    """The sequences in blocks, as a streamed epoch reads them: `RecordSequences` shard by shard (shards in
    an order drawn from `rng`); packed sequences in blocks of `chunk` (blocks in an order drawn from `rng`)."""
    if isinstance(sequences, RecordSequences):
        yield from sequences.chunks(rng)
        return
    n = len(sequences)
    for b in rng.permutation(-(-n // chunk)).tolist():
        lo, hi = b * chunk, min(n, (b + 1) * chunk)
        offsets = sequences.offsets[lo:hi + 1]
        yield PackedSequences(sequences.values[offsets[0]:offsets[-1]], offsets - offsets[0])


def pack_sequences(batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   expected_items: Optional[int] = None) -> PackedSequences:
    """Packs batches of (user ids [B], values [sum of lengths] int32, lengths [B]) given in user order.

    Args:
      batches: as `sequence_examples.training_batches` yields them; users must come sorted by id
        (the order every consumer relies on: the sampler draws in this order).
      expected_items: total values, when known (e.g. a manifest's count): preallocates once instead of
        concatenating, so packing never holds two copies.

    Raises:
      ValueError: users out of order or repeated (naming the two ids), or more values than expected_items.
    """
    chunks: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    buf = np.empty(expected_items, np.int32) if expected_items is not None else None
    filled = 0
    last: Optional[str] = None
    for users, values, lens in batches:
        if len(users):
            ids = [u.decode("utf-8") if isinstance(u, bytes) else str(u) for u in (users[0], users[-1])]
            if last is not None and not last < ids[0]:
                raise ValueError(f"training sequences are not in user order: user {ids[0]!r} follows {last!r}")
            if len(users) > 1:
                keys = np.asarray(users)
                if not (keys[1:] > keys[:-1]).all():
                    k = int(np.flatnonzero(~(keys[1:] > keys[:-1]))[0])
                    raise ValueError(f"training sequences are not in user order: user {keys[k + 1]!r} follows "
                                     f"{keys[k]!r}")
            last = ids[1]
        lengths.append(np.asarray(lens, np.int64))
        if buf is not None:
            if filled + len(values) > len(buf):
                raise ValueError(f"more training items than the expected {expected_items:,}")
            buf[filled:filled + len(values)] = values
            filled += len(values)
        else:
            chunks.append(np.asarray(values, np.int32))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]) if lengths else np.zeros(1, np.int64)
    if buf is not None:
        values_all = buf[:filled]
    else:
        values_all = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return PackedSequences(values_all, offsets)


def sequences_from_split(train: pd.DataFrame, catalogue: Catalogue, batch_users: int = 4096) -> PackedSequences:
    """In-memory feed: a split's training interactions (user_id, item_id, position) -> packed index sequences.

    Raises:
      UnknownItemError: a training item is not in the catalogue (naming the user and the id).
    """
    def batches() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        users: list[str] = []
        seqs: list[np.ndarray] = []
        for u, h in user_histories(train):
            users.append(str(u))
            seqs.append(catalogue.indices(h, context=f"user {u}"))
            if len(users) == batch_users:
                yield _batch(users, seqs)
                users, seqs = [], []
        if users:
            yield _batch(users, seqs)

    return pack_sequences(batches())


def _batch(users: list[str], seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array(users, dtype=object), np.concatenate(seqs).astype(np.int32),
            np.array([len(s) for s in seqs], np.int64))


def sequences_from_records(directory: str, catalogue: Catalogue, batch_size: int = 512,
                           counts: Optional[sx.ReadCounts] = None) -> PackedSequences:
    """Streamed feed: the SequenceExample shards under `directory` -> packed training index sequences.

    Reads the shards with `tf.data` a batch of users at a time; only the packed
    indices stay in memory (preallocated from the shards' manifest when present).

    Raises:
      FileNotFoundError: no shards under `directory`.
      SequenceRecordError: a malformed record or a training item outside the catalogue (named).
    """
    files = sx.shard_files(directory)
    expected = None
    manifest_path = f"{directory.rstrip('/')}/{sx.MANIFEST_FILE}"
    if io.exists(manifest_path):
        expected = int(io.read_json(manifest_path).get("roles", {}).get("train", 0)) or None
    return pack_sequences(sx.training_batches(files, catalogue.item_ids, batch_size, counts), expected)
