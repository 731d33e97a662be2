"""Item-embedding throughput against the hardware, and how the Beam job scales.

Mode `throughput` (default), one process, one machine, the same rendered texts,
batch size and model:

1. the machine's fp32 matmul rate (2048x2048 `tf.matmul`, best of 7), measured
   before and after the embedding runs, in this same run;
2. the Beam job (`run_embedding_job(force=True)` into a fresh temp dir, in_memory
   DirectRunner, 1 worker), timed end to end, with a time split (driver and Beam
   start-up, model load, tokenizer set-up, forward passes, writing and
   publication) measured by wrapping `TextEmbedder` methods in this process;
3. the plain loop (`TextEmbedder(...)` + `embed_texts`, the same batching plan
   as the job) over the distinct rendered texts the job embeds;
4. forward GFLOP/s on real (non-padding) tokens, end to end (all of the job's
   wall time), against the matmul rate: FLOPs = 2 x non-embedding params x
   tokens + 4 x layers x hidden x tokens^2 per text (attention), plus the
   earlier 2 x all params x tokens for comparison with older figures; the
   padding share, tokens/s, and the tokenizer set-up time (fast path, and
   keras-hub's traced tokenizer for comparison);
5. optionally (`--jit-ab N`) the backbone forward with and without
   `jit_compile` on the first N batches of the plan, interleaved, plus XLA's
   compile time;
6. an unchanged re-run of the job (no force: it should skip).

Mode `scale`: synthetic catalogues (`--sizes`, default 10,000 and 100,000
items) through the Beam embedding job with `--model` (default minilm-l6) at
each of `--workers` (default 1 and 2; `multi_processing` DirectRunner), each
run in a fresh child process; prints items/s, wall time and the peak RSS of
the child's whole process tree (driver + Beam workers, sampled every 0.2 s).

Usage:
  python benchmarks/embed_bench.py                      # MovieLens-100K, smollm2-135m, batch 32
  python benchmarks/embed_bench.py --limit 200          # the first 200 items only
  python benchmarks/embed_bench.py --synthetic 10000    # 10,000 synthetic items (start-up costs amortised)
  python benchmarks/embed_bench.py --items path/to/items.parquet --model path/to/preset
  python benchmarks/embed_bench.py --mode scale         # 10k and 100k synthetic items, minilm-l6, 1 and 2 workers
  python benchmarks/embed_bench.py --mode scale --sizes 500 --workers 1,2   # smoke test
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil

import learn_tf  # noqa: F401  (environment before TensorFlow / Keras load)
import keras_hub  # imported before anything is timed
import numpy as np
import pandas as pd
import tensorflow as tf

from beam.embed_pipeline import run_embedding_job
from learn_tf.config import DataConfig, SyntheticConfig, load_config
from learn_tf.data.ingest import ingest
from learn_tf.embeddings import store
from learn_tf.embeddings import text_embedder as encoder_mod
from learn_tf.embeddings.batching import plan_batches
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
                    if name == "__init__":
                        ev["tokenizer_setup"] = enc.tokenizer_setup_seconds
                        ev["fast_tokenizer"] = enc.fast_tokenizer
                    elif name == "tokenize":
                        ev["tokens"] = int(sum(len(r) for r in out[0]))
                    elif name == "embed_ids":
                        ids = args[0]
                        pad_to = args[1] if len(args) > 1 else kwargs.get("pad_to")
                        ev["lengths"] = [len(r) for r in ids]
                        ev["tokens"] = int(sum(ev["lengths"]))
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
        self.t, self.b, self.own = time.perf_counter(), self._busy(), sum(os.times()[:4])  # self + waited children

    def others(self) -> float:
        """Average cores kept busy by other processes since start()."""
        wall = time.perf_counter() - self.t
        busy = (self._busy() - self.b) / self.tick
        return max(0.0, busy - (sum(os.times()[:4]) - self.own)) / max(wall, 1e-9)


def _span(evs: list[dict[str, Any]]) -> float:
    return sum(e["end"] - e["start"] for e in evs)


# --------------------------------------------------------------------------- helpers


def _items_path(args: argparse.Namespace, work: str) -> str:
    path = args.items
    if args.synthetic:
        cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(
            num_items=args.synthetic, num_users=max(10, args.synthetic // 10), seed=0))
        ingest(cfg, os.path.join(work, "data"), write_tfrecords=False, echo=False)
        path = os.path.join(work, "data", "items.parquet")
    elif path is None:
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


# --------------------------------------------------------------------------- FLOPs


def model_flops(backbone: Any, lengths: list[int]) -> dict[str, float]:
    """Forward FLOPs of `backbone` over sequences of these (real) lengths.

    Returns:
      "model": 2 x non-embedding params x tokens + attention (QK^T and AV:
      4 x layers x hidden x L^2 per sequence); "all_params": 2 x all params x
      tokens (the older figure, which counts the embedding lookups as matmuls).
    """
    total = int(backbone.count_params())
    embed = sum(int(np.prod(w.shape)) for w in backbone.weights
                if "embedding" in getattr(w, "path", w.name) and "norm" not in getattr(w, "path", w.name))
    layers, hidden = int(backbone.num_layers), int(backbone.hidden_dim)
    tokens = float(sum(lengths))
    attention = 4.0 * layers * hidden * float(sum(n * n for n in lengths))
    return {"params": total, "embedding_params": embed, "model": 2.0 * (total - embed) * tokens + attention,
            "attention": attention, "all_params": 2.0 * total * tokens}


# --------------------------------------------------------------------------- throughput mode


def keras_tokenizer_setup(preset: str) -> float:
    """keras-hub's own tokenizer: load + traced first call (what every worker paid before the fast path)."""
    t = time.perf_counter()
    tok = keras_hub.models.Tokenizer.from_preset(preset)
    fn = tf.function(lambda x: tok(x), input_signature=[tf.TensorSpec([None], tf.string)])
    fn(tf.constant(["warm up"]))
    return time.perf_counter() - t


