"""Console progress for long jobs: rate (items/s) and ETA."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "items") -> Iterator[T]:
    """Wraps an iterable with a progress bar showing items/s and ETA on stderr."""
    return iter(
        tqdm(
            iterable,
            desc=desc,
            total=total,
            unit=f" {unit}",
            unit_scale=True,
            mininterval=1.0,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
    )


def progress_bar(desc: str, total: Optional[int] = None, unit: str = "items") -> "tqdm[object]":
    """A manually updated progress bar (call `.update(n)`, then `.close()`)."""
    return tqdm(
        desc=desc, total=total, unit=f" {unit}", unit_scale=True, mininterval=1.0,
        file=sys.stderr, dynamic_ncols=True, leave=False,
    )
