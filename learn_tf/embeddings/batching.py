"""Length-bucketed batching of token sequences, shared by the Beam embedding job and the plain loop.

Texts are grouped by a coarse length bucket; inside a bucket they are sorted
by exact length and cut into full batches, so a batch holds texts of similar
length and is padded only to its own longest text (`padded_length`). What is
left in each bucket (fewer than a batch) is pooled across buckets, sorted by
length and cut again. So n texts always take ceil(n / batch_size) forward
passes, whatever their lengths: an incremental run of 3 new items is one pass.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

BUCKET_WIDTH = 16


def length_bucket(n_tokens: int, max_tokens: int, width: int = BUCKET_WIDTH) -> int:
    """The bucket of a sequence of `n_tokens`: the next multiple of `width`, capped at `max_tokens`."""
    return min(max_tokens, max(width, -(-n_tokens // width) * width))


def padded_length(longest: int, max_tokens: int, multiple: int = 1) -> int:
    """The length a batch is padded to: its longest sequence rounded up to `multiple`, capped at `max_tokens`."""
    return max(1, min(max_tokens, -(-longest // multiple) * multiple)) if longest else 1


def split_full_batches(values: Iterable[T], size: int, sort_key: Callable[[T], Any]
                       ) -> tuple[list[list[T]], list[T]]:
    """Sorts `values` by `sort_key` and cuts full batches of `size`.

    Returns:
      (full batches, the remainder: fewer than `size` values, still sorted).
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    ordered = sorted(values, key=sort_key)
    n_full = len(ordered) // size * size
    return [ordered[s : s + size] for s in range(0, n_full, size)], ordered[n_full:]


def chunk_sorted(values: Iterable[T], size: int, sort_key: Callable[[T], Any]) -> list[list[T]]:
    """Sorts `values` by `sort_key` and cuts them into batches of `size` (the last may be short)."""
    full, rest = split_full_batches(values, size, sort_key)
    return full + ([rest] if rest else [])


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices of `lengths` grouped into forward batches, as the Beam job groups them.

    Args:
      lengths: token count of each sequence.
      batch_size: rows per forward pass.
      max_tokens: the length cap (the last bucket).

    Returns:
      ceil(len(lengths) / batch_size) lists of indices; within a bucket, ties
      in length keep input order.
    """
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(length_bucket(n, max_tokens), []).append(i)
    batches: list[list[int]] = []
    rest: list[int] = []
    for b in sorted(buckets):
        full, left = split_full_batches(buckets[b], batch_size, lambda i: (lengths[i], i))
        batches.extend(full)
        rest.extend(left)
    return batches + chunk_sorted(rest, batch_size, lambda i: (lengths[i], i))
