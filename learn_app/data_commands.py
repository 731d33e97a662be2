"""`learn ingest | split | stats | convert-gguf | embed`: data and item-embedding commands."""

from __future__ import annotations

import argparse
import os

import pandas as pd

from beam.embed_pipeline import run_embedding_job_from_config
from learn_tf.config import Config
from learn_tf.data import schema as data_schema
from learn_tf.data.ingest import ingest, read_ingested
from learn_tf.data.tfrecords import write_items_tfrecord
from learn_tf.utils import io
from learn_tf.utils.io import atomic_path, sha256_file, write_json
from learn_tf.data.splits import format_split_summary, make_splits, write_splits
from learn_tf.data.stats import format_stats, write_stats
from learn_tf.layout import RunLayout
from learn_tf.pretrained import convert_gguf, resolve_preset


def merge_onboarded(layout: RunLayout) -> int:
    """Appends the onboarded-items addendum to the ingested catalogue; returns how many items it added.

    The addendum is `<output_dir>/onboarded/items.parquet`, written by `learn add-items` (items
    with no interactions yet). Items whose id the ingested source already has are left to the
    source. The ingested items.parquet, its TFRecord (when ingest wrote one) and the report's item
    count and file hashes are rewritten, so the pipeline's ExampleGen sees the onboarded items and
    the next run trains and serves them. Idempotent: a second call adds nothing.
    """
    if not (io.exists(layout.onboarded_items) and io.exists(os.path.join(layout.data, data_schema.ITEMS_FILE))):
        return 0
    items, _ = read_ingested(layout.data)
    onboarded = io.read_parquet(layout.onboarded_items)
    new = onboarded[~onboarded["item_id"].astype(str).isin(set(items["item_id"].astype(str)))]
    if new.empty:
        return 0
    merged = pd.concat([items, new[items.columns]], ignore_index=True)
    files = {data_schema.ITEMS_FILE: os.path.join(layout.data, data_schema.ITEMS_FILE)}
    with atomic_path(files[data_schema.ITEMS_FILE]) as tmp:
        merged.to_parquet(tmp, schema=data_schema.ITEMS_SCHEMA, index=False)  # local staged file (atomic_path)
    tfrecord = os.path.join(layout.data, data_schema.ITEMS_TFRECORD)
    if io.exists(tfrecord):
        write_items_tfrecord(merged, tfrecord)
        files[data_schema.ITEMS_TFRECORD] = tfrecord
    report_path = os.path.join(layout.data, data_schema.REPORT_FILE)
    if io.exists(report_path):
        report = io.read_json(report_path)
        report["summary"]["items"] = len(merged)
        report["summary"]["onboarded_items_merged"] = report["summary"].get("onboarded_items_merged", 0) + len(new)
        report.setdefault("files", {}).update({n: sha256_file(p) for n, p in files.items()})
        write_json(report_path, report)
    print(f"[learn] merged {len(new):,} onboarded item(s) from {layout.onboarded_items} into {layout.data}")
    return len(new)


def ingest_and_split(cfg: Config, layout: RunLayout, write_tfrecords: bool = True, split: bool = True) -> None:
    """Ingests the configured source into `layout.data`, merges the onboarded items (`merge_onboarded`)
    and (by default) writes the split into `layout.split`."""
    res = ingest(cfg.data, layout.data, write_tfrecords=write_tfrecords)
    merge_onboarded(layout)
    if split:
        items, _ = read_ingested(layout.data)
        splits = make_splits(items, res.interactions, cfg.split)
        write_splits(splits, layout.split)
        print(format_split_summary(splits.summary))


def cmd_ingest(cfg: Config, args: argparse.Namespace) -> int:
    """Ingests the configured source, then writes the split."""
    layout = cfg.layout()
    ingest_and_split(cfg, layout, write_tfrecords=not args.no_tfrecords, split=not args.no_split)
    print(f"wrote {layout.data}")
    return 0


def cmd_split(cfg: Config, args: argparse.Namespace) -> int:
    """Re-splits already ingested data (e.g. after changing the split section)."""
    layout = cfg.layout()
    items, interactions = read_ingested(layout.data)
    splits = make_splits(items, interactions, cfg.split)
    write_splits(splits, layout.split)
    print(format_split_summary(splits.summary))
    print(f"wrote {layout.split}")
    return 0


def cmd_stats(cfg: Config, args: argparse.Namespace) -> int:
    """Dataset statistics of ingested data, as JSON and PNG."""
    layout = cfg.layout()
    items, interactions = read_ingested(layout.data)
    print(format_stats(write_stats(items, interactions, layout.stats)))
    print(f"wrote {layout.stats}/stats.json and stats.png")
    return 0


def cmd_convert(cfg: Config, args: argparse.Namespace) -> int:
    """Converts the configured embedded model (or a given GGUF file) into a keras-hub preset folder."""
    if args.gguf:
        if not args.preset_dir:
            raise ValueError("--gguf needs --preset-dir (the preset folder to write)")
        print(convert_gguf(args.gguf, args.preset_dir))
    else:
        print(resolve_preset(args.model or cfg.embedding.model))
    return 0


def cmd_embed(cfg: Config, args: argparse.Namespace) -> int:
    """Frozen-LLM item embeddings with the Beam job (incremental)."""
    layout = cfg.layout()
    if not io.exists(layout.items):
        raise FileNotFoundError(f"{layout.items} not found; run `learn ingest` first")
    run_embedding_job_from_config(cfg.embedding, layout.items, layout.embeddings,
                                  extra_beam_args=args.beam_arg or [], force=args.force, refit=args.refit)
    return 0


def register(add) -> None:  # noqa: ANN001  (the CLI's subparser factory)
    """Adds the data subcommands."""
    sp = add("ingest", cmd_ingest, "read the configured source into canonical Parquet + TFRecords, report, split")
    sp.add_argument("--no-split", action="store_true", help="skip writing the leave-one-out split")
    sp.add_argument("--no-tfrecords", action="store_true", help="skip the TFRecord copies (large synthetic data)")
    add("split", cmd_split, "leave-one-out split with cold-item holdout and segments")
    add("stats", cmd_stats, "dataset statistics (JSON + PNG)")
    sp = add("embed", cmd_embed, "frozen-LLM item embeddings (Apache Beam + keras-hub), incremental")
    sp.add_argument("--beam-arg", action="append", metavar="ARG",
                    help="extra Beam pipeline option, repeatable (e.g. --beam-arg=--runner=DataflowRunner)")
    sp.add_argument("--force", action="store_true", help="ignore the cache and re-embed every item")
    sp.add_argument("--refit", action="store_true",
                    help="refit the post-processing on the current catalogue (default: keep the published one)")
    sp = add("convert-gguf", cmd_convert,
             "convert an embedded LLM (GGUF / MiniLM from PyPI) into a keras-hub preset folder (cached)")
    sp.add_argument("--model", help="embedded preset name (default: the config's embedding.model)")
    sp.add_argument("--gguf", help="convert this GGUF file instead (then --preset-dir is the target folder)")
    sp.add_argument("--preset-dir", help="with --gguf: the keras-hub preset folder to write")
