"""Tests for the history/target sampler."""

import numpy as np
import pytest

from learn_tf.config import TrainConfig
from learn_tf.training.sampler import SequenceSampler, next_item_windows


def SamplerSettings(mode="dense", **kw):  # noqa: N802 - the train section with dense cuts by default
    return TrainConfig(sampling=mode, **kw)

SEQS = [np.arange(1, 31), np.arange(101, 106), np.array([7])]


def test_dense_samples_follow_their_cut():
    s = SequenceSampler(SEQS, SamplerSettings(max_len=8, num_targets=3, num_query_positions=4, samples_per_user=5))
    ep = s.epoch()
    assert ep["history"].shape == (10, 8) and ep["targets"].shape == (10, 3) and ep["query_positions"].shape == (10, 4)
    for hist, pos, tgt, pairs in zip(ep["history"], ep["query_positions"], ep["targets"], ep["pair_mask"]):
        h = hist[hist > 0]
        t = tgt[tgt > 0]
        assert len(t) >= 1 and t[0] == h[-1] + 1  # targets start right after the history
        assert np.all(np.diff(np.concatenate([h, t])) == 1)  # consecutive items, in order
        p = pos[pos >= 0]
        assert p.max() == len(h) - 1 and len(set(p)) == len(p)  # the last position is always a query
        assert pairs[: len(p), : len(t)].all() and pairs.sum() == len(p) * len(t)  # every pair is a positive


def test_window_pairs_are_the_items_following_each_position():
    k = 3
    s = SequenceSampler(SEQS, SamplerSettings(mode="window", max_len=8, num_targets=k, num_query_positions=4,
                                              samples_per_user=5))
    ep = s.epoch()
    assert ep["history"].shape == (10, 8) and ep["query_positions"].shape == (10, 4)
    assert ep["targets"].shape == (10, 8 + k - 1) and ep["pair_mask"].shape == (10, 4, 8 + k - 1)
    for hist, pos, tgt, pairs in zip(ep["history"], ep["query_positions"], ep["targets"], ep["pair_mask"]):
        h = hist[hist > 0]
        t = tgt[tgt > 0]
        assert np.array_equal(t[: len(h) - 1], h[1:])  # targets are the history shifted by one ...
        assert len(t) >= len(h) and np.all(np.diff(t) == 1)  # ... then what follows the cut
        p = pos[pos >= 0]
        assert p.max() == len(h) - 1 and len(set(p)) == len(p)  # the last position is always a query
        for qi, position in enumerate(p):
            item = h[position]
            positives = tgt[pairs[qi]]
            # SEQS hold consecutive integers: the positives are the next 1..k items.
            assert positives.tolist() == [x for x in range(item + 1, item + k + 1) if x in set(t)]
        assert not pairs[len(p):].any()


def test_official_mode_one_sample_per_user_in_second_half():
    s = SequenceSampler(SEQS[:1], SamplerSettings(mode="official", max_len=40), seed=3)
    cuts = []
    for _ in range(200):
        ep = s.epoch()
        assert ep["targets"].shape == (1, 1) and ep["query_positions"].tolist() == [[int((ep["history"] > 0).sum()) - 1]]
        assert ep["pair_mask"].tolist() == [[[True]]]
        cuts.append(int(ep["targets"][0, 0]) - 1)  # index of the target in the sequence
    assert min(cuts) >= 15 and max(cuts) <= 29


def test_recency_weighting_prefers_late_cuts_and_epochs_differ():
    base = SamplerSettings(max_len=50, num_targets=1, num_query_positions=1, samples_per_user=400)
    plain = SequenceSampler(SEQS[:1], base, seed=0).epoch()["targets"].mean()
    weighted = SequenceSampler(SEQS[:1], TrainConfig(**{**base.__dict__, "recency_weighted": True}), seed=0)
    assert weighted.epoch()["targets"].mean() > plain
    s = SequenceSampler(SEQS, SamplerSettings(max_len=8), seed=0)
    assert not np.array_equal(s.epoch()["history"], s.epoch()["history"])
    assert np.array_equal(SequenceSampler(SEQS, SamplerSettings(max_len=8), seed=0).epoch()["history"],
                          SequenceSampler(SEQS, SamplerSettings(max_len=8), seed=0).epoch()["history"])


