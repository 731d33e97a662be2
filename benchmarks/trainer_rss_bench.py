"""Peak RSS of the Trainer's training input path as the interactions grow (issue 13: flat is the goal).

For each size (interactions; default 2M and 20M) on the synthetic generator
(`learn_tf.data.synthetic`, a fixed catalogue of `--items` items, users =
interactions / `--mean-length`):

1. prepare (a process of its own, not measured): generate the data, write the
   per-user SequenceExample shards the pipeline's SequenceGen writes (the split
   roles from the config's split section), either with the Beam step itself
   (`--writer beam`, `beam/sequences.py` on the DirectRunner: slow at millions)
   or directly with the same record functions (`--writer direct`, default);
2. measure (a fresh process): exactly what the Trainer's `run_fn` does with its
   training input, in one of two modes (`--stream-buffers`, the config's
   `train.stream_shuffle_buffer`):
   - 0, exact (the default): `sequences_from_records` streams the shards with
     tf.data into packed catalogue indices and `SequenceSampler` plans an epoch;
   - N > 0, streamed: `RecordSequences` counts the shards in one pass (items,
     lengths) and `StreamedSampler` reads them again each epoch through
     shuffle buffers of N sequences and N rows;
   then `trainer.epoch_dataset` yields `--steps` batches (0 = the whole epoch);
   peak RSS (`VmHWM`) after each stage.

It prints each size's peak RSS, the peak above the process's baseline (Python +
TensorFlow + the catalogue), what the packed sequences (4 bytes per training
interaction) and the sampler (windows or the epoch plan: order + cut per row)
hold by construction (streamed: the bound of its buffers), and the ratio of the
largest to the smallest size's peak (goal: <= 1.2). Not measured here: the
early-stopping validation cases (the Split's eval cases plus earlier items,
strings per case) and the towers.

Both writers give the same shards, and both modes read the same sequences: the
`checksum` column (the sequence-length histogram and per-item training counts) shows it.
With `--work-dir D --keep`, shards prepared by an earlier run in D (its
`n<size>/prepare.json`) are reused when they were made with the same flags.

Usage:
  python benchmarks/trainer_rss_bench.py                                  # 2M and 20M, the make-demo config
  python benchmarks/trainer_rss_bench.py --sizes 20000,200000 --steps 50  # a smoke test
  python benchmarks/trainer_rss_bench.py --sampling next_item,dense       # both samplers
  python benchmarks/trainer_rss_bench.py --stream-buffers 0,10000 --work-dir /tmp/rss --keep  # exact + streamed
"""

from __future__ import annotations

import argparse
import hashlib
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
ITEMS_FILE = "items.txt"


def _rss_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident set of this process, MiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


