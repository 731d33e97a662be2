"""The `learn` command line: one subcommand per job, each reading `--config`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from learn_tf.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/movielens.yaml"


def _data_dir(cfg: Config, args: argparse.Namespace) -> str:
    return getattr(args, "output", None) or os.path.join(cfg.resolved_output_dir(), "data")


def _split_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "split")


def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    """Ingests the configured source, then writes the splits."""
    from learn_tf.data.ingest import ingest
    from learn_tf.data.splits import format_split_summary, make_splits, write_splits

    out = _data_dir(cfg, args)
    res = ingest(cfg.data, out, write_tfrecords=not args.no_tfrecords)
    if not args.no_split:
        splits = make_splits(res.items, res.interactions, cfg.split)
        write_splits(splits, _split_dir(out))
        print(format_split_summary(splits.summary))
    print(f"wrote {out}")
    return 0


def cmd_split(cfg: Config, args: argparse.Namespace) -> int:
    """Re-splits already ingested data (e.g. after changing the split section)."""
    from learn_tf.data.ingest import read_ingested
    from learn_tf.data.splits import format_split_summary, make_splits, write_splits

    data_dir = args.input or os.path.join(cfg.resolved_output_dir(), "data")
    items, interactions = read_ingested(data_dir)
    out = args.output or _split_dir(data_dir)
    splits = make_splits(items, interactions, cfg.split)
    write_splits(splits, out)
    print(format_split_summary(splits.summary))
    print(f"wrote {out}")
    return 0


def cmd_stats(cfg: Config, args: argparse.Namespace) -> int:
    """Dataset statistics of ingested data, as JSON and PNG."""
    from learn_tf.data.ingest import read_ingested
    from learn_tf.data.stats import format_stats, write_stats

    data_dir = args.input or os.path.join(cfg.resolved_output_dir(), "data")
    items, interactions = read_ingested(data_dir)
    out = args.output or os.path.join(data_dir, "stats")
    print(format_stats(write_stats(items, interactions, out)))
    print(f"wrote {out}/stats.json and stats.png")
    return 0


def _embedding_dir(cfg: Config) -> str:
    return os.path.join(cfg.resolved_output_dir(), "embeddings")


def cmd_embed(cfg: Config, args: argparse.Namespace) -> int:
    """Frozen-LLM item embeddings with the Beam job (incremental)."""
    from beam.embed_pipeline import run_embedding_job_from_config

    data_dir = args.input or os.path.join(cfg.resolved_output_dir(), "data")
    items_path = os.path.join(data_dir, "items.parquet")
    if not os.path.exists(items_path):
        raise FileNotFoundError(f"{items_path} not found; run `learn ingest` first")
    run_embedding_job_from_config(cfg.embedding, items_path, args.output or _embedding_dir(cfg),
                                  extra_beam_args=args.beam_arg or [], force=args.force, refit=args.refit)
    return 0


def cmd_convert(cfg: Config, args: argparse.Namespace) -> int:
    """Converts the configured embedded model (or a given GGUF file) into a keras-hub preset folder."""
    from learn_tf.pretrained import convert_gguf, resolve_preset

    if args.gguf:
        if not args.output:
            raise ValueError("--gguf needs --output (the preset folder to write)")
        print(convert_gguf(args.gguf, args.output))
    else:
        print(resolve_preset(args.model or cfg.embedding.model))
    return 0


def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    """Trains LEARN (and the SASRec baseline / the no-alignment variant) on the split."""
    from learn_tf.training.jobs import train_job

    train_job(cfg, args.model or ["learn", "learn_c", "sasrec"], models_dir=args.output)
    return 0


def cmd_evaluate(cfg: Config, args: argparse.Namespace) -> int:
    """Full-catalogue evaluation of every trained model and the baselines."""
    from learn_tf.training.jobs import evaluate_job

    evaluate_job(cfg, models_dir=args.models, results_dir=args.output, split=args.split)
    return 0


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    """The main job on the configured data: ingest, split, stats, embed, train, evaluate."""
    from beam.embed_pipeline import run_embedding_job_from_config
    from learn_tf.data.ingest import ingest
    from learn_tf.data.splits import format_split_summary, make_splits, write_splits
    from learn_tf.data.stats import format_stats, write_stats
    from learn_tf.training.jobs import evaluate_job, run_dirs, train_job

    t0 = time.time()
    if args.output:
        cfg = dataclasses.replace(cfg, output_dir=args.output)
    dirs = run_dirs(cfg)
    steps = 7 if not args.no_train else 4
    print(f"[1/{steps}] ingest {cfg.data.source} -> {dirs['data']}")
    res = ingest(cfg.data, dirs["data"])
    print(f"[2/{steps}] split -> {dirs['split']}")
    splits = make_splits(res.items, res.interactions, cfg.split)
    write_splits(splits, dirs["split"])
    print(format_split_summary(splits.summary))
    print(f"[3/{steps}] stats -> {os.path.join(dirs['data'], 'stats')}")
    print(format_stats(write_stats(res.items, res.interactions, os.path.join(dirs["data"], "stats"))))
    e = cfg.embedding
    print(f"[4/{steps}] embed items with {e.model} (Beam, incremental) -> {dirs['embeddings']}")
    run_embedding_job_from_config(e, os.path.join(dirs["data"], "items.parquet"), dirs["embeddings"])
    if not args.no_train:
        print(f"[5/{steps}] train LEARN (a), LEARN (c) and SASRec -> {dirs['models']}")
        train_job(cfg, ["learn", "learn_c", "sasrec"])
        print(f"[6/{steps}] evaluate on the test split -> {dirs['results']}")
        evaluate_job(cfg)
        from serving.commands import export_trained, serving_model_dir

        base = cfg.resolved_model_base()
        print(f"[7/{steps}] export the serving models (TF Serving layout) -> {base}")
        paths = export_trained(cfg, serving_model_dir(cfg), base)
        print(f"  version {paths['version']}: " + ", ".join(n for n, p in paths.items() if isinstance(p, str)))
        print(f"  serve: learn serve --config {args.config}    query: learn query --config {args.config} "
              "--history 'Toy Story,Star Wars' --k 10")
    print(f"demo finished in {time.time() - t0:.0f} s")
    return 0


def cmd_pipeline(cfg: Config, args: argparse.Namespace) -> int:
    """The TFX pipeline: run locally, print ML Metadata lineage, or compile for Vertex AI."""
    from tfx_pipeline.commands import compile_vertex_command, lineage_command, run_pipeline_command

    config_dir = os.path.dirname(os.path.abspath(args.config))
    if args.action == "run":
        if args.output:
            cfg = dataclasses.replace(cfg, output_dir=args.output)
        return run_pipeline_command(cfg, data_dir=args.input, enable_cache=not args.no_cache,
                                    reingest=args.reingest, config_dir=config_dir, beam_args=args.beam_arg or ())
    if args.action == "lineage":
        return lineage_command(cfg, run_id=args.run_id)
    return compile_vertex_command(cfg, args.output or ".", image=args.image, data_root=args.data_root,
                                  config_dir=config_dir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="learn",
        description="LEARN-TF: frozen-LLM item embeddings adapted to recommendation with TFRS, TFX and TF Serving.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, fn: Callable[[Config, argparse.Namespace], int], help_: str,
            output: bool = True, input_: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        if output:
            sp.add_argument("--output", help="output directory (default: from the config's output_dir)")
        if input_:
            sp.add_argument("--input", help="ingested data directory (default: <output_dir>/data)")
        sp.set_defaults(fn=fn)
        return sp

    sp = add("ingest", cmd_ingest, "read the configured source into canonical Parquet + TFRecords, report, split")
    sp.add_argument("--no-split", action="store_true", help="skip writing the leave-one-out split")
    sp.add_argument("--no-tfrecords", action="store_true", help="skip the TFRecord copies (large synthetic data)")
    add("split", cmd_split, "leave-one-out split with cold-item holdout and segments", input_=True)
    add("stats", cmd_stats, "dataset statistics (JSON + PNG)", input_=True)
    sp = add("embed", cmd_embed, "frozen-LLM item embeddings (Apache Beam + keras-hub), incremental", input_=True)
    sp.add_argument("--beam-arg", action="append", metavar="ARG",
                    help="extra Beam pipeline option, repeatable (e.g. --beam-arg=--runner=DataflowRunner)")
    sp.add_argument("--force", action="store_true", help="ignore the cache and re-embed every item")
    sp.add_argument("--refit", action="store_true",
                    help="refit the post-processing on the current catalogue (default: keep the published one)")
    sp = add("convert-gguf", cmd_convert,
             "convert an embedded LLM (GGUF / MiniLM from PyPI) into a keras-hub preset folder (cached)")
    sp.add_argument("--model", help="embedded preset name (default: the config's embedding.model)")
    sp.add_argument("--gguf", help="convert this GGUF file instead (then --output is the target folder)")
    sp = add("train", cmd_train, "train LEARN twin towers and baselines (TFRS), with early stopping")
    sp.add_argument("--model", action="append", choices=["learn", "learn_c", "sasrec"],
                    help="which model(s) to train, repeatable (default: all three)")
    sp = add("evaluate", cmd_evaluate, "full-catalogue Recall/NDCG/MRR per protocol and segment, JSON + md + PNG")
    sp.add_argument("--models", help="trained models directory (default: <output_dir>/models)")
    sp.add_argument("--split", default="test", choices=["test", "validation"])
    sp = add("demo", cmd_demo, "run the main job end to end on the configured data")
    sp.add_argument("--no-train", action="store_true", help="stop after the embeddings")
    sp = add("pipeline", cmd_pipeline, "TFX pipeline: run (LocalDagRunner), lineage (ML Metadata), "
             "compile (Vertex AI Pipelines + Dataflow)", input_=True)
    sp.add_argument("action", choices=["run", "lineage", "compile"])
    sp.add_argument("--no-cache", action="store_true", help="run every component again (after code changes)")
    sp.add_argument("--reingest", action="store_true", help="ingest the source again before the run")
    sp.add_argument("--beam-arg", action="append", metavar="ARG", help="extra Beam pipeline option, repeatable")
    sp.add_argument("--run-id", help="lineage of this run (default: the last one)")
    sp.add_argument("--image", help="compile: the container image with learn-tf installed")
    sp.add_argument("--data-root", help="compile: gs:// folder with the ingested TFRecords")
    from serving.commands import register as register_serving

    register_serving(add)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `learn` console script."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        return int(args.fn(cfg, args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
