"""Training throughput and memory: LEARN (item tower a) versus SASRec at the same settings.

One invocation measures both models side by side on the real MovieLens-100K
interactions, with the config's `model` and `train` sections (default
`configs/movielens.yaml`):

1. ingest + split once (`learn_tf.data.ingest.ingest`, `make_splits`) into a temp dir;
2. for each model, a fresh Python process (so each has its own peak RSS) builds
   the towers exactly as `learn train` does (`jobs.build_towers`), compiles the
   model exactly as `trainer.train` does (`trainer.prepare_training`) and runs
   `model.fit` for `--epochs` epochs of at most `--steps` steps, timing every
   epoch and step; then it times one validation pass (the early-stopping
   evaluation `learn train` runs after every epoch), which is not part of the
   throughput;
3. the parent prints throughput (training sequences/s: one sequence = one
   sampled (history, target) row of the sampler), seconds per epoch (epoch 1
   includes the tf.function trace; the steady figure excludes it and is
   extrapolated to a full epoch when `--steps` cuts epochs short), the peak RSS
   (`resource.getrusage` ru_maxrss) of each process and its growth during
   training, TensorFlow's allocator figures when the device reports them, and how
   many cores other processes kept busy (the machine may be shared).

The content vectors are random unit-norm rows of width `--content-dim` (576, the
SmolLM2-135M width): the towers' cost does not depend on their values.

Usage:
  python benchmarks/train_bench.py                          # 3 epochs, full epochs, both models
  python benchmarks/train_bench.py --epochs 2 --steps 100   # shorter
  python benchmarks/train_bench.py --models sasrec,learn    # the other order
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODELS = {"learn": "LEARN (a)", "sasrec": "SASRec"}


def _busy_jiffies() -> int:
    """Busy jiffies of the whole machine (everything but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def _rss_kib() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident set of this process, KiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def _tf_memory(tf: Any) -> dict[str, Any]:
    """tf.config.experimental.get_memory_info for the first device, or why it is unavailable."""
    device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name
    try:
        info = tf.config.experimental.get_memory_info(device)
        return {"device": device, "current_bytes": int(info["current"]), "peak_bytes": int(info["peak"])}
    except (ValueError, tf.errors.OpError) as e:  # CPU devices do not track allocations
        return {"device": device, "unavailable": str(e).splitlines()[0][:120]}


# --------------------------------------------------------------------------- worker (one model per process)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Trains one model kind on the ingested data in `args.data`; returns the measurements."""
    t_start = time.perf_counter()
    import numpy as np

    import learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf

    from learn_tf.config import load_config
    from learn_tf.data.ingest import read_ingested
    from learn_tf.data.splits import make_splits
    from learn_tf.evaluation.cases import add_earlier_items
    from learn_tf.evaluation.evaluator import evaluate
    from learn_tf.models.catalogue import Catalogue, TowerScorer
    from learn_tf.training.jobs import build_towers
    from learn_tf.training.trainer import prepare_training

    cfg = load_config(args.config)
    items, interactions = read_ingested(args.data)
    splits = make_splits(items, interactions, cfg.split)
    catalogue = Catalogue(np.sort(items["item_id"].astype(str).to_numpy()))
    ordered = splits.train.sort_values(["user_id", "position"], kind="mergesort")
    sequences = [catalogue.indices(g["item_id"].tolist(), context=f"user {u}")
                 for u, g in ordered.groupby("user_id", sort=True)]
    rng = np.random.default_rng(0)
    content = rng.normal(size=(len(catalogue), args.content_dim)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)

    kind = args.worker
    towers = build_towers(cfg.model, cfg.train.max_len, kind, catalogue, content)
    settings = cfg.train
    from dataclasses import replace

    settings = replace(settings, epochs=args.epochs)
    setup = prepare_training(towers, catalogue, sequences, settings)
    steps = setup.steps_per_epoch if args.steps <= 0 else min(args.steps, setup.steps_per_epoch)
    rows_per_epoch = min(setup.sampler.samples_per_epoch, steps * settings.batch_size)
    dataset = setup.dataset.take(steps)
    rss_before = _rss_kib()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    class Timer(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()
            self.first_step = None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 0:
                self.first_step = time.perf_counter() - self.t0

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.epochs.append({"seconds": time.perf_counter() - self.t0, "first_step": self.first_step,
                                "loss": float((logs or {}).get("loss", float("nan")))})

    timer = Timer()
    t_fit = time.perf_counter()
    setup.model.fit(dataset, epochs=args.epochs, callbacks=[timer], verbose=0)
    fit_seconds = time.perf_counter() - t_fit
    maxrss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    val = add_earlier_items(splits.cases("validation"), interactions)
    t_eval = time.perf_counter()
    scorer = TowerScorer(towers, catalogue, cfg.train.max_len)
    evaluate(scorer.score, val, catalogue.item_ids, ks=(10,), protocols=(cfg.train.early_stopping_protocol,))
    eval_seconds = time.perf_counter() - t_eval

    steady = timer.epochs[1:] or timer.epochs
    steady_s = sum(e["seconds"] for e in steady) / len(steady)
    return {
        "model": kind, "params": int(sum(np.prod(w.shape) for w in towers.trainable_weights)),
        "sequences_per_epoch": setup.sampler.samples_per_epoch, "full_steps_per_epoch": setup.steps_per_epoch,
        "steps_per_epoch_run": steps, "rows_per_epoch_run": rows_per_epoch, "batch_size": settings.batch_size,
        "epochs": timer.epochs, "fit_seconds": fit_seconds,
        "first_epoch_seconds": timer.epochs[0]["seconds"],
        "steady_epoch_seconds": steady_s,
        "steady_sequences_per_s": rows_per_epoch / steady_s,
        "overall_sequences_per_s": rows_per_epoch * len(timer.epochs) / fit_seconds,
        "full_epoch_seconds_est": steady_s * setup.steps_per_epoch / steps,
        "val_eval_seconds": eval_seconds,
        "maxrss_mib_before_fit": maxrss_before / 1024, "maxrss_mib_peak": maxrss_train / 1024,
        "rss_mib_before_fit": rss_before.get("VmRSS", 0) / 1024,
        "rss_mib_after_fit": _rss_kib().get("VmRSS", 0) / 1024,
        "tf_memory": _tf_memory(tf), "process_seconds": time.perf_counter() - t_start,
    }


# --------------------------------------------------------------------------- parent


def _run_worker(kind: str, data: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--data", data, "--config", args.config,
           "--epochs", str(args.epochs), "--steps", str(args.steps), "--content-dim", str(args.content_dim)]
    tick = os.sysconf("SC_CLK_TCK")
    t, busy, own = time.perf_counter(), _busy_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"worker {kind} failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = (after.ru_utime + after.ru_stime) - (own.ru_utime + own.ru_stime)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["other_cores_busy"] = max(0.0, (_busy_jiffies() - busy) / tick - mine) / wall
    result["worker_cpu_cores"] = mine / wall
    return result


def _table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("trainable parameters", lambda r: f"{r['params']:,}"),
        ("sequences / epoch (batches)", lambda r: f"{r['sequences_per_epoch']:,} ({r['full_steps_per_epoch']})"),
        ("steps run per epoch", lambda r: f"{r['steps_per_epoch_run']}"),
        ("epoch 1 s (incl. trace)", lambda r: f"{r['first_epoch_seconds']:.1f}"),
        ("first step s (trace)", lambda r: f"{r['epochs'][0]['first_step']:.1f}"),
        ("steady epoch s (as run)", lambda r: f"{r['steady_epoch_seconds']:.1f}"),
        ("steady sequences/s", lambda r: f"{r['steady_sequences_per_s']:,.0f}"),
        ("overall sequences/s (incl. trace)", lambda r: f"{r['overall_sequences_per_s']:,.0f}"),
        ("full epoch s (steady, est.)", lambda r: f"{r['full_epoch_seconds_est']:.1f}"),
        ("validation pass s (per epoch in `learn train`)", lambda r: f"{r['val_eval_seconds']:.1f}"),
        ("peak RSS MiB (ru_maxrss)", lambda r: f"{r['maxrss_mib_peak']:,.0f}"),
        ("peak RSS before fit MiB", lambda r: f"{r['maxrss_mib_before_fit']:,.0f}"),
        ("RSS growth during fit MiB", lambda r: f"{r['maxrss_mib_peak'] - r['maxrss_mib_before_fit']:,.0f}"),
        ("loss per epoch", lambda r: " ".join(f"{e['loss']:.2f}" for e in r["epochs"])),
        ("worker CPU (cores)", lambda r: f"{r['worker_cpu_cores']:.2f}"),
        ("other processes (cores)", lambda r: f"{r['other_cores_busy']:.2f}"),
    ]
    head = "| | " + " | ".join(MODELS[r["model"]] for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    lines += ["| " + name + " | " + " | ".join(fn(r) for r in results) + " |" for name, fn in rows]
    return "\n".join(lines)


def main() -> None:
    """Parses flags; runs the parent (both models) or one worker."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "movielens.yaml"))
    p.add_argument("--epochs", type=int, default=3, help="epochs per model (>= 2 for a steady figure)")
    p.add_argument("--steps", type=int, default=0, help="at most this many steps per epoch (0: full epochs)")
    p.add_argument("--models", default="learn,sasrec", help="comma-separated, in run order: learn, sasrec")
    p.add_argument("--content-dim", type=int, default=576, help="width of the random content vectors")
    p.add_argument("--json", default=None, help="also write the raw measurements here")
    p.add_argument("--worker", choices=sorted(MODELS), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import learn_tf  # noqa: F401
    from learn_tf.config import load_config
    from learn_tf.data.ingest import ingest

    cfg = load_config(args.config)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    for k in kinds:
        if k not in MODELS:
            raise SystemExit(f"unknown model {k!r}; choose from {', '.join(MODELS)}")
    print(f"train_bench: config {args.config}; model {cfg.model}; train batch {cfg.train.batch_size}, "
          f"max_len {cfg.train.max_len}, sampling {cfg.train.sampling} ({cfg.train.num_query_positions} x "
          f"{cfg.train.num_targets}, {cfg.train.samples_per_user} cuts/user); {args.epochs} epochs, "
          f"steps/epoch {'full' if args.steps <= 0 else args.steps}; {os.cpu_count()} CPUs")
    print(f"content vectors: random unit-norm, dim {args.content_dim} (throughput does not depend on their values)")
    with tempfile.TemporaryDirectory(prefix="train_bench-") as tmp:
        t = time.perf_counter()
        ingest(cfg.data, tmp, write_tfrecords=False, echo=False)
        print(f"ingest: {time.perf_counter() - t:.1f} s")
        results = []
        for kind in kinds:
            r = _run_worker(kind, tmp, args)
            print(f"{MODELS[kind]}: {r['steady_sequences_per_s']:,.0f} sequences/s steady, "
                  f"{r['full_epoch_seconds_est']:.1f} s per full epoch, peak RSS {r['maxrss_mib_peak']:,.0f} MiB "
                  f"(process {r['process_seconds']:.0f} s)", flush=True)
            results.append(r)
    print()
    print(_table(results))
    if len(results) == 2:
        a, b = results
        print(f"\n{MODELS[a['model']]} / {MODELS[b['model']]} steady throughput: "
              f"{a['steady_sequences_per_s'] / b['steady_sequences_per_s']:.2f}x")
    mem = results[0]["tf_memory"]
    if "unavailable" in mem:
        print(f"tf memory info: unavailable on {mem['device']} ({mem['unavailable']})")
    else:
        print("tf memory info: " + ", ".join(f"{MODELS[r['model']]} peak {r['tf_memory']['peak_bytes'] / 2**20:,.0f} "
                                             f"MiB" for r in results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
