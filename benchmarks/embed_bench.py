"""Item-embedding throughput: the Beam job versus a plain keras-hub loop, on the same items.

One process, one machine, the same rendered texts, batch size and model:

1. the Beam job (`run_embedding_job(force=True)` into a fresh temp dir, in_memory
   DirectRunner, 1 worker), timed end to end, with a time split (driver and Beam
   start-up, model load, tokenizer trace, forward passes, writing and
   publication) measured by wrapping `TextEmbedder` methods in this process;
2. the plain loop (`TextEmbedder(...)` + `embed_texts`) over the distinct
   rendered texts the job embeds, including its own model load, and in steady
   state (after load and the first traced call);
3. achieved GFLOP/s (forward FLOPs ~ 2 * params * tokens, real and padded
   tokens) against a measured fp32 matmul rate of the machine;
4. an unchanged re-run of the job (no force: it should skip) relative to the full run.

Usage:
  python benchmarks/embed_bench.py                      # MovieLens-100K, smollm2-135m, batch 32
  python benchmarks/embed_bench.py --limit 200          # the first 200 items only
  python benchmarks/embed_bench.py --items path/to/items.parquet --model path/to/preset
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import shutil
import tempfile
import time
from typing import Any

import keras_hub  # noqa: F401  (imported before anything is timed)
import numpy as np
import pandas as pd
import tensorflow as tf

import learn_tf  # noqa: F401  (environment before TensorFlow / Keras load)
from beam.embed_pipeline import run_embedding_job
from learn_tf.config import load_config
from learn_tf.data.ingest import ingest
from learn_tf.embeddings import store
from learn_tf.embeddings import text_embedder as encoder_mod
from learn_tf.embeddings.templates import item_text, resolve_template, text_columns
from learn_tf.pretrained.presets import resolve_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- instrumentation


class Recorder:
    """Wall-clock intervals of TextEmbedder calls, tagged by the current phase."""

    def __init__(self) -> None:
        self.phase = "none"
        self.events: list[dict[str, Any]] = []

    def wrap(self, cls: type) -> None:
        for name in ("__init__", "tokenize", "embed_ids"):
            orig = getattr(cls, name)

            def make(orig, name):
                @functools.wraps(orig)
                def wrapper(enc, *args, **kwargs):
                    t = time.perf_counter()
                    out = orig(enc, *args, **kwargs)
                    ev = {"phase": self.phase, "call": name, "start": t, "end": time.perf_counter()}
                    if name == "tokenize":
                        ev["tokens"] = int(sum(len(r) for r in out[0]))
                    elif name == "embed_ids":
                        ids = args[0]
                        pad_to = args[1] if len(args) > 1 else kwargs.get("pad_to")
                        ev["tokens"] = int(sum(len(r) for r in ids))
                        ev["padded"] = int(len(ids) * (pad_to or max((len(r) for r in ids), default=0)))
                        ev["rows"] = len(ids)
                    self.events.append(ev)
                    return out

                return wrapper

            setattr(cls, name, make(orig, name))

    def of(self, phase: str, call: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["phase"] == phase and e["call"] == call]


class CpuMeter:
    """CPU used by *other* processes on this machine during a section (a shared machine skews timings)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4]  # everything but idle and iowait

    def start(self) -> None:
        self.t, self.b, self.own = time.perf_counter(), self._busy(), sum(os.times()[:2])

    def others(self) -> float:
        """Average cores kept busy by other processes since start()."""
        wall = time.perf_counter() - self.t
        busy = (self._busy() - self.b) / self.tick
        return max(0.0, busy - (sum(os.times()[:2]) - self.own)) / max(wall, 1e-9)


def _span(evs: list[dict[str, Any]]) -> float:
    return sum(e["end"] - e["start"] for e in evs)


# --------------------------------------------------------------------------- helpers


def _items_path(args: argparse.Namespace, work: str) -> str:
    path = args.items
    if path is None:
        cfg = load_config(os.path.join(REPO, "configs", "movielens.yaml"))
        ingest(cfg.data, os.path.join(work, "data"), write_tfrecords=False, echo=False)
        path = os.path.join(work, "data", "items.parquet")
    if args.limit:
        df = pd.read_parquet(path).head(args.limit)
        path = os.path.join(work, f"items-first{args.limit}.parquet")
        df.to_parquet(path, index=False)
    return path


