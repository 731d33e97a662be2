"""Synthetic catalogue generation speed: items and interactions per second.

Usage: python benchmarks/synthetic_bench.py [--items 1000000] [--users 100000]
"""

from __future__ import annotations

import argparse
import time

import learn_tf  # noqa: F401
from learn_tf.config import SyntheticConfig
from learn_tf.data.synthetic import generate_synthetic


def main() -> None:
    """Times generation at 1%, 10% and 100% of the requested size."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--topics", type=int, default=200)
    a = p.parse_args()
    print(f"{'items':>10}{'users':>10}{'interactions':>14}{'seconds':>10}{'items/s':>12}")
    for frac in (0.01, 0.1, 1.0):
        cfg = SyntheticConfig(num_items=int(a.items * frac), num_users=max(1, int(a.users * frac)),
                              num_topics=a.topics, mean_sequence_length=20, seed=0)
        t = time.perf_counter()
        items, inter = generate_synthetic(cfg)
        dt = time.perf_counter() - t
        print(f"{len(items):>10,}{cfg.num_users:>10,}{len(inter):>14,}{dt:>10.2f}{len(items) / dt:>12,.0f}")


if __name__ == "__main__":
    main()
