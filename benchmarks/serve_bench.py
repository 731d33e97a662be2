"""Serving benchmark: top-10 retrieval latency and QPS over gRPC, ScaNN vs brute force, gRPC overhead.

For each catalogue size (MovieLens-size 1,682 items, 100K and 1M synthetic
items) it builds LEARN towers over random unit-norm content vectors (latency
does not depend on their values), exports the serving models with
`serving.export.export_serving_models`, starts the gRPC server (`learn serve`'s
`ModelServer`) in a separate process, and measures, in one run:

- in-process latency of the SavedModel signatures (concurrency 1);
- gRPC p50 / p99 latency and QPS at concurrency 1 / 8 / 32, for the ScaNN
  model (`learn_retrieval`) and the brute-force twin (`learn_retrieval_bf`);
- brute force / ScaNN latency ratio and ScaNN recall@10 against exact search
  (over the user vectors of the benchmark's query histories);
- gRPC overhead: gRPC p50 at concurrency 1 / in-process p50.

Usage: python benchmarks/serve_bench.py [--sizes 1682,100000,1000000] [--requests 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import learn_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402

from learn_tf.config import ServingConfig  # noqa: E402
from learn_tf.models.catalogue import Catalogue, item_matrix  # noqa: E402
from learn_tf.models.towers import LearnTowers  # noqa: E402
from serving.client import predict  # noqa: E402
from serving.export import export_serving_models  # noqa: E402
from serving.index import build_index, recall_at_k  # noqa: E402
from serving.layout import RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL  # noqa: E402

CONTENT_DIM, MAX_LEN, HISTORY = 64, 20, 10


def _percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _load(fn: Callable[[int], None], concurrency: int, total: int) -> dict[str, float]:
    """Runs fn(i) for i < total on `concurrency` threads; latency percentiles (ms) and QPS."""
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    errors = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                fn(i)
            except Exception as e:  # counted and reported, never silent
                errors.append(repr(e))
                continue
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p99 = _percentiles(lat)
    return {"p50_ms": p50, "p99_ms": p99, "qps": len(lat) / wall, "errors": len(errors)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_size(n: int, requests: int, workdir: str) -> dict[str, Any]:
    """Exports models for an n-item catalogue and measures them (see the module docstring)."""
    rng = np.random.default_rng(n)
    content = rng.normal(size=(n, CONTENT_DIM)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(n, CONTENT_DIM, d_model=32, num_layers=1, num_heads=2, ff_dim=64, out_dim=32,
                         dropout=0.0, max_len=MAX_LEN, content_table=content)
    cat = Catalogue([f"i{k:07d}" for k in range(n)])
    hist_idx = rng.integers(0, n, size=(512, HISTORY))
    histories = cat.item_ids[hist_idx].astype(bytes)
    base = os.path.join(workdir, f"base-{n}")
    t0 = time.time()
    query_hist = np.zeros((len(hist_idx), MAX_LEN), np.int32)
    query_hist[:, :HISTORY] = hist_idx + 1
    paths = export_serving_models(towers, cat, MAX_LEN, base, serving=ServingConfig(max_k=100, warmup_requests=4),
                                  query_histories=query_hist[:256])
    export_s = time.time() - t0
    scann = paths["scann"]
    print(f"[serve_bench] {n:,} items: exported in {export_s:.1f} s; ScaNN {scann}", flush=True)

    # In-process: the signatures themselves, concurrency 1.
    fns = {m: tf.saved_model.load(paths[m]).signatures["serving_default"] for m in (RETRIEVAL_MODEL,
                                                                                      RETRIEVAL_BF_MODEL)}
    k1, ex1 = tf.constant([10], tf.int32), tf.constant([True])
    inproc = {}
    results: dict[str, list[list[bytes]]] = {}
    for m, fn in fns.items():
        for i in range(5):
            fn(history=tf.constant(histories[i:i + 1]), k=k1, exclude_history=ex1)
        inproc[m] = _load(lambda i, fn=fn: fn(history=tf.constant(histories[i % 512:i % 512 + 1]), k=k1,
                                               exclude_history=ex1), 1, requests)
        out = fn(history=tf.constant(histories[:256]), k=tf.fill([256], 10), exclude_history=tf.fill([256], True))
        results[m] = out["item_ids"].numpy().tolist()
    recall = recall_at_k(np.array(results[RETRIEVAL_MODEL]), np.array(results[RETRIEVAL_BF_MODEL]))
    del fns

    # Index only: the same two TFRS layers (same settings) on precomputed user vectors, one query at a time.
    items = item_matrix(towers, n)
    users = towers.users(tf.constant(query_hist)).numpy()
    index_only = {}
    for kind in ("scann", "brute_force"):
        layer = build_index(kind, items, 100, scann if kind == "scann" else None)
        call = tf.function(lambda q, layer=layer: layer(q, k=10 + HISTORY))
        for i in range(5):
            call(tf.constant(users[i:i + 1]))
        index_only[kind] = _load(lambda i, call=call: call(tf.constant(users[i % 512:i % 512 + 1])), 1, requests)
        del layer
    del items

    # gRPC: the server in its own process (its own GIL), clients here.
    port = _free_port()
    code = ("import sys; sys.path.insert(0, %r); from serving.server import ModelServer; "
            "s = ModelServer(%r, models_config=%r, port=%d, num_threads=32, poll_seconds=30); s.start(); "
            "print('ready', flush=True); s.wait()" % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     base, os.path.join(base, "models.config"), port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.time() + 600
        channel = grpc.insecure_channel(target)
        stub_ready = False
        while time.time() < deadline and not stub_ready:
            try:
                predict(channel, RETRIEVAL_BF_MODEL, {"history": histories[:1], "k": np.array([10], np.int32),
                                                      "exclude_history": np.array([True])}, timeout=30)
                stub_ready = True
            except grpc.RpcError:
                time.sleep(1)
        over_grpc: dict[str, dict[str, Any]] = {}
        for m in (RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL):
            for i in range(10):
                predict(channel, m, {"history": histories[i:i + 1], "k": np.array([10], np.int32),
                                     "exclude_history": np.array([True])})
            over_grpc[m] = {}
            for c in (1, 8, 32):
                over_grpc[m][c] = _load(lambda i, m=m: predict(
                    channel, m, {"history": histories[i % 512:i % 512 + 1], "k": np.array([10], np.int32),
                                 "exclude_history": np.array([True])}), c, requests if c == 1 else 2 * requests)
                print(f"[serve_bench] {n:,} items {m} concurrency {c}: {over_grpc[m][c]}", flush=True)
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(base, ignore_errors=True)
    return {
        "items": n, "export_seconds": export_s,
        "scann": {"num_leaves": scann.num_leaves, "leaves_searched": scann.num_leaves_to_search,
                  "reorder": scann.num_reordering_candidates, "tuning_recall_at_10": scann.measured_recall_at_10},
        "scann_recall_at_10_vs_exact": recall,
        "in_process": inproc, "grpc": over_grpc,
        "bf_over_scann_latency_in_process": inproc[RETRIEVAL_BF_MODEL]["p50_ms"] / inproc[RETRIEVAL_MODEL]["p50_ms"],
        "index_only": index_only,
        "bf_over_scann_latency_index_only": index_only["brute_force"]["p50_ms"] / index_only["scann"]["p50_ms"],
        "grpc_overhead_ratio": {m: over_grpc[m][1]["p50_ms"] / inproc[m]["p50_ms"] for m in over_grpc},
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| items | model | in-process p50 ms | gRPC c=1 p50 / p99 ms | QPS c=1 | c=8 p50 / p99 | QPS c=8 "
             "| c=32 p50 / p99 | QPS c=32 | errors |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for m in (RETRIEVAL_MODEL, RETRIEVAL_BF_MODEL):
            g = r["grpc"][m]
            lines.append(
                f"| {r['items']:,} | {m} | {r['in_process'][m]['p50_ms']:.2f} | "
                + " | ".join(f"{g[c]['p50_ms']:.2f} / {g[c]['p99_ms']:.2f} | {g[c]['qps']:.0f}" for c in (1, 8, 32))
                + f" | {sum(g[c]['errors'] for c in (1, 8, 32))} |")
    lines += ["", "| items | ScaNN leaves / searched | ScaNN recall@10 vs exact (served, with exclusion) | "
              "index-only p50 ms ScaNN / BF | BF / ScaNN latency, index only | BF / ScaNN latency, whole "
              "signature in-process | gRPC overhead (gRPC c=1 p50 / in-process p50) ScaNN, BF |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, io = r["grpc_overhead_ratio"], r["index_only"]
        lines.append(f"| {r['items']:,} | {r['scann']['num_leaves']} / {r['scann']['leaves_searched']} | "
                     f"{r['scann_recall_at_10_vs_exact']:.3f} | {io['scann']['p50_ms']:.3f} / "
                     f"{io['brute_force']['p50_ms']:.3f} | {r['bf_over_scann_latency_index_only']:.1f}x | "
                     f"{r['bf_over_scann_latency_in_process']:.1f}x | {o[RETRIEVAL_MODEL]:.2f}x, "
                     f"{o[RETRIEVAL_BF_MODEL]:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    """Runs the benchmark and prints the tables (and optional JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1682,100000,1000000")
    ap.add_argument("--requests", type=int, default=400, help="requests per measurement at concurrency 1")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="serve_bench-")
    rows = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(bench_size(n, args.requests, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