# --------------------------------------------------------------------------- prepare (not measured)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Synthetic data -> SequenceExample shards in args.out (+ items.txt); returns counts."""
    import numpy as np
    import pandas as pd

    from learn_tf.config import SyntheticConfig, load_config
    from learn_tf.data import sequence_examples as sx
    from learn_tf.data.splits import choose_cold_items
    from learn_tf.data.synthetic import generate_synthetic

    cfg = load_config(args.config)
    t0 = time.perf_counter()
    users = max(1, int(round(args.size / args.mean_length)))
    items, inter = generate_synthetic(SyntheticConfig(num_items=args.items, num_users=users,
                                                      mean_sequence_length=args.mean_length, min_sequence_length=3,
                                                      seed=args.seed))
    os.makedirs(args.out, exist_ok=True)
    item_ids = np.sort(items["item_id"].astype(str).to_numpy())
    with open(os.path.join(args.out, ITEMS_FILE), "w", encoding="utf-8") as f:  # the bench's own scratch dir
        f.write("\n".join(item_ids) + "\n")
    generated = time.perf_counter() - t0
    seq_dir = os.path.join(args.out, "sequences")
    if args.writer == "beam":
        from beam.sequences import write_sequences
        from learn_tf.data.tfrecords import write_interactions_tfrecord

        path = os.path.join(args.out, "interactions.tfrecord")
        write_interactions_tfrecord(inter, path)
        manifest = write_sequences([path], item_ids.tolist(), cfg.split, seq_dir, num_shards=args.shards,
                                   compression="UNCOMPRESSED")
    else:
        import tensorflow as tf

        from beam.sequences import shard_name
        from learn_tf.utils.io import atomic_path, write_json

        cold = frozenset(choose_cold_items(item_ids.astype(object), cfg.split.cold_item_fraction, cfg.split.seed))
        codes, uniques = pd.factorize(inter["user_id"])
        rank = np.empty(len(uniques), np.int64)
        rank[np.argsort(np.asarray(uniques, dtype=str), kind="stable")] = np.arange(len(uniques))
        order = np.lexsort((inter["row"].to_numpy(), inter["timestamp"].to_numpy(), rank[codes]))
        user_sorted = np.asarray(uniques, dtype=object)[np.argsort(rank)]
        counts = np.bincount(rank[codes], minlength=len(uniques))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        item_col = inter["item_id"].to_numpy(dtype=object)[order]
        ts_col = inter["timestamp"].to_numpy()[order]
        row_col = inter["row"].to_numpy()[order]
        del inter, codes
        roles_total = np.zeros(len(sx.ROLES), np.int64)
        shard_of = np.minimum(np.arange(len(user_sorted)) * args.shards // max(len(user_sorted), 1), args.shards - 1)
        shards: dict[str, int] = {}
        for s in range(args.shards):
            members = np.flatnonzero(shard_of == s)
            name = shard_name(s, args.shards)
            with atomic_path(os.path.join(seq_dir, name)) as tmp, tf.io.TFRecordWriter(tmp) as w:
                for u in members.tolist():
                    a, b = bounds[u], bounds[u + 1]
                    its = item_col[a:b].tolist()
                    roles = sx.position_roles(its, cold, cfg.split.min_user_interactions)
                    roles_total += np.bincount(roles, minlength=len(sx.ROLES))
                    w.write(sx.user_sequence_example(user_sorted[u], its, ts_col[a:b], row_col[a:b], roles))
            shards[name] = len(members)
        manifest = {"interactions_in": int(len(item_col)), "unknown_item_dropped": 0, "users": int(len(user_sorted)),
                    "positions": int(len(item_col)), "roles": dict(zip(sx.ROLES, map(int, roles_total))),
                    "shards": shards, "num_shards": args.shards, "writer": "benchmarks/trainer_rss_bench.py direct"}
        write_json(os.path.join(seq_dir, sx.MANIFEST_FILE), manifest)
    return {"users": manifest["users"], "interactions": manifest["interactions_in"],
            "train_positions": manifest["roles"]["train"], "generate_s": round(generated, 1),
            "write_s": round(time.perf_counter() - t0 - generated, 1)}


# --------------------------------------------------------------------------- measure (a fresh process)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The Trainer's training input path over the shards in args.out; peak RSS per stage."""
    import dataclasses

    import numpy as np

    import learn_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from learn_tf.config import load_config
    from learn_tf.data import sequence_examples as sx
    from learn_tf.models.catalogue import Catalogue
    from learn_tf.training.inputs import RecordSequences, item_counts, length_counts, sequences_from_records
    from learn_tf.training.sampler import make_sampler
    from learn_tf.training.trainer import epoch_dataset

    stages: dict[str, dict[str, float]] = {"imports": _rss_mib()}
    cfg = load_config(args.config)
    settings = dataclasses.replace(cfg.train, sampling=args.sampling) if args.sampling else cfg.train
    settings = dataclasses.replace(settings, stream_shuffle_buffer=args.stream_buffer)
    with open(os.path.join(args.out, ITEMS_FILE), encoding="utf-8") as f:
        catalogue = Catalogue([line.rstrip("\n") for line in f if line.strip()])
    stages["catalogue"] = _rss_mib()
    t0 = time.perf_counter()
    counts = sx.ReadCounts()
    directory = os.path.join(args.out, "sequences")
    if settings.stream_shuffle_buffer > 0:  # one counting pass; the sequences are read again each epoch
        sequences = RecordSequences(directory, catalogue, counts=counts)
        packed_mib = 0.0
    else:
        sequences = sequences_from_records(directory, catalogue, counts=counts)
        packed_mib = (sequences.values.nbytes + sequences.offsets.nbytes) / 2 ** 20
    read_s = time.perf_counter() - t0
    stages["read"] = _rss_mib()
    t1 = time.perf_counter()
    sampler = make_sampler(sequences, settings, seed=settings.seed)
    ds = epoch_dataset(sampler, settings.batch_size)
    steps = -(-sampler.samples_per_epoch // settings.batch_size)
    if args.steps > 0:
        steps = min(steps, args.steps)
    rows = 0
    for batch in ds.take(steps):  # the first batch pulls the epoch plan
        rows += int(batch["history"].shape[0])
    batches_s = time.perf_counter() - t1
    stages["batches"] = _rss_mib()
    sampler_mib = sampler.memory_nbytes / 2 ** 20
    digest = hashlib.sha256(length_counts(sequences).tobytes()
                            + item_counts(sequences, len(catalogue)).tobytes()).hexdigest()[:12]
    return {"sampling": settings.sampling, "stream_buffer": settings.stream_shuffle_buffer,
            "batch_size": settings.batch_size, "records": counts.records,
            "sequences": counts.sequences, "training_items": counts.training_items,
            "rows_per_epoch": sampler.samples_per_epoch, "steps": steps, "rows": rows, "read_s": round(read_s, 1),
            "batches_s": round(batches_s, 1), "stages": stages, "peak_mib": stages["batches"]["VmHWM"],
            "baseline_mib": stages["catalogue"]["VmHWM"], "packed_mib": round(packed_mib, 1),
            "sampler_mib": round(sampler_mib, 1), "checksum": digest}


# --------------------------------------------------------------------------- parent


def _run(mode: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--config", args.config,
           "--items", str(args.items), "--mean-length", str(args.mean_length), "--seed", str(args.seed),
           "--shards", str(args.shards), "--steps", str(args.steps), "--writer", args.writer]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _input_name(r: dict[str, Any]) -> str:
    return f"streamed {r['stream_buffer']:,}" if r.get("stream_buffer") else "exact"


PREPARED_FILE = "prepare.json"


def _prepare_flags(args: argparse.Namespace, size: int) -> dict[str, Any]:
    return {"size": size, "items": args.items, "mean_length": args.mean_length, "seed": args.seed,
            "shards": args.shards, "writer": args.writer, "config": os.path.abspath(args.config)}


def _prepared(out: str, args: argparse.Namespace, size: int) -> dict[str, Any] | None:
    """The prepare results of shards already in `out` made with the same flags, else None."""
    path = os.path.join(out, PREPARED_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        prep = json.load(f)
    flags = _prepare_flags(args, size)
    return prep if all(prep.get(k) == v for k, v in flags.items()) else None


def main(argv: list[str] | None = None) -> int:
    """Parses flags; runs as the parent (all sizes) or as one prepare / measure process."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000000,20000000", help="interaction counts, comma-separated")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "movielens.yaml"),
                    help="its split and train sections are used (default: make demo's)")
    ap.add_argument("--sampling", default="", help="comma-separated samplings to measure (default: the config's)")
    ap.add_argument("--stream-buffers", default="0",
                    help="comma-separated train.stream_shuffle_buffer values: 0 = exact in-memory input, "
                         "N > 0 = streamed with buffers of N")
    ap.add_argument("--items", type=int, default=100_000, help="catalogue size (fixed across sizes)")
    ap.add_argument("--mean-length", type=float, default=20.0, help="mean interactions per user")
    ap.add_argument("--steps", type=int, default=200, help="batches to draw (0 = a whole epoch)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--writer", choices=("direct", "beam"), default="direct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default="", help="where the shards go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--mode", choices=("parent", "prepare", "measure"), default="parent", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stream-buffer", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode != "parent":
        result = prepare(args) if args.mode == "prepare" else measure(args)
        print(json.dumps(result))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    samplings = [s for s in args.sampling.split(",") if s.strip()] or [""]
    buffers = [int(b) for b in args.stream_buffers.split(",") if b.strip()] or [0]
    work = args.work_dir or tempfile.mkdtemp(prefix="trainer-rss-")
    results: list[dict[str, Any]] = []
    try:
        for size in sizes:
            out = os.path.join(work, f"n{size}")
            prep = _prepared(out, args, size)
            if prep is None:
                prep = _run("prepare", args, size=size, out=out)
                with open(os.path.join(out, PREPARED_FILE), "w", encoding="utf-8") as f:  # the bench's scratch dir
                    json.dump({**prep, **_prepare_flags(args, size)}, f)
            else:
                print(f"reusing the shards in {out}", flush=True)
            print(f"prepared {size:,} interactions: {prep['users']:,} users, {prep['train_positions']:,} training "
                  f"positions (generate {prep['generate_s']} s, write {prep['write_s']} s, writer {args.writer})",
                  flush=True)
            for sampling in samplings:
                for buffer in buffers:
                    m = _run("measure", args, out=out, stream_buffer=buffer,
                             **({"sampling": sampling} if sampling else {}))
                    results.append({"size": size, **prep, **m})
                    print(f"  {m['sampling']} ({_input_name(m)}): peak {m['peak_mib']:,.0f} MiB (baseline "
                          f"{m['baseline_mib']:,.0f} MiB, +{m['peak_mib'] - m['baseline_mib']:,.0f}), read "
                          f"{m['read_s']} s, {m['steps']} batches {m['batches_s']} s", flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| interactions | sampling | input | users | training items | rows/epoch | batches | after imports MiB "
          "| + catalogue | + read | peak RSS MiB | above baseline MiB | packed MiB | sampler MiB | read s "
          "| batches s | checksum |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        st = r["stages"]
        print(f"| {r['size']:,} | {r['sampling']} | {_input_name(r)} | {r['users']:,} | {r['training_items']:,} | "
              f"{r['rows_per_epoch']:,} | {r['steps']:,} | {st['imports']['VmHWM']:,.0f} | "
              f"{st['catalogue']['VmHWM']:,.0f} | {st['read']['VmHWM']:,.0f} | {r['peak_mib']:,.0f} | "
              f"{r['peak_mib'] - r['baseline_mib']:,.0f} | {r['packed_mib']:,.1f} | {r['sampler_mib']:,.1f} | "
              f"{r['read_s']} | {r['batches_s']} | {r['checksum']} |")
    for sampling, name in sorted({(r["sampling"], _input_name(r)) for r in results}):
        rs = sorted((r for r in results if r["sampling"] == sampling and _input_name(r) == name),
                    key=lambda r: r["size"])
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            ratio = hi["peak_mib"] / lo["peak_mib"]
            print(f"{sampling} ({name}): peak RSS at {hi['size']:,} / at {lo['size']:,} interactions = "
                  f"{hi['peak_mib']:,.0f} / {lo['peak_mib']:,.0f} MiB = {ratio:.2f}x "
                  f"({'within' if ratio <= 1.2 else 'above'} the 1.2x goal)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:  # a results file the user asked for, local
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