def test_errors():
    with pytest.raises(ValueError, match="no training sequence"):
        SequenceSampler([np.array([1])], SamplerSettings())
    with pytest.raises(ValueError, match="sampling mode"):
        SequenceSampler(SEQS, SamplerSettings(mode="weird"))


def test_next_item_windows_yield_every_transition_exactly_once():
    seqs = [np.arange(1, 31), np.arange(101, 106), np.array([7, 8]), np.array([9])]
    s = SequenceSampler(seqs, TrainConfig(sampling="next_item", max_len=8), seed=0)
    ep = s.epoch()
    assert ep["history"].shape == ep["labels"].shape and ep["history"].shape[1] == 8
    assert s.samples_per_epoch == len(ep["history"]) == 4 + 1 + 1  # ceil(29 / 8), ceil(4 / 8), 1
    pairs = []
    for hist, lab in zip(ep["history"], ep["labels"]):
        n = int((hist > 0).sum())
        assert (lab > 0).sum() == n and not hist[n:].any() and not lab[n:].any()  # right-padded alike
        assert np.array_equal(lab[: n - 1], hist[1:n])  # labels are the inputs shifted by one
        pairs += list(zip(hist[:n].tolist(), lab[:n].tolist()))
    expected = [(int(a), int(b)) for q in seqs for a, b in zip(q[:-1], q[1:])]
    assert sorted(pairs) == sorted(expected)  # each training pair exactly once per epoch
    # Windows are cut from the end: the last window ends at the last transition and is full.
    assert any(h[-1] == 29 and lab[-1] == 30 for h, lab in zip(ep["history"], ep["labels"]))
    assert not np.array_equal(s.epoch()["history"], ep["history"])  # reshuffled each epoch
    inputs, labels = next_item_windows([np.arange(1, 4)], 5)
    assert inputs.tolist() == [[1, 2, 0, 0, 0]] and labels.tolist() == [[2, 3, 0, 0, 0]]


@pytest.mark.parametrize("mode", ["next_item", "dense", "window", "official"])
def test_batches_are_the_epoch_cut_into_pieces_and_packed_input_is_not_copied(mode):
    from learn_tf.training.inputs import PackedSequences

    settings = SamplerSettings(mode=mode, max_len=8, num_targets=3, num_query_positions=4, samples_per_user=5)
    packed = PackedSequences.from_arrays(SEQS)
    whole = SequenceSampler(SEQS, settings, seed=4).epoch()
    s = SequenceSampler(packed, settings, seed=4)
    assert np.shares_memory(s._values, packed.values)  # the sampler keeps the packed values, never a copy
    batches = list(s.epoch_batches(3))
    assert len(batches) == -(-s.samples_per_epoch // 3) and all(len(b["history"]) <= 3 for b in batches)
    for k, v in whole.items():
        assert v.dtype == batches[0][k].dtype and np.array_equal(v, np.concatenate([b[k] for b in batches]))


def test_memory_nbytes_counts_the_plan():
    dense = SequenceSampler(SEQS, SamplerSettings(max_len=8, num_targets=1, num_query_positions=1, samples_per_user=5))
    # 2 sequences x 5 rows x (int32 order + int16 cut), no stored positions, plus starts (int64) and lengths (int32).
    assert dense.memory_nbytes == 10 * 6 + 2 * 12
    nxt = SequenceSampler(SEQS, SamplerSettings(mode="next_item", max_len=8))
    assert nxt.memory_nbytes == nxt.samples_per_epoch * (12 + 4) + 2 * 12