def jit_ab(preset: str, a: argparse.Namespace, ids: list[np.ndarray], n_batches: int) -> dict[str, Any]:
    """Steady-state forward with and without jit_compile on the plan's first batches, interleaved."""
    plan = plan_batches([len(r) for r in ids], a.batch_size, a.max_tokens)[:n_batches]
    encs = {jit: encoder_mod.TextEmbedder(preset, pooling=a.pooling, max_tokens=a.max_tokens, jit_compile=jit)
            for jit in (False, True)}
    warm = {}
    for jit, enc in encs.items():  # first call per padded shape: trace (and XLA compile)
        t = time.perf_counter()
        for b in plan:
            enc.embed_ids([ids[i] for i in b])
        warm[jit] = time.perf_counter() - t
    times = {False: 0.0, True: 0.0}
    for _ in range(2):
        for jit, enc in encs.items():
            t = time.perf_counter()
            for b in plan:
                enc.embed_ids([ids[i] for i in b])
            times[jit] += time.perf_counter() - t
    tokens = 2 * sum(len(ids[i]) for b in plan for i in b)
    return {"batches": len(plan), "tokens_per_s_plain": tokens / times[False], "tokens_per_s_jit": tokens / times[True],
            "first_pass_seconds_plain": warm[False], "first_pass_seconds_jit": warm[True],
            "speedup_jit": times[False] / times[True]}


