"""Training LEARN with sampled negatives as the catalogue grows (issue 13): sequences/s and peak RSS.

For each catalogue size (`--items`, default 100k and 1M items) the same amount
of training data (`--users` users, `--mean-length` interactions each, from the
synthetic generator `learn_tf.data.synthetic`; its users and sequence lengths do
not depend on the catalogue) trains small LEARN towers with the next-item
objective and `negatives: sampled` (in-batch positives + `--num-sampled`
shared negatives drawn from the catalogue per step, logQ-corrected), so only the
catalogue grows between rows:

1. prepare (the parent, not measured): generate the interactions, turn them into
   per-user catalogue index sequences (oldest first) and save them (`.npz`);
2. measure (a fresh process per size, so each has its own peak RSS): random
   unit-norm content vectors of `--content-dim` (the frozen LLM item embeddings;
   the cost does not depend on their values), the catalogue, the towers
   (`jobs.build_towers`: the config's model section with `--d-model`,
   `--layers`, `--item-tower`, `--item-inputs`), the compiled model exactly as
   `trainer.train` builds it (`trainer.prepare_training`, the config's train
   section with sampling next_item, negatives sampled), then `model.fit` over
   `--warmup` + `--steps` batches. Steady throughput is over the `--steps`
   batches after the warm-up (the warm-up pays the tf.function trace).

It prints per size: training sequences/s (one sequence = one next-item window
row of up to max_len positions; the positions, each a (query, next item)
pair, are counted too: an epoch's transitions per window), ms per step, peak RSS (`VmHWM`) before and after
training, what the catalogue-sized tables hold by construction (content table,
ID table and its Adam slots for hybrid towers, the logQ / sampler tables), and
the growth between the smallest and largest catalogue. CPU only; the machine
should be quiet for the speed figures (the load during the run is printed).

Usage:
  python benchmarks/scale_train_bench.py                                   # 100k and 1M items
  python benchmarks/scale_train_bench.py --items 2000,20000 --users 2000 --steps 30 --warmup 5  # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


from trainer_rss_bench import _rss_mib  # noqa: E402 - the same /proc reading (benchmarks/ is on sys.path)


def _busy_jiffies() -> int:
    """Busy jiffies of the whole machine (everything but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


# --------------------------------------------------------------------------- prepare (the parent, not measured)


def prepare(items: int, args: argparse.Namespace, path: str) -> dict[str, Any]:
    """Synthetic interactions over `items` items -> per-user index sequences saved at `path` (.npz)."""
    import numpy as np
    import pandas as pd

    from learn_tf.config import SyntheticConfig
    from learn_tf.data.synthetic import generate_synthetic

    t0 = time.perf_counter()
    catalogue, inter = generate_synthetic(SyntheticConfig(num_items=items, num_users=args.users,
                                                          mean_sequence_length=args.mean_length,
                                                          min_sequence_length=3, seed=args.seed))
    ids = np.sort(catalogue["item_id"].astype(str).to_numpy())  # the Catalogue's order: index i + 1 = ids[i]
    inter = inter.sort_values(["user_id", "timestamp", "row"], kind="mergesort")
    index = pd.Index(ids).get_indexer(inter["item_id"].astype(str)) + 1
    lengths = inter.groupby("user_id", sort=False).size().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    np.savez(path, values=index.astype(np.int32), offsets=offsets.astype(np.int64))
    return {"items": items, "users": len(lengths), "interactions": int(len(index)),
            "prepare_s": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- measure (a fresh process)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Trains on the sequences in args.data over a catalogue of args.size items; returns the measurements."""
    import dataclasses

    import numpy as np

    import learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf

    from learn_tf.config import load_config
    from learn_tf.models.catalogue import Catalogue
    from learn_tf.training.inputs import PackedSequences
    from learn_tf.training.jobs import build_towers
    from learn_tf.training.trainer import prepare_training

    stages: dict[str, dict[str, float]] = {"imports": _rss_mib()}
    cfg = load_config(args.config)
    model = dataclasses.replace(cfg.model, d_model=args.d_model, num_layers=args.layers, ff_dim=2 * args.d_model,
                                out_dim=args.d_model, item_tower=args.item_tower or cfg.model.item_tower,
                                item_inputs=args.item_inputs or cfg.model.item_inputs)
    settings = dataclasses.replace(cfg.train, sampling="next_item", negatives="sampled",
                                   num_sampled_negatives=args.num_sampled, batch_size=args.batch_size,
                                   max_len=args.max_len, epochs=1, pretrain_epochs=0, seed=args.seed)
    data = np.load(args.data)
    sequences = PackedSequences(data["values"], data["offsets"])
    catalogue = Catalogue(np.sort(np.char.add("i", np.arange(args.size).astype(str))))
    rng = np.random.default_rng(0)
    content = np.empty((args.size, args.content_dim), np.float32)
    for lo in range(0, args.size, 1 << 16):  # in blocks: no float64 copy of the table
        block = rng.standard_normal((min(args.size, lo + (1 << 16)) - lo, args.content_dim), dtype=np.float32)
        content[lo:lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    stages["data"] = _rss_mib()
    towers = build_towers(model, settings.max_len, "learn", catalogue, content)
    setup = prepare_training(towers, catalogue, sequences, settings)
    stages["setup"] = _rss_mib()
    steps = args.warmup + args.steps
    times: list[float] = []

    class Timer(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            times.append(time.perf_counter())

    t0 = time.perf_counter()
    tick = os.sysconf("SC_CLK_TCK")
    busy0, cpu0 = _busy_jiffies(), time.process_time()
    history = setup.model.fit(setup.dataset.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[Timer()],
                              verbose=0)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    other = max(0.0, (_busy_jiffies() - busy0) / tick - cpu) / wall
    stages["trained"] = _rss_mib()
    steady = times[-1] - times[args.warmup - 1] if args.warmup > 0 else times[-1] - t0
    rows = args.steps * settings.batch_size
    # Positions (query, next item pairs) per row: an epoch's transitions over its windows.
    per_row = float((sequences.lengths - 1).clip(0).sum()) / setup.sampler.samples_per_epoch
    ids = getattr(towers, "ids", None)
    id_mib = (int(np.prod(ids.embeddings.shape)) * 4 / 2 ** 20) if ids is not None else 0.0
    return {
        "items": args.size, "sequences": len(sequences), "rows_per_epoch": setup.sampler.samples_per_epoch,
        "batch_size": settings.batch_size, "num_sampled": settings.num_sampled_negatives,
        "negatives": setup.model.negatives, "params": int(sum(np.prod(w.shape) for w in towers.trainable_weights)),
        "steps": args.steps, "warmup": args.warmup, "first_steps_s": round(times[args.warmup - 1] - t0, 1)
        if args.warmup > 0 else 0.0,
        "steady_s": round(steady, 2), "ms_per_step": round(1000 * steady / args.steps, 1),
        "sequences_per_s": round(rows / steady, 1), "positions_per_s": round(per_row * rows / steady, 1),
        "loss": float(history.history["loss"][-1]),
        "stages": stages, "peak_mib": stages["trained"]["VmHWM"], "setup_peak_mib": stages["setup"]["VmHWM"],
        "content_mib": round(content.nbytes / 2 ** 20, 1), "id_table_mib": round(id_mib, 1),
        "process_cpu_cores": round(cpu / wall, 2), "other_cores_busy": round(other, 2),
    }


# --------------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    """Parses flags; runs as the parent (prepare + one measuring process per size) or as one measurement."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", default="100000,1000000", help="catalogue sizes, comma-separated")
    ap.add_argument("--users", type=int, default=50_000, help="users (the same for every catalogue size)")
    ap.add_argument("--mean-length", type=float, default=20.0, help="mean interactions per user")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "movielens.yaml"),
                    help="its model and train sections, with the overrides below")
    ap.add_argument("--d-model", type=int, default=64, help="towers' width (ff 2x, output = d_model)")
    ap.add_argument("--layers", type=int, default=2, help="transformer layers")
    ap.add_argument("--item-tower", default="", help="a | b | c | e (default: the config's)")
    ap.add_argument("--item-inputs", default="", help="content | hybrid (default: the config's)")
    ap.add_argument("--content-dim", type=int, default=384, help="content vector width (384: MiniLM-L6)")
    ap.add_argument("--num-sampled", type=int, default=1024, help="shared sampled negatives per step")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20, help="batches before timing (pay the trace)")
    ap.add_argument("--steps", type=int, default=300, help="timed batches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--mode", choices=("parent", "measure"), default="parent", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode == "measure":
        print(json.dumps(measure(args)))
        return 0

    sizes = [int(s) for s in args.items.split(",") if s.strip()]
    work = tempfile.mkdtemp(prefix="scale-train-")
    results: list[dict[str, Any]] = []
    print(f"scale_train_bench: LEARN d_model {args.d_model}, {args.layers} layers, content dim {args.content_dim}, "
          f"next_item + sampled negatives ({args.num_sampled}/step), batch {args.batch_size}, max_len "
          f"{args.max_len}; {args.users:,} users x {args.mean_length:g} interactions; {args.warmup} + {args.steps} "
          f"steps; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for size in sizes:
            path = os.path.join(work, f"seq{size}.npz")
            prep = prepare(size, args, path)
            cmd = [sys.executable, os.path.abspath(__file__), "--mode", "measure", "--size", str(size),
                   "--data", path] + [a for a in (argv if argv is not None else sys.argv[1:])]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if proc.returncode:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"measuring {size:,} items failed (exit {proc.returncode})")
            m = {**prep, **json.loads(proc.stdout.strip().splitlines()[-1]),
                 "process_s": round(time.perf_counter() - t, 1)}
            results.append(m)
            print(f"{size:,} items: {m['sequences_per_s']:,.0f} sequences/s ({m['positions_per_s']:,.0f} positions/s, "
                  f"{m['ms_per_step']} ms/step), peak RSS {m['peak_mib']:,.0f} MiB (after setup "
                  f"{m['setup_peak_mib']:,.0f}); process {m['process_s']} s, prepare {prep['prepare_s']} s; other "
                  f"processes {m['other_cores_busy']} cores", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| items | users | interactions | rows/epoch | trainable params | content MiB | ID table MiB | "
          "sequences/s | positions/s | ms/step | peak RSS after setup MiB | peak RSS MiB | process CPU cores | "
          "other cores busy |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['items']:,} | {r['users']:,} | {r['interactions']:,} | {r['rows_per_epoch']:,} | "
              f"{r['params']:,} | {r['content_mib']:,.0f} | {r['id_table_mib']:,.0f} | {r['sequences_per_s']:,.0f} | "
              f"{r['positions_per_s']:,.0f} | {r['ms_per_step']} | {r['setup_peak_mib']:,.0f} | "
              f"{r['peak_mib']:,.0f} | {r['process_cpu_cores']} | {r['other_cores_busy']} |")
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        speed = hi["sequences_per_s"] / lo["sequences_per_s"]
        print(f"catalogue x{hi['items'] / lo['items']:g}: sequences/s x{speed:.2f}, "
              f"peak RSS x{hi['peak_mib'] / lo['peak_mib']:.2f} (+{hi['peak_mib'] - lo['peak_mib']:,.0f} MiB, "
              f"{(hi['peak_mib'] - lo['peak_mib']) * 2 ** 20 / (hi['items'] - lo['items']):,.0f} bytes per added item)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:  # a results file the user asked for
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
