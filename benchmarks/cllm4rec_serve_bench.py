"""CLLM4Rec serving latency: the LLM runs per request (unlike LEARN's exports).

Exports the trained CLLM4Rec of a run (`serving.cllm4rec_export`) into a
model base, then measures, at batch 1 and concurrency 1 over the run's test
histories (last `split.history_max_len` items, with the user id), the
in-process latency of the SavedModel signature and the gRPC latency through
`learn serve`'s `ModelServer`: p50 / p99 in ms, and the prompt lengths.

Usage: python benchmarks/cllm4rec_serve_bench.py --config configs/movielens-cllm4rec.yaml [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import learn_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf  # noqa: E402

from learn_tf.cllm4rec.job import MODEL_NAME  # noqa: E402
from learn_tf.config import load_config  # noqa: E402
from learn_tf.data.splits import read_splits  # noqa: E402
from serving.cllm4rec_export import MODEL, export_cllm4rec  # noqa: E402
from serving.client import make_channel, predict  # noqa: E402
from serving.server import ModelServer  # noqa: E402


def _timed(fn: Callable[[int], Any], n: int, warmup: int = 3) -> dict[str, float]:
    for i in range(warmup):
        fn(i)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "requests": n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--base", default=None, help="model base (default <run>/serving-cllm4rec)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cfg = load_config(args.config)
    layout = cfg.layout()
    base = args.base or os.path.join(layout.root, "serving-cllm4rec")
    t0 = time.time()
    out = export_cllm4rec(os.path.join(layout.models, MODEL_NAME), base, cfg.serving.max_k, cfg.split.history_max_len)
    export_seconds = time.time() - t0
    cases = read_splits(layout.split).cases("test")
    inputs = [{"history": np.array([list(h)], dtype=object).astype(bytes),
               "user_id": np.array([str(u)], dtype=object).astype(bytes),
               "k": np.array([10], np.int32), "exclude_history": np.array([True])}
              for u, h in zip(cases["user_id"], cases["history"])]
    fn = tf.saved_model.load(out["path"]).signatures["serving_default"]
    in_process = _timed(lambda i: fn(**{k: tf.constant(v) for k, v in inputs[i % len(inputs)].items()}),
                        args.requests)
    server = ModelServer(base, port=0, num_threads=4)
    port = server.start()
    try:
        with make_channel(f"127.0.0.1:{port}") as channel:
            grpc_c1 = _timed(lambda i: predict(channel, MODEL, inputs[i % len(inputs)], timeout=60.0), args.requests)
    finally:
        server.stop(grace=1.0)
    lengths = [len(h) for h in cases["history"]]
    result = {"model": MODEL, "version_path": out["path"], "export_seconds": round(export_seconds, 1),
              "history_items_mean": float(np.mean(lengths)), "in_process": in_process, "grpc_c1": grpc_c1,
              "saved_model_mb": round(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out["path"])
                                          for f in fs) / 2**20, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
