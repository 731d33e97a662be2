"""Batching benchmark: throughput and latency with server-side batching on vs off, side by side in one run.

Builds LEARN towers over N random unit-norm content vectors (default 1M items, as
benchmarks/serve_bench.py), exports the serving models once, and starts two
`python -m serving.server` processes on that model base: one plain, one with
`--enable_batching` (the exported `batching_parameters.txt`: max_batch_size 64,
batch_timeout_micros 2000, num_batch_threads 2, max_enqueued_batches 256). Clients
in this process send top-10 requests (a history of 10 random items, fixed width, so
concurrent requests can share a batch) with the stock PredictionServiceStub, to one
server at a time, alternating off / on for `--rounds` rounds at each concurrency.
It prints p50 / p99 latency, QPS, errors, the on/off throughput ratio and the p50
that batching adds at concurrency 1, with `uptime` before and after.

`--variant name=value,...` (repeatable) adds one more server with other parameters, measured in
the same rounds: batching parameters (e.g. `num_batch_threads=1`), `early_run=0` (a lone request
waits idle for the timeout, as before the early run of serving.batching), `frontend=sync|aio`
(`--grpc_frontend`; the plain servers run the server's default), `loop=auto|uvloop|asyncio`
(`--grpc_event_loop`, the aio front end's event loop), `nice=N` (`--compute_nice`, the model
threads' nice value), `intra_op=N` / `inter_op=N`
(TensorFlow's thread pools), `batching=0` (an unbatched server, e.g.
`batching=0,frontend=aio`) and `base=DIR` (serve another export of the same catalogue, e.g. one
made with other ScaNN search settings); `--base DIR` keeps the
export in DIR and reuses it on the next run (the 1M export takes minutes).

The client sends PredictRequests serialised once (`--client prebuilt`, the default since
2026-11-30) and checks each response's size, so the client process, which shares the
machine's cores with the servers, spends little CPU; `--client helper` builds and decodes
every request with `serving.client.predict`, as earlier runs did; `--client aio` sends the prebuilt
requests from `grpc.aio` coroutines on one thread (the concurrency is the number of requests in
flight), the cheapest client per request in Python. Every measurement also records the client's
and each server's CPU time per request (process CPU clock; /proc/PID/stat for the server). `--server_args` passes more
`python -m serving.server` flags to every server (e.g. TensorFlow's thread counts).
`--warmup_requests N` sends N unmeasured requests at concurrency 32 to every server first (a 1M
server's throughput climbs over its first few thousand requests). After the rounds, a diagnostic
pass at concurrency 1 sends `--requests / 2` requests to each server in turn, request by request,
so every server idles equally long between its requests under the same machine load; the
criterion stays the p50 of the rounds.

Usage: python benchmarks/batching_bench.py [--items 1000000] [--requests 1000] [--rounds 2]
       [--models learn_retrieval_bf,learn_retrieval] [--variant num_batch_threads=1] [--base DIR]
       [--json out.json] [--client prebuilt|helper|aio] [--server_args '--tensorflow_inter_op_parallelism 1']
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import learn_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from learn_tf.config import ServingConfig  # noqa: E402
from learn_tf.models.catalogue import Catalogue  # noqa: E402
from learn_tf.models.towers import LearnTowers  # noqa: E402
from serve_bench import CONTENT_DIM, HISTORY, MAX_LEN, _load, _percentiles  # noqa: E402
from serving.batching import read_batching_parameters  # noqa: E402
from serving.client import make_channel, predict  # noqa: E402
from serving.export import export_serving_models  # noqa: E402
from serving.layout import BATCHING_FILE, RETRIEVAL_BF_MODEL, RETRIEVAL_MODEL  # noqa: E402


def _request(model: str, history: np.ndarray) -> predict_pb2.PredictRequest:
    """A top-10 PredictRequest for one history row, built once (the client then only sends it)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.array([10], np.int32)))
    request.inputs["exclude_history"].CopyFrom(tf.make_tensor_proto(np.array([True])))
    return request


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _aio_load(target: str, requests: Sequence[predict_pb2.PredictRequest], concurrency: int,
              total: int) -> dict[str, float]:
    """`total` prebuilt requests from `concurrency` grpc.aio coroutines on one thread; latency percentiles
    (ms), QPS and errors, as serve_bench._load."""

    async def run() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        counter = iter(range(total))
        async with grpc.aio.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            async def worker() -> None:
                nonlocal errors
                for i in counter:
                    t = time.perf_counter()
                    try:
                        response = await stub.Predict(requests[i % len(requests)], timeout=120)
                        if len(response.outputs["item_ids"].string_val) != 10:
                            raise RuntimeError("expected 10 item ids")
                    except Exception:  # counted and reported, never silent
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t)

            await stub.Predict(requests[0], timeout=120)  # connect outside the timed part
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return lat, errors, time.perf_counter() - t0

    lat, errors, wall = asyncio.run(run())
    p50, p99 = _percentiles(lat) if lat else (float("nan"), float("nan"))
    return {"p50_ms": p50, "p99_ms": p99, "qps": len(lat) / wall, "errors": errors}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _export(n: int, base: str) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(n)
    content = rng.normal(size=(n, CONTENT_DIM)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    tf.keras.utils.set_random_seed(0)
    towers = LearnTowers(n, CONTENT_DIM, d_model=32, num_layers=1, num_heads=2, ff_dim=64, out_dim=32,
                         dropout=0.0, max_len=MAX_LEN, content_table=content)
    cat = Catalogue([f"i{k:07d}" for k in range(n)])
    hist_idx = rng.integers(0, n, size=(512, HISTORY))
    query_hist = np.zeros((len(hist_idx), MAX_LEN), np.int32)
    query_hist[:, :HISTORY] = hist_idx + 1
    t0 = time.time()
    if os.path.exists(os.path.join(base, "models.config")):
        print(f"[batching_bench] reusing the export in {base}", flush=True)
    else:
        export_serving_models(towers, cat, MAX_LEN, base, serving=ServingConfig(max_k=100, warmup_requests=4),
                              query_histories=query_hist[:256])
        print(f"[batching_bench] {n:,} items exported in {time.time() - t0:.0f} s", flush=True)
    return base, cat.item_ids[hist_idx].astype(bytes)


def _start(base: str, batching: bool, params_file: str = "", extra: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "serving.server", "--model_base", base, "--models_config",
            os.path.join(base, "models.config"), "--port", "0", "--rest_api_port", "-1", "--num_threads", "32",
            "--poll_seconds", "60"] + (["--enable_batching"] if batching else []) + (
            ["--batching_parameters_file", params_file] if params_file else []) + list(extra)
    proc = subprocess.Popen(args, cwd=os.path.dirname(HERE), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 1800)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("serving "):
        proc.kill()
        raise RuntimeError(f"server (batching {batching}) did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


def _start_variant(base: str, params: Any, spec: str, params_file: str,
                   extra: Sequence[str]) -> tuple[subprocess.Popen, str]:
    """Starts the server a `--variant` spec describes (see --help); returns it and its target."""
    changes: dict[str, str] = dict(kv.split("=", 1) for kv in spec.split(","))  # type: ignore[misc]
    flags = list(extra)
    base = changes.pop("base", base)
    if changes.pop("early_run", "1") == "0":  # server flags, not BatchingParameters fields
        flags.append("--no_batching_early_run")
    if "frontend" in changes:  # else the server's default
        flags += ["--grpc_frontend", changes.pop("frontend")]
    if "loop" in changes:  # the aio front end's event loop (else the server's default, auto)
        flags += ["--grpc_event_loop", changes.pop("loop")]
    if "nice" in changes:  # the model threads' nice value (else the server's default)
        flags += ["--compute_nice", changes.pop("nice")]
    for key, flag in (("intra_op", "--tensorflow_intra_op_parallelism"),
                      ("inter_op", "--tensorflow_inter_op_parallelism")):
        if key in changes:
            flags += [flag, changes.pop(key)]
    if changes.pop("batching", "1") == "0":
        return _start(base, False, extra=flags)
    variant = dataclasses.replace(params, **{k: int(v) for k, v in changes.items()})
    with open(params_file, "w") as f:
        f.write("".join(f"{k} {{ value: {v} }}\n" for k, v in dataclasses.asdict(variant).items()))
    return _start(base, True, params_file, flags)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=1000, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating off/on rounds per concurrency")
    p.add_argument("--warmup_requests", type=int, default=0,
                   help="unmeasured requests per server at concurrency 32 before the rounds (at 1M items a "
                   "server's throughput climbs over its first few thousand requests)")
    p.add_argument("--models", default=f"{RETRIEVAL_BF_MODEL},{RETRIEVAL_MODEL}")
    p.add_argument("--variant", action="append", default=[],
                   help="name=value,...: one more server, with batching parameters over the exported ones, and "
                   "early_run=0|1, batching=0|1 (0: unbatched), frontend=sync|aio (--grpc_frontend), "
                   "nice=N (--compute_nice), intra_op=N and inter_op=N (--tensorflow_*_op_parallelism); repeatable")
    p.add_argument("--base", default=None, help="keep (and reuse) the export here")
    p.add_argument("--json", default=None)
    p.add_argument("--server_args", default="",
                   help="more `python -m serving.server` flags for every server, e.g. "
                   "'--tensorflow_intra_op_parallelism 1 --tensorflow_inter_op_parallelism 1'")
    p.add_argument("--client", choices=("prebuilt", "helper", "aio"), default="prebuilt",
                   help="prebuilt: PredictRequests serialised once, responses checked by their sizes (the client "
                   "costs little CPU next to the server on the same cores); helper: serving.client.predict per "
                   "call (builds the TensorProtos and decodes every output, as the runs before 2026-11-30 13:00); aio: "
                   "the prebuilt requests from grpc.aio coroutines on one thread")
    args = p.parse_args()
    extra = args.server_args.split()
    workdir = tempfile.mkdtemp(prefix="batching_bench-")
    procs = []
    try:
        base, histories = _export(args.items, args.base or os.path.join(workdir, "base"))
        params = read_batching_parameters(os.path.join(base, BATCHING_FILE))
        servers: dict[Any, grpc.Channel] = {}
        targets: dict[Any, str] = {}
        pids: dict[Any, int] = {}
        for batching in (False, True):
            proc, target = _start(base, batching, extra=extra)
            procs.append(proc)
            servers[batching], targets[batching], pids[batching] = make_channel(target), target, proc.pid
        for n, spec in enumerate(args.variant):
            proc, target = _start_variant(base, params, spec, os.path.join(workdir, f"variant{n}.txt"), extra)
            procs.append(proc)
            servers[spec], targets[spec], pids[spec] = make_channel(target), target, proc.pid
        before = _uptime()
        print(f"[batching_bench] {before}", flush=True)
        results: dict[str, Any] = {"items": args.items, "batching_parameters": params.__dict__, "uptime_before": before,
                                   "client": args.client, "warmup_requests": args.warmup_requests,
                                   "server_args": args.server_args, "models": {}}
        stubs = {b: prediction_service_pb2_grpc.PredictionServiceStub(ch) for b, ch in servers.items()}
        for model in args.models.split(","):
            requests = [_request(model, histories[i:i + 1]) for i in range(len(histories))]

            def call(i: int, server: Any) -> None:
                if args.client == "helper":
                    predict(servers[server], model, {"history": histories[i % 512:i % 512 + 1],
                                                     "k": np.array([10], np.int32),
                                                     "exclude_history": np.array([True])}, timeout=120)
                    return
                response = stubs[server].Predict(requests[i % len(requests)], timeout=120)
                got = len(response.outputs["item_ids"].string_val)
                if got != 10:
                    raise RuntimeError(f"expected 10 item ids, got {got}")

            for server in servers:  # warm every server: first calls trace nothing, but fill caches
                for i in range(20):
                    call(i, server)
                if args.warmup_requests:  # and reach steady state: throughput climbs over thousands of requests
                    if args.client == "aio":
                        _aio_load(targets[server], requests, 32, args.warmup_requests)
                    else:
                        _load(lambda i, b=server: call(i, b), 32, args.warmup_requests)
            per: dict[str, Any] = {}
            names = {False: "off", True: "on", **{v: f"variant {v}" for v in args.variant}}
            for c in (1, 32):
                runs: dict[Any, list[dict[str, float]]] = {b: [] for b in servers}
                for r in range(args.rounds):
                    order = list(servers) if r % 2 == 0 else list(reversed(list(servers)))
                    for batching in order:
                        client0, server0 = time.process_time(), _proc_cpu_seconds(pids[batching])
                        if args.client == "aio":
                            m = _aio_load(targets[batching], requests, c, args.requests)
                        else:
                            m = _load(lambda i, b=batching: call(i, b), c, args.requests)
                        m["client_cpu_us"] = (time.process_time() - client0) / args.requests * 1e6
                        m["server_cpu_us"] = (_proc_cpu_seconds(pids[batching]) - server0) / args.requests * 1e6
                        runs[batching].append(m)
                        print(f"[batching_bench] {model} c={c} batching {names[batching]} round {r}: {m}", flush=True)
                per[f"c{c}"] = {names[b]: {
                    "qps": float(np.mean([m["qps"] for m in ms])), "p50_ms": float(np.mean([m["p50_ms"] for m in ms])),
                    "p99_ms": float(np.mean([m["p99_ms"] for m in ms])), "errors": int(sum(m["errors"] for m in ms)),
                    "client_cpu_us": float(np.mean([m["client_cpu_us"] for m in ms])),
                    "server_cpu_us": float(np.mean([m["server_cpu_us"] for m in ms])), "rounds": ms}
                    for b, ms in runs.items()}
            per["throughput_ratio_c32"] = per["c32"]["on"]["qps"] / per["c32"]["off"]["qps"]
            per["variants"] = {v: {
                "throughput_ratio_c32": per["c32"][names[v]]["qps"] / per["c32"]["off"]["qps"],
                "throughput_vs_on_c32": per["c32"][names[v]]["qps"] / per["c32"]["on"]["qps"],
                "added_p50_ms_c1": per["c1"][names[v]]["p50_ms"] - per["c1"]["off"]["p50_ms"]} for v in args.variant}
            per["added_p50_ms_c1"] = per["c1"]["on"]["p50_ms"] - per["c1"]["off"]["p50_ms"]
            # Diagnostic: concurrency 1 with the servers taking turns request by request, so every server
            # idles as long between its requests and sees the same machine load (the criterion stays above).
            lat: dict[Any, list[float]] = {b: [] for b in servers}
            failed = 0
            for i in range(args.requests // 2):
                for b in servers:
                    t = time.perf_counter()
                    try:
                        call(i, b)
                    except Exception:  # counted and reported, never silent
                        failed += 1
                        continue
                    lat[b].append(time.perf_counter() - t)
            p50 = {names[b]: float(np.percentile(v, 50) * 1e3) if v else float("nan") for b, v in lat.items()}
            per["c1_interleaved_p50_ms"] = p50
            per["c1_interleaved_errors"] = failed
            per["added_p50_ms_c1_interleaved"] = p50["on"] - p50["off"]
            results["models"][model] = per
            print(f"[batching_bench] {model}: c=32 throughput on/off {per['throughput_ratio_c32']:.2f}x, c=1 p50 "
                  f"added {per['added_p50_ms_c1']:.2f} ms (batch timeout {params.batch_timeout_micros / 1000:.1f} ms; "
                  f"servers taking turns: {per['added_p50_ms_c1_interleaved']:.2f} ms)", flush=True)
        results["uptime_after"] = _uptime()
        print(f"[batching_bench] {results['uptime_after']}")
        print(_table(results, params.batch_timeout_micros / 1000))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def _table(results: dict[str, Any], timeout_ms: float) -> str:
    lines = [f"client: {results['client']}", "",
             "| model | concurrency | batching | QPS | p50 ms | p99 ms | errors | server CPU us/request | "
             "client CPU us/request |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for model, per in results["models"].items():
        for c in ("c1", "c32"):
            for b in per[c]:
                m = per[c][b]
                lines.append(f"| {model} | {c[1:]} | {b} | {m['qps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                             f"{m['errors']} | {m['server_cpu_us']:.0f} | {m['client_cpu_us']:.0f} |")
    lines.append("")
    for model, per in results["models"].items():
        lines.append(f"- {model}: throughput with / without batching at concurrency 32 = "
                     f"**{per['throughput_ratio_c32']:.2f}x**; p50 added at concurrency 1 = "
                     f"**{per['added_p50_ms_c1']:.2f} ms** (bound: batch timeout {timeout_ms:.1f} ms + 1 ms)")
        inter = per["c1_interleaved_p50_ms"]
        lines.append(f"- {model}, concurrency 1 with the servers taking turns request by request (diagnostic): "
                     f"p50 " + ", ".join(f"{b} {v:.2f} ms" for b, v in inter.items())
                     + f"; added {per['added_p50_ms_c1_interleaved']:.2f} ms; errors {per['c1_interleaved_errors']}")
        for v, m in per.get("variants", {}).items():
            lines.append(f"- {model}, variant {v}: throughput at concurrency 32 = {m['throughput_ratio_c32']:.2f}x "
                         f"off, {m['throughput_vs_on_c32']:.2f}x on; p50 added at concurrency 1 = "
                         f"{m['added_p50_ms_c1']:.2f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
