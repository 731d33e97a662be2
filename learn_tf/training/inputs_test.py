"""Tests for the streamed training input (`train.stream_shuffle_buffer`): RecordSequences and StreamedSampler
give each sequence the same rows per epoch as the exact in-memory path, through bounded buffers."""

import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from learn_tf.config import ConfigError, TrainConfig, load_config
from learn_tf.data import sequence_examples as sx
from learn_tf.models.catalogue import Catalogue
from learn_tf.training import sampler as sampler_mod
from learn_tf.training.inputs import (PackedSequences, RecordSequences, as_packed, item_counts, length_counts,
                                      sequences_from_records)
from learn_tf.training.sampler import SequenceSampler, StreamedSampler, make_sampler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITEMS = [f"i{k:04d}" for k in range(1, 2000)]  # index k <-> "i%04d" % k
CATALOGUE = Catalogue(ITEMS)


def _sequences(num=60, seed=0):
    """Sequence u's items come from its own range (30 u + 1 ...), so a row names its sequence."""
    rng = np.random.default_rng(seed)
    return [np.arange(1 + 30 * u, 1 + 30 * u + int(rng.integers(1, 30))) for u in range(num)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The sequences as SequenceExample shards (3 shards, users in id order), with a held-out tail per user."""
    d = tmp_path_factory.mktemp("seq")
    seqs = _sequences()
    per_shard = -(-len(seqs) // 3)
    for s in range(3):
        with tf.io.TFRecordWriter(str(d / f"{sx.SHARD_PREFIX}-{s:05d}-of-00003{sx.SHARD_SUFFIX}")) as w:
            for u in range(s * per_shard, min(len(seqs), (s + 1) * per_shard)):
                items = [ITEMS[i - 1] for i in seqs[u]] + ["i1999", "i1998"]  # + validation and test positions
                roles = [sx.TRAIN] * len(seqs[u]) + [sx.VALIDATION, sx.TEST]
                n = len(items)
                w.write(sx.user_sequence_example(f"u{u:04d}", items, list(range(n)), list(range(n)), roles))
    return str(d), seqs


def _rows(epoch, keys):
    return Counter(tuple(tuple(np.asarray(epoch[k][r]).ravel().tolist()) for k in keys)
                   for r in range(len(epoch[keys[0]])))


def test_record_sequences_count_what_the_packed_form_holds(shards):
    directory, seqs = shards
    counts = sx.ReadCounts()
    records = RecordSequences(directory, CATALOGUE, batch_size=7, counts=counts)
    packed = sequences_from_records(directory, CATALOGUE)
    assert packed.equals(PackedSequences.from_arrays(seqs)) and records.pack().equals(packed)
    assert len(records) == len(packed) == counts.sequences and records.num_values == len(packed.values)
    assert np.array_equal(item_counts(records, len(CATALOGUE)), item_counts(packed, len(CATALOGUE)))
    assert np.array_equal(length_counts(records), length_counts(packed))
    streamed = [s for block in records.chunks() for s in block]  # shard order = user order
    assert as_packed(streamed).equals(packed)
    shuffled = [s.tolist() for block in records.chunks(np.random.default_rng(3)) for s in block]
    assert sorted(shuffled) == sorted(s.tolist() for s in packed)
    with pytest.raises(ValueError, match="catalogue of 1,999 items, not 10"):
        item_counts(records, 10)


@pytest.mark.parametrize("buffer", [1, 5, 1000])
def test_streamed_next_item_epoch_has_every_training_pair_once(shards, buffer):
    directory, seqs = shards
    settings = TrainConfig(sampling="next_item", max_len=6, batch_size=8, stream_shuffle_buffer=buffer)
    exact = SequenceSampler(seqs, settings, seed=2)
    for source in (RecordSequences(directory, CATALOGUE), PackedSequences.from_arrays(seqs)):
        s = StreamedSampler(source, settings, seed=2, draw=4)
        batches = list(s.epoch_batches(8))
        assert s.samples_per_epoch == exact.samples_per_epoch and s.num_sequences == exact.num_sequences
        assert len(batches) == -(-exact.samples_per_epoch // 8) and all(len(b["history"]) == 8 for b in batches[:-1])
        epoch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        assert {k: v.dtype for k, v in epoch.items()} == {"history": np.int32, "labels": np.int32}
        # The same windows as the exact path: the multiset of (input, label) rows of one epoch.
        assert _rows(epoch, ("history", "labels")) == _rows(exact.epoch(), ("history", "labels"))
    # Every transition once: the (input, label) pairs of all positions are the sequences' transitions.
    pairs = Counter((int(a), int(b)) for h, lab in zip(epoch["history"], epoch["labels"])
                    for a, b in zip(h, lab) if b)
    assert pairs == Counter((int(a), int(b)) for x in seqs for a, b in zip(x[:-1], x[1:]))


def test_streamed_epochs_are_reproducible_and_differ_from_each_other(shards):
    directory, _ = shards
    settings = TrainConfig(sampling="next_item", max_len=6, batch_size=8, stream_shuffle_buffer=4)
    a, b = (StreamedSampler(RecordSequences(directory, CATALOGUE), settings, seed=5) for _ in range(2))
    first = a.epoch()["history"]
    assert np.array_equal(first, b.epoch()["history"])  # same seed, same epoch: same order
    assert not np.array_equal(first, a.epoch()["history"])  # the next epoch reshuffles


@pytest.mark.parametrize("mode", ["dense", "window", "official"])
def test_streamed_cuts_follow_the_exact_samplers_rules(shards, mode):
    directory, seqs = shards
    settings = TrainConfig(sampling=mode, max_len=6, num_targets=3, num_query_positions=3, samples_per_user=4,
                           batch_size=8, stream_shuffle_buffer=3)
    exact = SequenceSampler(seqs, settings, seed=1)
    s = StreamedSampler(RecordSequences(directory, CATALOGUE), settings, seed=1, draw=5)
    epoch, reference = s.epoch(), exact.epoch()
    assert s.samples_per_epoch == exact.samples_per_epoch == len(epoch["history"])
    assert {k: (v.shape[1:], v.dtype) for k, v in epoch.items()} == \
        {k: (v.shape[1:], v.dtype) for k, v in reference.items()}
    owner = {int(i): u for u, x in enumerate(seqs) for i in x}
    per_sequence = Counter()
    for hist, pos, tgt, pairs in zip(epoch["history"], epoch["query_positions"], epoch["targets"],
                                     epoch["pair_mask"]):
        h, t = hist[hist > 0], tgt[tgt > 0]
        seq = seqs[owner[int(h[0])]]
        per_sequence[owner[int(h[0])]] += 1
        start = int(np.flatnonzero(seq == h[0])[0])
        cut = start + len(h)
        assert np.array_equal(seq[start:cut], h) and start == max(0, cut - settings.max_len)
        p = pos[pos >= 0]
        assert p.max() == len(h) - 1  # the last history position is always a query
        if mode != "window":
            assert np.array_equal(t, seq[cut:cut + len(t)]) and len(t) >= 1
            assert pairs.sum() == len(p) * len(t)
        if mode == "official":
            assert cut >= len(seq) // 2
    per_user = 1 if mode == "official" else 4
    assert per_sequence == Counter({u: per_user for u, x in enumerate(seqs) if len(x) >= 2})


def test_streamed_cut_distribution_matches_the_exact_one():
    seqs = [np.arange(1, 13)]
    settings = TrainConfig(sampling="dense", max_len=20, num_targets=1, num_query_positions=1, samples_per_user=8,
                           batch_size=8, stream_shuffle_buffer=2)
    s, exact = StreamedSampler(seqs, settings, seed=0), SequenceSampler(seqs, settings, seed=0)
    got = Counter(int(n) for _ in range(300) for n in (s.epoch()["history"] > 0).sum(1))
    want = Counter(int(n) for _ in range(300) for n in (exact.epoch()["history"] > 0).sum(1))
    assert set(got) == set(want) == set(range(1, 12))  # cuts 1..11, uniform
    assert max(abs(got[c] - want[c]) for c in want) < 0.25 * 2400 / 11


def test_buffers_stay_bounded(shards, monkeypatch):
    directory, _ = shards
    sizes = []
    add = sampler_mod._RowBuffer.add

    def tracked(self, rows):
        add(self, rows)
        sizes.append(self.size)

    monkeypatch.setattr(sampler_mod._RowBuffer, "add", tracked)
    settings = TrainConfig(sampling="dense", max_len=6, num_targets=2, num_query_positions=2, samples_per_user=4,
                           batch_size=4, stream_shuffle_buffer=5)
    s = StreamedSampler(RecordSequences(directory, CATALOGUE), settings, seed=0, draw=2)
    assert sum(len(b["history"]) for b in s.epoch_batches(4)) == s.samples_per_epoch
    assert max(sizes) <= 5 + 4 + 2 * 4  # buffer + a batch + one group's rows, whatever the data size
    assert s.memory_nbytes > 0


def test_trainer_dataset_streams_from_the_shards(shards):
    from learn_tf.training.trainer import epoch_dataset, item_log_frequencies, seen_items

    directory, seqs = shards
    settings = TrainConfig(sampling="next_item", max_len=6, batch_size=8, stream_shuffle_buffer=4)
    records = RecordSequences(directory, CATALOGUE)
    sampler = make_sampler(records, settings, seed=0)
    assert isinstance(sampler, StreamedSampler)
    rows = [b for b in epoch_dataset(sampler, 8).as_numpy_iterator()]  # the reader's tf.data inside tf.data
    exact = SequenceSampler(seqs, settings, seed=0).epoch()
    epoch = {k: np.concatenate([b[k] for b in rows]) for k in rows[0]}
    assert _rows(epoch, ("history", "labels")) == _rows(exact, ("history", "labels"))
    assert np.array_equal(seen_items(records, len(CATALOGUE)), seen_items(seqs, len(CATALOGUE)))
    assert np.array_equal(item_log_frequencies(records, len(CATALOGUE)), item_log_frequencies(seqs, len(CATALOGUE)))
    exact_sampler = make_sampler(records, TrainConfig(sampling="next_item", max_len=6), seed=0)
    assert isinstance(exact_sampler, SequenceSampler)  # 0: the exact path, the shards packed


def test_stream_shuffle_buffer_is_validated(tmp_path):
    with pytest.raises(ValueError, match="stream_shuffle_buffer must be 0"):
        make_sampler(_sequences(), TrainConfig(stream_shuffle_buffer=-1))
    with pytest.raises(ValueError, match="shuffle buffer of >= 1"):
        StreamedSampler(_sequences(), TrainConfig(), buffer=0)
    config = os.path.join(REPO, "configs", "movielens.yaml")
    assert load_config(config).train.stream_shuffle_buffer == 0  # default: the exact path
    text = open(config, encoding="utf-8").read()
    assert "\ntrain:\n" in text
    cases = [(-3, r"must be 0 \(exact in-memory input\) or a buffer of N > 0"), ("big", "must be an integer")]
    for bad, message in cases:
        path = tmp_path / "c.yaml"
        path.write_text(text.replace("\ntrain:\n", f"\ntrain:\n  stream_shuffle_buffer: {bad}\n", 1))
        with pytest.raises(ConfigError, match=r"key 'train.stream_shuffle_buffer' " + message):
            load_config(str(path))


def test_model_trains_on_streamed_shards(shards):
    from learn_tf.models.towers import LearnTowers
    from learn_tf.training.jobs import training_inputs
    from learn_tf.training.trainer import prepare_training

    directory, seqs = shards
    items = pd.DataFrame({"item_id": ITEMS})
    content = np.random.default_rng(0).normal(size=(len(ITEMS), 8)).astype(np.float32)
    catalogue, aligned, records = training_inputs(items, directory, np.array(ITEMS), content, stream=True)
    assert isinstance(records, RecordSequences) and len(records) == len(seqs)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(len(catalogue), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, out_dim=8,
                         dropout=0.0, max_len=6, content_table=aligned)
    settings = TrainConfig(sampling="next_item", negatives="sampled", num_sampled_negatives=16, max_len=6,
                           batch_size=16, epochs=2, stream_shuffle_buffer=8)
    setup = prepare_training(towers, catalogue, records, settings)
    assert isinstance(setup.sampler, StreamedSampler)
    assert setup.steps_per_epoch == -(-SequenceSampler(seqs, settings).samples_per_epoch // 16)
    history = setup.model.fit(setup.dataset, epochs=2, verbose=0).history["loss"]
    assert len(history) == 2 and all(np.isfinite(history))


def test_a_buffer_that_holds_every_sequence_gives_the_exact_batches(shards):
    directory, seqs = shards
    records = RecordSequences(directory, CATALOGUE)
    exact = make_sampler(records, TrainConfig(sampling="next_item", max_len=6, batch_size=8), seed=3).epoch()
    for buffer in (len(seqs), 10 * len(seqs)):  # N >= the sequences: the exact path, batch for batch
        settings = TrainConfig(sampling="next_item", max_len=6, batch_size=8, stream_shuffle_buffer=buffer)
        sampler = make_sampler(records, settings, seed=3)
        assert isinstance(sampler, SequenceSampler)
        epoch = sampler.epoch()
        assert all(np.array_equal(epoch[k], exact[k]) for k in exact)
    smaller = TrainConfig(sampling="next_item", max_len=6, batch_size=8, stream_shuffle_buffer=len(seqs) - 1)
    assert isinstance(make_sampler(records, smaller, seed=3), StreamedSampler)


def test_training_with_a_buffer_that_holds_every_sequence_equals_the_exact_path(shards):
    from learn_tf.models.towers import LearnTowers
    from learn_tf.training.jobs import training_inputs
    from learn_tf.training.trainer import prepare_training

    directory, seqs = shards
    items = pd.DataFrame({"item_id": ITEMS})
    content = np.random.default_rng(0).normal(size=(len(ITEMS), 8)).astype(np.float32)
    losses, weights = [], []
    for buffer in (0, 10 * len(seqs)):
        catalogue, aligned, records = training_inputs(items, directory, np.array(ITEMS), content, stream=True)
        tf.keras.utils.set_random_seed(0)
        towers = LearnTowers(len(catalogue), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, out_dim=8,
                             dropout=0.0, max_len=6, content_table=aligned)
        settings = TrainConfig(sampling="next_item", negatives="sampled", num_sampled_negatives=16, max_len=6,
                               batch_size=16, epochs=2, stream_shuffle_buffer=buffer)
        setup = prepare_training(towers, catalogue, records, settings)
        assert isinstance(setup.sampler, SequenceSampler)
        losses.append(setup.model.fit(setup.dataset, epochs=2, verbose=0).history["loss"])
        weights.append(towers.get_weights())
    assert losses[0] == losses[1]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
