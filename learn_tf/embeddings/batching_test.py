"""Length-bucketed batch planning shared by the Beam job and the plain loop."""

import math
import random

import pytest

from learn_tf.embeddings.batching import (chunk_sorted, length_bucket, padded_length, plan_batches,
                                          split_full_batches)


def test_bucket_and_padded_length():
    assert [length_bucket(n, 64) for n in (1, 16, 17, 33, 70)] == [16, 16, 32, 48, 64]
    assert [padded_length(n, 64) for n in (0, 1, 13, 64, 90)] == [1, 1, 13, 64, 64]
    assert [padded_length(n, 64, 16) for n in (1, 13, 17, 63)] == [16, 16, 32, 64]


def test_split_full_batches_sorted_with_short_remainder():
    full, rest = split_full_batches([5, 1, 4, 2, 3, 9, 7], 3, lambda v: v)
    assert full == [[1, 2, 3], [4, 5, 7]] and rest == [9]
    assert chunk_sorted([3, 1, 2], 2, lambda v: v) == [[1, 2], [3]]
    with pytest.raises(ValueError):
        split_full_batches([1], 0, lambda v: v)


@pytest.mark.parametrize("n", [0, 1, 3, 31, 32, 33, 500])
def test_plan_uses_ceil_n_over_batch_passes(n):
    rng = random.Random(n)
    lengths = [rng.choice([3, 5, 20, 40, 64, 100]) + rng.randint(0, 3) for _ in range(n)]
    plan = plan_batches(lengths, 32, 64)
    assert len(plan) == math.ceil(n / 32)
    assert sorted(i for b in plan for i in b) == list(range(n))
    assert all(len(b) == 32 for b in plan[:-1])


def test_three_items_of_different_buckets_make_one_batch():
    assert plan_batches([3, 40, 120], 32, 128) == [[0, 1, 2]]


def test_full_batches_hold_similar_lengths():
    rng = random.Random(0)
    lengths = [rng.randint(2, 64) for _ in range(2000)]
    plan = plan_batches(lengths, 32, 64)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    assert padded / sum(lengths) < 1.05  # a random order pads ~1.9x here