def _distinct_texts(items_path: str, template: str) -> tuple[int, list[str]]:
    """The texts the job embeds (`item_text`, as in the Beam job), one per distinct text."""
    template = resolve_template(template)
    df = pd.read_parquet(items_path)
    texts = dict.fromkeys(item_text(template, row)[0] for row in df[text_columns(template)].to_dict("records"))
    return len(df), list(texts)


def _warm_page_cache(folder: str) -> None:
    """Reads the preset files once so neither contender pays a cold disk read."""
    for f in glob.glob(os.path.join(folder, "*")):
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def matmul_gflops(n: int = 2048, repeats: int = 7) -> float:
    """Best-of-`repeats` fp32 n x n matmul rate in TensorFlow, GFLOP/s."""
    a = tf.random.normal([n, n], dtype=tf.float32)
    b = tf.random.normal([n, n], dtype=tf.float32)
    tf.matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", help="items.parquet (default: MovieLens-100K, ingested into a temp dir)")
    p.add_argument("--model", default="smollm2-135m", help="registered preset name or keras-hub preset folder")
    p.add_argument("--template", default="movielens")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=0, help="use only the first N items")
    p.add_argument("--loop-first", action="store_true",
                   help="run the plain loop before the Beam job (default: Beam first); swaps any order effect")
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args()

    rec = Recorder()
    rec.wrap(encoder_mod.TextEmbedder)
    work = tempfile.mkdtemp(prefix="embed_bench-")
    res: dict[str, Any] = {"args": vars(a)}
    try:
        items_path = _items_path(a, work)
        n_items, texts = _distinct_texts(items_path, a.template)
        preset = resolve_preset(a.model)  # converts once (cached) before anything is timed
        _warm_page_cache(preset)
        print(f"items {n_items:,}, distinct texts {len(texts):,}, model {a.model}, batch {a.batch_size}, "
              f"max_tokens {a.max_tokens}, template {a.template}", flush=True)

        out = os.path.join(work, "emb")
        beam_args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
        meter = CpuMeter()

        def run_beam() -> Any:
            """1. The Beam job, force=True into a fresh dir."""
            rec.phase = "beam"
            meter.start()
            t0 = time.perf_counter()
            job = run_embedding_job(items_path, out, model=a.model, template=a.template, pooling=a.pooling,
                                    max_tokens=a.max_tokens, batch_size=a.batch_size, beam_args=beam_args,
                                    force=True)
            t_end = time.perf_counter()
            t_job = t_end - t0
            busy = meter.others()
            inits, toks, fwds = rec.of("beam", "__init__"), rec.of("beam", "tokenize"), rec.of("beam", "embed_ids")
            assert job.counters["tokens"] == sum(e["tokens"] for e in fwds), "tokens counter != forward inputs"
            split = {
                "driver_and_beam_until_model_load": inits[0]["start"] - t0,
                "model_loads": _span(inits),
                "tokenize_first_call_incl_trace": toks[0]["end"] - toks[0]["start"],
                "tokenize_other_calls": _span(toks[1:]),
                "forward_first_call_incl_trace": fwds[0]["end"] - fwds[0]["start"],
                "forward_other_calls": _span(fwds[1:]),
            }
            first = min(e["start"] for e in inits + toks + fwds)
            last = max(e["end"] for e in inits + toks + fwds)
            split["beam_between_model_calls"] = (last - first) - _span(inits) - _span(toks) - _span(fwds)
            split["after_last_forward_write_and_publish"] = t_end - last
            res["beam"] = {
                "seconds": t_job, "job_reported_seconds": job.seconds, "tokens": job.counters["tokens"],
                "padded_tokens": sum(e["padded"] for e in fwds), "steady_padded": sum(e["padded"] for e in fwds[1:]),
                "forward_passes": len(fwds), "encoder_loads": len(inits), "tokenize_calls": len(toks),
                "tokens_per_s": job.counters["tokens"] / t_job, "split": split,
                "steady_forward_tokens_per_s": sum(e["tokens"] for e in fwds[1:]) / split["forward_other_calls"],
                "counters": job.counters, "other_processes_cores": busy,
            }
            return job

        def run_loop() -> tuple[Any, np.ndarray]:
            """2. The plain loop over the same distinct texts, including its own model load."""
            rec.phase = "loop"
            meter.start()
            t0 = time.perf_counter()
            enc = encoder_mod.TextEmbedder(preset, pooling=a.pooling, max_tokens=a.max_tokens)
            t_load = time.perf_counter() - t0
            vecs = enc.embed_texts(texts, batch_size=a.batch_size)
            t_loop = time.perf_counter() - t0
            busy = meter.others()
            ltoks, lfwds = rec.of("loop", "tokenize"), rec.of("loop", "embed_ids")
            tokens = sum(e["tokens"] for e in lfwds)
            steady_t = _span(lfwds[1:])
            res["loop"] = {
                "seconds": t_loop, "load_seconds": t_load, "tokens": tokens,
                "padded_tokens": sum(e["padded"] for e in lfwds), "steady_padded": sum(e["padded"] for e in lfwds[1:]),
                "forward_passes": len(lfwds),
                "tokenize_seconds_incl_trace": _span(ltoks),
                "forward_first_call_incl_trace": lfwds[0]["end"] - lfwds[0]["start"],
                "forward_other_calls": steady_t,
                "tokens_per_s": tokens / t_loop,
                "tokens_per_s_excl_load": tokens / (t_loop - t_load),
                "steady_forward_tokens_per_s": sum(e["tokens"] for e in lfwds[1:]) / steady_t,
                "other_processes_cores": busy,
            }
            return enc, vecs

        if a.loop_first:
            enc, vecs = run_loop()
            job = run_beam()
        else:
            job = run_beam()
            enc, vecs = run_loop()
        t_job, t_loop = res["beam"]["seconds"], res["loop"]["seconds"]
        beam_tokens, loop_tokens = res["beam"]["tokens"], res["loop"]["tokens"]
        beam_padded, loop_padded = res["beam"]["padded_tokens"], res["loop"]["padded_tokens"]

        # The job's raw (pre-centring) vectors should be the loop's vectors.
        cache = store.load_cache(out, store.read_manifest(out))
        model_id = job.manifest["model_id"]
        tmpl = resolve_template(a.template)
        diffs = [np.max(np.abs(cache[store.text_hash(model_id, tmpl, t)] - v)) for t, v in zip(texts, vecs)]
        res["max_abs_diff_beam_raw_vs_loop"] = float(max(diffs))

        # ---- 3. FLOPs
        bb = enc.backbone
        n_params = int(bb.count_params())
        n_embed = int(np.prod(bb.token_embedding.embeddings.shape))
        meter.start()
        gf = matmul_gflops()
        busy_mm = meter.others()

        def rate(params, tokens, seconds):
            return 2 * params * tokens / seconds / 1e9
        res["flops"] = {
            "params": n_params, "params_without_token_embedding": n_params - n_embed, "matmul_2048_gflops": gf,
            "matmul_other_processes_cores": busy_mm,
            "beam_gflops_real": rate(n_params, beam_tokens, t_job),
            "beam_gflops_padded": rate(n_params, beam_padded, t_job),
            "beam_steady_forward_gflops_padded": rate(
                n_params, res["beam"]["steady_padded"], res["beam"]["split"]["forward_other_calls"]),
            "loop_gflops_real": rate(n_params, loop_tokens, t_loop),
            "loop_gflops_padded": rate(n_params, loop_padded, t_loop),
            "loop_steady_forward_gflops_padded": rate(
                n_params, res["loop"]["steady_padded"], res["loop"]["forward_other_calls"]),
        }

        # ---- 4. unchanged re-run: should skip
        rec.phase = "rerun"
        t0 = time.perf_counter()
        again = run_embedding_job(items_path, out, model=a.model, template=a.template, pooling=a.pooling,
                                  max_tokens=a.max_tokens, batch_size=a.batch_size, beam_args=beam_args)
        t_again = time.perf_counter() - t0
        res["rerun"] = {"seconds": t_again, "ran_pipeline": again.ran_pipeline, "fraction_of_full": t_again / t_job}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    b, lp, f, r = res["beam"], res["loop"], res["flops"], res["rerun"]
    s = b["split"]
    print("\n=== Item embeddings: Beam job vs plain keras-hub loop ===")
    print(f"items {n_items:,} ({len(texts):,} distinct texts), model {a.model}, batch {a.batch_size}, "
          f"max_tokens {a.max_tokens}, 1 worker, in_memory DirectRunner; "
          f"{'loop' if a.loop_first else 'Beam'} ran first")
    print(f"Beam job:   {b['seconds']:7.1f} s  {b['tokens']:,} tokens ({b['padded_tokens']:,} padded)  "
          f"{b['tokens_per_s']:7.1f} tokens/s  ({b['forward_passes']} forward passes, "
          f"{b['encoder_loads']} model load(s), {b['tokenize_calls']} tokenize calls)")
    for k, v in s.items():
        print(f"  {k:<40}{v:7.2f} s")
    print(f"  steady-state forward                     {b['steady_forward_tokens_per_s']:7.1f} tokens/s")
    print(f"Plain loop: {lp['seconds']:7.1f} s  {lp['tokens']:,} tokens ({lp['padded_tokens']:,} padded)  "
          f"{lp['tokens_per_s']:7.1f} tokens/s incl. load  ({lp['forward_passes']} forward passes)")
    print(f"  model load                              {lp['load_seconds']:7.2f} s")
    print(f"  tokenize (one call, incl. trace)        {lp['tokenize_seconds_incl_trace']:7.2f} s")
    print(f"  forward first call (incl. trace)        {lp['forward_first_call_incl_trace']:7.2f} s")
    print(f"  forward other calls                     {lp['forward_other_calls']:7.2f} s")
    print(f"  excluding load                          {lp['tokens_per_s_excl_load']:7.1f} tokens/s")
    print(f"  steady-state forward                    {lp['steady_forward_tokens_per_s']:7.1f} tokens/s")
    print(f"CPU used by other processes (cores of {os.cpu_count()}): Beam {b['other_processes_cores']:.2f}, "
          f"loop {lp['other_processes_cores']:.2f}, matmul {f['matmul_other_processes_cores']:.2f}")
    print(f"Ratio Beam / loop (end to end, both incl. load): {b['tokens_per_s'] / lp['tokens_per_s']:.3f}x "
          f"(goal >= 0.9x)")
    print(f"Ratio Beam / loop (steady-state forward):       "
          f"{b['steady_forward_tokens_per_s'] / lp['steady_forward_tokens_per_s']:.3f}x")
    print(f"Max |Beam raw vector - loop vector|: {res['max_abs_diff_beam_raw_vs_loop']:.2e}")
    print(f"Params {f['params']:,} ({f['params_without_token_embedding']:,} without the token embedding); "
          f"fp32 2048x2048 matmul: {f['matmul_2048_gflops']:.1f} GFLOP/s (best of 7)")
    print(f"GFLOP/s (2 * params * tokens / wall): Beam {f['beam_gflops_real']:.1f} real, "
          f"{f['beam_gflops_padded']:.1f} padded; loop {f['loop_gflops_real']:.1f} real, "
          f"{f['loop_gflops_padded']:.1f} padded")
    print(f"  steady-state forward, padded: Beam {f['beam_steady_forward_gflops_padded']:.1f}, "
          f"loop {f['loop_steady_forward_gflops_padded']:.1f} "
          f"({100 * f['loop_steady_forward_gflops_padded'] / f['matmul_2048_gflops']:.0f}% of matmul peak)")
    print(f"Unchanged re-run: {r['seconds']:.2f} s, ran pipeline: {r['ran_pipeline']}, "
          f"{100 * r['fraction_of_full']:.2f}% of the full run (goal <= 2%)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, default=float)


if __name__ == "__main__":
    main()