def throughput(a: argparse.Namespace) -> None:
    """The Beam job and the plain loop on the same texts, against the machine's matmul rate."""
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
              f"max_tokens {a.max_tokens}, template {a.template}, jit_compile {a.jit_compile}", flush=True)

        meter = CpuMeter()
        gf_before = matmul_gflops()
        busy_mm_before = meter.others()
        print(f"fp32 2048x2048 matmul: {gf_before:.1f} GFLOP/s (before the runs)", flush=True)

        out = os.path.join(work, "emb")
        beam_args = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]

        def run_beam() -> Any:
            """The Beam job, force=True into a fresh dir."""
            rec.phase = "beam"
            meter.start()
            t0 = time.perf_counter()
            job = run_embedding_job(items_path, out, model=a.model, template=a.template, pooling=a.pooling,
                                    max_tokens=a.max_tokens, batch_size=a.batch_size, beam_args=beam_args,
                                    force=True, jit_compile=a.jit_compile)
            t_end = time.perf_counter()
            t_job = t_end - t0
            busy = meter.others()
            inits, toks, fwds = rec.of("beam", "__init__"), rec.of("beam", "tokenize"), rec.of("beam", "embed_ids")
            assert job.counters["tokens"] == sum(e["tokens"] for e in fwds), "tokens counter != forward inputs"
            split = {
                "driver_and_beam_until_model_load": inits[0]["start"] - t0,
                "model_loads_incl_tokenizer_setup": _span(inits),
                "tokenize_calls": _span(toks),
                "forward_first_call_incl_trace": fwds[0]["end"] - fwds[0]["start"],
                "forward_other_calls": _span(fwds[1:]),
            }
            first = min(e["start"] for e in inits + toks + fwds)
            last = max(e["end"] for e in inits + toks + fwds)
            split["beam_between_model_calls"] = (last - first) - _span(inits) - _span(toks) - _span(fwds)
            split["after_last_forward_write_and_publish"] = t_end - last
            res["beam"] = {
                "seconds": t_job, "job_reported_seconds": job.seconds, "tokens": job.counters["tokens"],
                "padded_tokens": job.counters["padded_tokens"], "forward_passes": job.counters["forward_passes"],
                "backbone_calls": job.counters["backbone_calls"], "encoder_loads": len(inits),
                "tokenize_calls": len(toks), "tokenizer_setup_seconds": inits[0]["tokenizer_setup"],
                "fast_tokenizer": inits[0]["fast_tokenizer"],
                "tokens_per_s": job.counters["tokens"] / t_job, "split": split,
                "steady_forward_tokens_per_s": sum(e["tokens"] for e in fwds[1:]) / max(split["forward_other_calls"],
                                                                                        1e-9),
                "counters": job.counters, "other_processes_cores": busy,
            }
            return job

        def run_loop() -> tuple[Any, np.ndarray]:
            """The plain loop over the same distinct texts, including its own model load."""
            rec.phase = "loop"
            meter.start()
            t0 = time.perf_counter()
            enc = encoder_mod.TextEmbedder(preset, pooling=a.pooling, max_tokens=a.max_tokens,
                                           jit_compile=a.jit_compile)
            t_load = time.perf_counter() - t0
            t_start, last = time.perf_counter(), [0.0]

            def progress(done: int, total: int) -> None:
                now = time.perf_counter()
                if now - last[0] < 5.0 and done < total:
                    return
                last[0] = now
                rate = done / max(now - t_start, 1e-9)
                print(f"[plain loop] embedded {done:,}/{total:,} texts ({100 * done / total:.0f}%), "
                      f"{rate:.1f} texts/s, ETA {(total - done) / rate:.0f} s", flush=True)

            vecs = enc.embed_texts(texts, batch_size=a.batch_size, progress=progress)
            t_loop = time.perf_counter() - t0
            busy = meter.others()
            lfwds = rec.of("loop", "embed_ids")
            steady_t = _span(lfwds[1:])
            res["loop"] = {
                "seconds": t_loop, "load_seconds": t_load, "tokens": enc.real_tokens,
                "padded_tokens": enc.padded_tokens, "forward_passes": len(lfwds),
                "tokenizer_setup_seconds": enc.tokenizer_setup_seconds,
                "tokenize_seconds": _span(rec.of("loop", "tokenize")),
                "forward_first_call_incl_trace": lfwds[0]["end"] - lfwds[0]["start"],
                "forward_other_calls": steady_t,
                "tokens_per_s": enc.real_tokens / t_loop,
                "tokens_per_s_excl_load": enc.real_tokens / (t_loop - t_load),
                "steady_forward_tokens_per_s": sum(e["tokens"] for e in lfwds[1:]) / max(steady_t, 1e-9),
                "other_processes_cores": busy,
            }
            return enc, vecs

        if a.loop_first:
            enc, vecs = run_loop()
            job = run_beam()
        else:
            job = run_beam()
            enc, vecs = run_loop()

        # The job's raw (pre-centring) vectors should be the loop's vectors.
        cache = store.load_cache(out, store.read_manifest(out))
        model_id = job.manifest["model_id"]
        tmpl = resolve_template(a.template)
        diffs = [np.max(np.abs(cache[store.text_hash(model_id, tmpl, t)] - v)) for t, v in zip(texts, vecs)]
        res["max_abs_diff_beam_raw_vs_loop"] = float(max(diffs))

        # ---- FLOPs on real tokens (the texts' own lengths) over end-to-end wall time
        ids, _ = enc.tokenize(texts)
        fl = model_flops(enc.backbone, [len(r) for r in ids])
        assert sum(len(r) for r in ids) == res["beam"]["tokens"] == res["loop"]["tokens"]
        meter.start()
        gf_after = matmul_gflops()
        busy_mm_after = meter.others()
        gf = (gf_before + gf_after) / 2
        b, lp = res["beam"], res["loop"]
        res["flops"] = {
            **fl, "matmul_gflops_before": gf_before, "matmul_gflops_after": gf_after, "matmul_gflops": gf,
            "matmul_other_processes_cores": (busy_mm_before + busy_mm_after) / 2,
            "beam_gflops_real": fl["model"] / b["seconds"] / 1e9,
            "beam_gflops_real_all_params": fl["all_params"] / b["seconds"] / 1e9,
            "loop_gflops_real": fl["model"] / lp["seconds"] / 1e9,
            "beam_steady_forward_gflops_real": model_flops(
                enc.backbone, [n for e in rec.of("beam", "embed_ids")[1:] for n in e["lengths"]])["model"]
            / max(b["split"]["forward_other_calls"], 1e-9) / 1e9,
        }
        res["flops"]["beam_ratio_to_matmul"] = res["flops"]["beam_gflops_real"] / gf
        res["keras_tokenizer_setup_seconds"] = None if a.skip_keras_tokenizer else keras_tokenizer_setup(preset)
        if a.jit_ab:
            res["jit_ab"] = jit_ab(preset, a, ids, a.jit_ab)

        # ---- unchanged re-run: should skip
        rec.phase = "rerun"
        t0 = time.perf_counter()
        again = run_embedding_job(items_path, out, model=a.model, template=a.template, pooling=a.pooling,
                                  max_tokens=a.max_tokens, batch_size=a.batch_size, beam_args=beam_args)
        t_again = time.perf_counter() - t0
        res["rerun"] = {"seconds": t_again, "ran_pipeline": again.ran_pipeline,
                        "fraction_of_full": t_again / b["seconds"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    b, lp, f, r = res["beam"], res["loop"], res["flops"], res["rerun"]

    def pad_share(d: dict[str, Any]) -> float:
        return 1 - d["tokens"] / max(d["padded_tokens"], 1)

    print("\n=== Item embeddings: forward GFLOP/s on real tokens vs the machine's fp32 matmul ===")
    print(f"items {n_items:,} ({len(texts):,} distinct texts), model {a.model}, batch {a.batch_size}, "
          f"max_tokens {a.max_tokens}, jit_compile {a.jit_compile}, 1 worker, in_memory DirectRunner; "
          f"{'loop' if a.loop_first else 'Beam'} ran first")
    print(f"fp32 2048x2048 matmul: {f['matmul_gflops_before']:.1f} GFLOP/s before, {f['matmul_gflops_after']:.1f} "
          f"after (mean {f['matmul_gflops']:.1f})")
    print(f"params {f['params']:,} ({f['embedding_params']:,} in embedding lookups); model FLOPs on real tokens "
          f"{f['model'] / 1e12:.3f} TFLOP (attention {100 * f['attention'] / f['model']:.1f}%)")
    print(f"Beam job end to end: {f['beam_gflops_real']:.1f} GFLOP/s on real tokens = "
          f"{100 * f['beam_ratio_to_matmul']:.0f}% of matmul (goal >= 70%); "
          f"[2 x all params x tokens: {f['beam_gflops_real_all_params']:.1f} GFLOP/s]")
    print(f"  steady-state forward only: {f['beam_steady_forward_gflops_real']:.1f} GFLOP/s on real tokens "
          f"({100 * f['beam_steady_forward_gflops_real'] / f['matmul_gflops']:.0f}% of matmul)")
    print(f"Beam job:   {b['seconds']:7.1f} s  {b['tokens']:,} real tokens, {b['padded_tokens']:,} computed "
          f"(padding share {100 * pad_share(b):.1f}%)  {b['tokens_per_s']:7.1f} tokens/s  "
          f"({b['forward_passes']} forward passes = {b['backbone_calls']} backbone calls, "
          f"{b['encoder_loads']} model load(s))")
    for k, v in b["split"].items():
        print(f"  {k:<40}{v:7.2f} s")
    print(f"Tokenizer set-up (load + build + first call): {b['tokenizer_setup_seconds']:.2f} s "
          f"({'HF tokenizers fast path' if b['fast_tokenizer'] else 'keras-hub'}; goal < 2 s)"
          + (f"; keras-hub traced tokenizer: {res['keras_tokenizer_setup_seconds']:.2f} s"
             if res["keras_tokenizer_setup_seconds"] is not None else ""))
    print(f"Plain loop: {lp['seconds']:7.1f} s  {lp['tokens']:,} real tokens, {lp['padded_tokens']:,} computed "
          f"(padding share {100 * pad_share(lp):.1f}%)  {lp['tokens_per_s']:7.1f} tokens/s incl. load  "
          f"({lp['forward_passes']} forward passes; load {lp['load_seconds']:.2f} s, "
          f"{lp['tokens_per_s_excl_load']:.1f} tokens/s excl. load)")
    print(f"CPU used by other processes (cores of {os.cpu_count()}): Beam {b['other_processes_cores']:.2f}, "
          f"loop {lp['other_processes_cores']:.2f}, matmul {f['matmul_other_processes_cores']:.2f}")
    print(f"Ratio Beam / loop (end to end, both incl. load): {b['tokens_per_s'] / lp['tokens_per_s']:.3f}x")
    print(f"Max |Beam raw vector - loop vector|: {res['max_abs_diff_beam_raw_vs_loop']:.2e}")
    if "jit_ab" in res:
        j = res["jit_ab"]
        print(f"jit_compile A/B on {j['batches']} batches: {j['tokens_per_s_plain']:.1f} tokens/s plain, "
              f"{j['tokens_per_s_jit']:.1f} with XLA ({j['speedup_jit']:.3f}x); first pass over them "
              f"{j['first_pass_seconds_plain']:.1f} s plain, {j['first_pass_seconds_jit']:.1f} s with XLA compiles")
    print(f"Unchanged re-run: {r['seconds']:.2f} s, ran pipeline: {r['ran_pipeline']}, "
          f"{100 * r['fraction_of_full']:.2f}% of the full run")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, default=float)


# --------------------------------------------------------------------------- scale mode


class TreeRss:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.proc, self.every = psutil.Process(pid), every
        self.peak, self.peak_procs = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for q in procs:
                try:
                    total += q.memory_info().rss
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            self._stop.wait(self.every)

    def stop(self) -> tuple[int, int]:
        """Stops sampling; returns (peak bytes, processes at the peak)."""
        self._stop.set()
        self._thread.join()
        return self.peak, self.peak_procs


def scale_one(a: argparse.Namespace) -> None:
    """Child process: one synthetic catalogue through the job at one worker count; writes JSON to --json."""
    n, workers = a.scale_one
    work = tempfile.mkdtemp(prefix=f"embed_scale-{n}-")
    try:
        t0 = time.perf_counter()
        cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(num_items=n, num_users=max(10, n // 10),
                                                                       seed=0))
        ingest(cfg, os.path.join(work, "data"), write_tfrecords=False, echo=False)
        t_gen = time.perf_counter() - t0
        items = os.path.join(work, "data", "items.parquet")
        beam_args = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                     f"--direct_num_workers={workers}"]
        t0 = time.perf_counter()
        job = run_embedding_job(items, os.path.join(work, "emb"), model=a.model, template=a.template,
                                pooling=a.pooling, max_tokens=a.max_tokens, batch_size=a.batch_size,
                                beam_args=beam_args, force=True, jit_compile=a.jit_compile)
        t_job = time.perf_counter() - t0
        c = job.counters
        out = {"items": n, "workers": workers, "generate_seconds": t_gen, "seconds": t_job,
               "items_per_s": n / t_job, "tokens": c["tokens"], "padded_tokens": c["padded_tokens"],
               "forward_passes": c["forward_passes"], "count": job.manifest["count"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(a.json, "w", encoding="utf-8") as fh:
        json.dump(out, fh)


def scale(a: argparse.Namespace) -> None:
    """Each (size, workers) in a fresh child process; the parent samples the child tree's RSS."""
    sizes = [int(x) for x in a.sizes.split(",")]
    workers = [int(x) for x in a.workers.split(",")]
    resolve_preset(a.model)  # convert once (cached) before anything is timed
    rows = []
    for n in sizes:
        for w in workers:
            fd, path = tempfile.mkstemp(suffix=".json")
            os.close(fd)
            cmd = [sys.executable, os.path.abspath(__file__), "--scale-one", str(n), str(w), "--json", path,
                   "--model", a.model, "--template", a.template, "--pooling", a.pooling,
                   "--max-tokens", str(a.max_tokens), "--batch-size", str(a.batch_size)]
            if a.jit_compile:
                cmd.append("--jit-compile")
            print(f"\n--- {n:,} synthetic items, {w} worker(s): {' '.join(cmd[1:])}", flush=True)
            meter = CpuMeter()
            t0 = time.perf_counter()
            child = subprocess.Popen(cmd, cwd=REPO)
            rss = TreeRss(child.pid)
            rc = child.wait()
            peak, procs = rss.stop()
            wall = time.perf_counter() - t0
            if rc != 0:
                raise SystemExit(f"scale run {n} items x {w} workers failed (exit {rc})")
            with open(path, encoding="utf-8") as fh:
                row = json.load(fh)
            os.unlink(path)
            row.update({"process_wall_seconds": wall, "peak_rss_mib": peak / 2**20, "processes_at_peak": procs,
                        "other_processes_cores": meter.others()})
            rows.append(row)
            print(f"    {row['items_per_s']:.1f} items/s ({row['seconds']:.1f} s job), peak RSS "
                  f"{row['peak_rss_mib']:,.0f} MiB over {procs} processes", flush=True)
    print(f"\n=== Embedding job scale: synthetic items, {a.model}, batch {a.batch_size}, max_tokens {a.max_tokens}, "
          f"multi_processing DirectRunner ===")
    print(f"{'items':>9} {'workers':>7} {'job s':>8} {'items/s':>8} {'tokens':>11} {'padding':>8} {'fwd':>6} "
          f"{'peak RSS MiB':>12} {'procs':>5} {'others':>6}")
    for r in rows:
        print(f"{r['items']:>9,} {r['workers']:>7} {r['seconds']:>8.1f} {r['items_per_s']:>8.1f} {r['tokens']:>11,} "
              f"{100 * (1 - r['tokens'] / max(r['padded_tokens'], 1)):>7.1f}% {r['forward_passes']:>6} "
              f"{r['peak_rss_mib']:>12,.0f} {r['processes_at_peak']:>5} {r['other_processes_cores']:>6.2f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("throughput", "scale"), default="throughput")
    p.add_argument("--items", help="items.parquet (default: MovieLens-100K, ingested into a temp dir)")
    p.add_argument("--model", default=None,
                   help="registered preset name or keras-hub preset folder (default: smollm2-135m for throughput, "
                        "minilm-l6 for scale)")
    p.add_argument("--template", default="movielens")
    p.add_argument("--pooling", default="mean")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the backbone forward in the job")
    p.add_argument("--jit-ab", type=int, default=0, metavar="N",
                   help="also time N batches with and without jit_compile (throughput mode)")
    p.add_argument("--skip-keras-tokenizer", action="store_true",
                   help="do not time keras-hub's traced tokenizer for comparison (saves ~10 s with BPE)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="throughput mode on N synthetic items instead of MovieLens (fixed costs amortised)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N items (throughput mode)")
    p.add_argument("--loop-first", action="store_true",
                   help="run the plain loop before the Beam job (default: Beam first); swaps any order effect")
    p.add_argument("--sizes", default="10000,100000", help="scale mode: catalogue sizes")
    p.add_argument("--workers", default="1,2", help="scale mode: Beam worker counts (multi_processing)")
    p.add_argument("--scale-one", type=int, nargs=2, metavar=("ITEMS", "WORKERS"), help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args()
    if a.model is None:
        a.model = "minilm-l6" if (a.mode == "scale" or a.scale_one) else "smollm2-135m"
    if a.scale_one:
        scale_one(a)
    elif a.mode == "scale":
        scale(a)
    else:
        throughput(a)


if __name__ == "__main__":
    main()
