"""`learn export | serve | query | add-items`: the serving commands.

- `learn export`: trained towers -> the four SavedModels in TF Serving layout
  (a trained CLLM4Rec -> `cllm4rec_retrieval`).
- `learn serve`: the TF Serving-compatible gRPC and REST server over the model base.
- `learn query`: top-k for a history of ids or exact titles, over gRPC or REST.
- `learn add-items`: cold-start onboarding without retraining: embed the new
  items' text with the frozen LLM (incremental Beam job), pass them through
  the item tower, rebuild the index and publish a new version.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from ml_metadata.errors import NotFoundError as MetadataNotFoundError

from beam.embed_pipeline import run_embedding_job_from_config
from learn_tf.cllm4rec import store as cllm4rec_store
from learn_tf.config import Config
from learn_tf.data.ingest import read_ingested
from learn_tf.data.schema import ITEM_TEXT_FIELDS, ITEMS_SCHEMA
from learn_tf.data.splits import read_splits
from learn_tf.embeddings.store import load_embeddings
from learn_tf.layout import RunLayout
from learn_app.data_commands import merge_onboarded
from learn_tf.training.jobs import CATALOGUE_FILE, TOWERS_FILE, model_name
from learn_tf.utils.io import atomic_path, read_text
from learn_tf.utils.io import exists as io_exists
from serving.client import is_rest_target, retrieve
from serving.cllm4rec_export import MODEL as CLLM4REC_MODEL
from serving.cllm4rec_export import export_cllm4rec
from serving.export import export_trained
from serving.server import batching_from_config, serve_main
from tfx_pipeline.lineage import latest_pushed_towers
from tfx_pipeline.pipeline import pipeline_name


def serving_model_dir(cfg: Config, name: Optional[str] = None) -> str:
    """The trained model that serving exports and `add-items` extends.

    With `name`: `<output_dir>/models/<name>`. Otherwise the most recently
    trained of `<output_dir>/models/<pipeline.model_kind's name>` (`learn
    train`) and the towers of the last model the TFX pipeline pushed (found
    through ML Metadata, when a pipeline run is recorded).
    """
    layout = cfg.layout()
    direct = layout.model(name or model_name(cfg.model, cfg.pipeline.model_kind))
    if name:
        return direct
    pushed = None
    if layout.metadata_path.startswith("mysql://") or os.path.exists(layout.metadata_path):
        try:
            pushed = latest_pushed_towers(layout.metadata_path, pipeline_name(cfg))
        except MetadataNotFoundError:  # a store without this pipeline's types yet
            pushed = None
    candidates = [d for d in (direct, pushed) if d and os.path.exists(os.path.join(d, TOWERS_FILE))]
    return max(candidates, key=lambda d: os.path.getmtime(os.path.join(d, TOWERS_FILE))) if candidates else direct


def training_interactions(layout: RunLayout) -> Optional[pd.DataFrame]:
    """The split's training interactions (their users' histories tune ScaNN), or None before `learn split`."""
    return read_splits(layout.split).train if os.path.isdir(layout.split) else None


def _print_export(paths: dict[str, Any], base: str) -> None:
    print(f"[learn export] version {paths['version']} in {paths['seconds']:.1f} s -> {base}")
    for name, path in paths.items():
        if isinstance(path, str):
            print(f"  {name:20s} {path}")
    if paths.get("scann") is not None:
        s = paths["scann"]
        print(f"  ScaNN: {s.num_leaves} leaves, {s.num_leaves_to_search} searched, reorder "
              f"{s.num_reordering_candidates}, recall@10 vs exact {s.measured_recall_at_10}")
    print(f"  {os.path.join(base, 'models.config')} (all models), models.stock.config (stock TF Serving)")


def holds_cllm4rec(model_dir: str) -> bool:
    """True when `model_dir` is a trained CLLM4Rec (`learn train --model cllm4rec`), not LEARN towers."""
    return cllm4rec_store.is_saved(model_dir) and not io_exists(os.path.join(model_dir, TOWERS_FILE))


def cllm4rec_onboarding_error(model_dir: str) -> ValueError:
    """The error of onboarding items into a CLLM4Rec model (its item tokens are learned from interactions)."""
    return ValueError(f"{model_dir} is a CLLM4Rec model: its item tokens are learned from interactions, so new "
                      "items need training (ingest them, then `learn train --model cllm4rec`); `learn add-items` "
                      "onboards items for the LEARN towers (pipeline.model_kind: learn)")


def export_model(cfg: Config, model_dir: str, version: Optional[int] = None,
                 extra_items: Optional[tuple[Sequence[str], np.ndarray]] = None) -> dict[str, Any]:
    """Exports trained towers (plus onboarded items) into the run's model base, ScaNN tuned on training histories.

    A trained CLLM4Rec exports as `cllm4rec_retrieval` (`serving.cllm4rec_export`; its prompt keeps the last
    `split.history_max_len` items, as the evaluator's cases do).

    Raises:
      ValueError: onboarded items for a CLLM4Rec model (its item tokens are learned from interactions).
    """
    layout = cfg.layout()
    if holds_cllm4rec(model_dir):
        if extra_items is not None and len(extra_items[0]):
            raise cllm4rec_onboarding_error(model_dir)
        t0 = time.time()
        out = export_cllm4rec(model_dir, layout.model_base, max_k=cfg.serving.max_k,
                              max_history=cfg.split.history_max_len, version=version,
                              warmup=cfg.serving.warmup_requests)
        return {"version": out["version"], CLLM4REC_MODEL: out["path"], "seconds": time.time() - t0}
    return export_trained(model_dir, layout.model_base, cfg.serving, training_interactions(layout), version=version,
                          extra_items=extra_items)


def cmd_export(cfg: Config, args: argparse.Namespace) -> int:
    """`learn export`: the trained model -> `<model_base>/<model>/<version>/` SavedModels."""
    paths = export_model(cfg, args.model_dir or serving_model_dir(cfg, args.model), version=args.version)
    _print_export(paths, cfg.layout().model_base)
    return 0


def rest_port(grpc_port: int, flag: Optional[int] = None, configured: Optional[int] = None) -> Optional[int]:
    """The REST port `learn serve` uses: `--rest-port`, else `serving.rest_port` (`configured`), else gRPC
    port + 1 (8501, TF Serving's default; 0 when the gRPC port is 0, i.e. a free port); a negative
    value turns REST off (None)."""
    chosen = flag if flag is not None else configured
    if chosen is not None:
        return None if chosen < 0 else chosen
    return 0 if grpc_port == 0 else grpc_port + 1


def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    """`learn serve`: TF Serving's gRPC and REST APIs over the model base, until SIGINT/SIGTERM."""
    base = args.model_base or cfg.layout().model_base
    if not os.path.isdir(base):
        raise FileNotFoundError(f"model base {base} not found; run `learn export` first")
    config_file = os.path.join(base, "models.config")
    port = cfg.serving.port if args.port is None else args.port
    return serve_main(base, models_config=config_file if os.path.exists(config_file) else None,
                      host=args.host or cfg.serving.host, port=port,
                      num_threads=cfg.serving.num_threads, max_message_bytes=cfg.serving.max_message_bytes,
                      poll_seconds=cfg.serving.poll_seconds,
                      rest_port=rest_port(port, args.rest_port, cfg.serving.rest_port),
                      batching=batching_from_config(base, cfg.serving, args.enable_batching,
                                                    args.batching_parameters_file),
                      grpc_frontend=cfg.serving.grpc_frontend, grpc_event_loop=cfg.serving.grpc_event_loop,
                      compute_nice=cfg.serving.compute_nice)


def catalogue_items(cfg: Config) -> pd.DataFrame:
    """Ingested items plus every onboarded item (item_id, title, year, ...), each id once."""
    layout = cfg.layout()
    items, _ = read_ingested(layout.data)
    if os.path.exists(layout.onboarded_items):  # already merged into the ingested items after a re-ingest
        items = pd.concat([items, pd.read_parquet(layout.onboarded_items)], ignore_index=True)
    return items.drop_duplicates("item_id", keep="first").reset_index(drop=True)


def _display(row: pd.Series) -> str:
    title = str(row.get("title", "") or "")
    year = str(row.get("year", "") or "")
    return f"{title} ({year})" if title and year and not title.endswith(f"({year})") else (title or row["item_id"])


def resolve_history(text: Sequence[str], items: pd.DataFrame) -> list[str]:
    """Comma-separated ids or exact titles ("Toy Story", "Toy Story (1995)", any case) -> item ids.

    Titles that contain commas ("Usual Suspects, The") are matched by joining
    adjacent pieces. Raises ValueError naming a piece that matches nothing or
    several items.
    """
    by_key: dict[str, set[str]] = {}
    ids = set(items["item_id"].astype(str))
    for item_id, title, year in zip(items["item_id"].astype(str), items.get("title", ""), items.get("year", "")):
        title, year = str(title or "").strip(), str(year or "").strip()
        for key in {title, f"{title} ({year})" if year else title}:
            if key:
                by_key.setdefault(key.lower(), set()).add(item_id)
    pieces = [p.strip() for part in text for p in part.split(",")]
    out, i = [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            cand = ", ".join(pieces[i:j])
            if cand in ids:
                out.append(cand)
                break
            hit = by_key.get(cand.lower())
            if hit:
                if len(hit) > 1:
                    raise ValueError(f"history entry {cand!r} matches {len(hit)} items ({', '.join(sorted(hit))}); "
                                     "use an item id or add the year, e.g. 'Title (1995)'")
                out.append(next(iter(hit)))
                break
        else:
            if pieces[i]:
                raise ValueError(f"history entry {pieces[i]!r} is neither an item id nor an exact title")
            j = i + 1
        i = j
    if not out:
        raise ValueError("the history is empty: give item ids or titles, e.g. --history 'Toy Story,Star Wars'")
    return out


def cmd_query(cfg: Config, args: argparse.Namespace) -> int:
    """`learn query`: ranked titles and scores for a history, from the server over gRPC or REST.

    `--server http://host:port` (or `--rest`, the configured host at serving.port + 1) uses TF
    Serving's REST API; `--server host:port` and the default use gRPC.
    """
    items = catalogue_items(cfg)
    history = resolve_history(args.history, items)
    target = args.server or f"{cfg.serving.host}:{cfg.serving.port}"
    if args.rest and not is_rest_target(target):
        host, _, port = target.rpartition(":")
        target = f"http://{host}:{int(port) + 1}" if not args.server else f"http://{target}"
    model = args.model or (CLLM4REC_MODEL if cfg.pipeline.model_kind == "cllm4rec" else "learn_retrieval")
    users = [args.user or ""] if model == CLLM4REC_MODEL else None  # CLLM4Rec's prompt may start with a user token
    t0 = time.time()
    [results] = retrieve(target, [history], k=args.k, exclude_history=not args.include_history, model=model,
                         user_ids=users)
    ms = (time.time() - t0) * 1000
    rows = items.drop_duplicates("item_id", keep="last").set_index("item_id", drop=False)
    print(f"history: {', '.join(_display(rows.loc[h]) if h in rows.index else h for h in history)}")
    print(f"top {len(results)} from {model} at {target} over {'REST' if is_rest_target(target) else 'gRPC'} "
          f"({ms:.0f} ms):")
    for rank, (item_id, score) in enumerate(results, 1):
        name = _display(rows.loc[item_id]) if item_id in rows.index else item_id
        print(f"{rank:4d}. {score:7.4f}  {name}  [{item_id}]")
    return 0


_FIELD_RE = re.compile(r"^[a-z_]+$")


def read_new_items(path: str) -> pd.DataFrame:
    """Reads a JSON-lines file of new items into the canonical items table.

    Each line is an object with `item_id` and any text fields (title, year,
    genres, brand, category, description, price); lists are joined with ", ".

    Raises:
      ValueError: naming the file and line of an unreadable, non-object,
        id-less or duplicate record, or an unknown field.
    """
    rows, seen = [], {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            unknown = sorted(set(rec) - {"item_id", *ITEM_TEXT_FIELDS})
            if unknown:
                raise ValueError(f"{path}:{n}: unknown field {unknown[0]!r} (allowed: item_id, "
                                 f"{', '.join(ITEM_TEXT_FIELDS)})")
            item_id = str(rec.get("item_id", "") or "").strip()
            if not item_id:
                raise ValueError(f"{path}:{n}: missing field 'item_id'")
            if item_id in seen:
                raise ValueError(f"{path}:{n}: item_id {item_id!r} repeats line {seen[item_id]}")
            seen[item_id] = n
            row: dict[str, Any] = {"item_id": item_id}
            for field in ITEM_TEXT_FIELDS:
                v = rec.get(field, "")
                v = ", ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v))
                row[field] = v.strip()
            row["text_fallback"] = not any(row[f] for f in ITEM_TEXT_FIELDS)
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no items")
    return pd.DataFrame(rows, columns=["item_id", *ITEM_TEXT_FIELDS, "text_fallback"])


def trained_item_ids(model_dir: str) -> set[str]:
    """The item ids in a trained model's catalogue (`catalogue.txt`), read through `learn_tf.utils.io` so
    `gs://` and other remote model directories work."""
    return {line for line in read_text(os.path.join(model_dir, CATALOGUE_FILE)).split("\n") if line}


def add_items(cfg: Config, path: str, model_dir: Optional[str] = None) -> dict[str, Any]:
    """Onboards new items without retraining and publishes a new serving version.

    Steps: validate the file; embed the whole catalogue incrementally (only the
    new texts run through the LLM, with the published post-processing); extend
    the trained towers' content table; export every serving model as a new
    version; then record the items as onboarded. A crash before the last step
    leaves at most an extra version with the same items, never a duplicate.

    Raises:
      ValueError: bad records, ids already in the catalogue, or a CLLM4Rec model (it cannot onboard untrained items).
    """
    t0 = time.time()
    model_dir = model_dir or serving_model_dir(cfg)
    if holds_cllm4rec(model_dir):
        raise cllm4rec_onboarding_error(model_dir)
    new = read_new_items(path)
    existing = catalogue_items(cfg)
    clash = sorted(set(new["item_id"]) & set(existing["item_id"].astype(str)))
    if clash:
        raise ValueError(f"{path}: {len(clash)} item id(s) already in the catalogue, e.g. {clash[0]!r}; "
                         "new items need new ids")
    layout = cfg.layout()
    onboarded_path = layout.onboarded_items
    previous = pd.read_parquet(onboarded_path) if os.path.exists(onboarded_path) else existing.iloc[:0]
    onboarded = pd.concat([previous, new], ignore_index=True)
    all_items = pd.concat([existing, new], ignore_index=True)
    catalogue_path = layout.onboarded_catalogue
    os.makedirs(os.path.dirname(catalogue_path), exist_ok=True)
    with atomic_path(catalogue_path) as tmp:
        all_items.to_parquet(tmp, schema=ITEMS_SCHEMA, index=False)
    print(f"[learn add-items] {len(new):,} new items ({int(new['text_fallback'].sum())} without text); "
          f"catalogue now {len(all_items):,} items")
    embeddings_dir = embeddings_dir_of(cfg, model_dir)
    print(f"[learn add-items] towers {model_dir}; embeddings {embeddings_dir} (published post-processing reused)")
    embed = run_embedding_job_from_config(cfg.embedding, catalogue_path, embeddings_dir)
    ids, matrix, _ = load_embeddings(embeddings_dir)
    pos = {str(i): k for k, i in enumerate(ids)}
    rows = matrix[[pos[i] for i in onboarded["item_id"].astype(str)]]
    # Items a later pipeline run trained (merged at ingest) are already in the towers' catalogue.
    trained = trained_item_ids(model_dir)
    extra = [k for k, i in enumerate(onboarded["item_id"].astype(str)) if i not in trained]
    paths = export_model(cfg, model_dir, extra_items=([str(onboarded["item_id"].iloc[k]) for k in extra], rows[extra]))
    with atomic_path(onboarded_path) as tmp:
        onboarded.to_parquet(tmp, schema=ITEMS_SCHEMA, index=False)
    merge_onboarded(layout)  # the next `learn pipeline run` trains and serves them
    print(f"[learn add-items] embedded {embed.counters.get('forward_passes', 0)} batch(es) with the frozen LLM; "
          f"published version {paths['version']} with {len(onboarded):,} onboarded items in {time.time() - t0:.1f} s")
    return {"paths": paths, "new_items": len(new), "onboarded": len(onboarded), "embed": embed.counters}


def embeddings_dir_of(cfg: Config, model_dir: str) -> str:
    """The embedding directory a trained model's content came from (so new items get the same transform).

    Towers trained by the TFX pipeline (under the pipeline root) used the
    pipeline's incremental cache `<pipeline_root>/embedding_cache`; `learn
    train` used `<output_dir>/embeddings`.
    """
    layout = cfg.layout()
    root = os.path.abspath(layout.pipeline_root)
    if os.path.abspath(model_dir).startswith(root + os.sep):
        return layout.embedding_cache
    return layout.embeddings


def cmd_add_items(cfg: Config, args: argparse.Namespace) -> int:
    """`learn add-items FILE.jsonl`: cold-start onboarding without retraining."""
    res = add_items(cfg, args.items, model_dir=args.model_dir)
    _print_export(res["paths"], cfg.layout().model_base)
    return 0


def register(add: Any) -> None:  # noqa: ANN401
    """Adds the serving subcommands; `add(name, fn, help, output=...)` is the CLI's subparser factory."""
    sp = add("export", cmd_export, "export the trained towers as TF Serving SavedModels (user, item, ScaNN + "
             "brute-force top-k), with models.config, batching and warmup files")
    sp.add_argument("--model", help="trained model name under <output_dir>/models (default: pipeline.model_kind)")
    sp.add_argument("--model-dir", help="trained model directory (overrides --model)")
    sp.add_argument("--version", type=int, help="version number (default: next)")
    sp = add("serve", cmd_serve, "serve the model base over TF Serving's gRPC API (PredictionService, "
             "ModelService) and REST API")
    sp.add_argument("--model-base", help="TF Serving model base (default: serving.model_base)")
    sp.add_argument("--host", help="bind address (default serving.host, 127.0.0.1)")
    sp.add_argument("--port", type=int, help="gRPC port (default serving.port; 0 picks a free one)")
    sp.add_argument("--rest-port", type=int,
                    help="REST port (default serving.rest_port, else gRPC port + 1, i.e. 8501; a free one with "
                    "--port 0; -1: no REST)")
    sp.add_argument("--enable-batching", action=argparse.BooleanOptionalAction, default=None,
                    help="batch concurrent requests (default serving.enable_batching; parameters from "
                    "serving.batching_parameters_file or <model base>/batching_parameters.txt, then the "
                    "serving.max_batch_size / batch_timeout_micros / num_batch_threads / max_enqueued_batches keys)")
    sp.add_argument("--batching-parameters-file",
                    help="text-format BatchingParameters (default serving.batching_parameters_file)")
    sp = add("query", cmd_query, "top-k recommendations for a history of item ids or exact titles, over gRPC "
             "or REST")
    sp.add_argument("--history", action="append", required=True,
                    help="comma-separated item ids or exact titles, oldest first (repeatable)")
    sp.add_argument("--k", type=int, default=10)
    sp.add_argument("--model", help="learn_retrieval (ScaNN), learn_retrieval_bf or cllm4rec_retrieval (default: "
                    "cllm4rec_retrieval when pipeline.model_kind is cllm4rec, else learn_retrieval)")
    sp.add_argument("--user", help="user id for cllm4rec_retrieval's prompt (default: none, history only)")
    sp.add_argument("--server", help="gRPC host:port (default serving.host:serving.port), or http://host:port "
                    "for the REST API")
    sp.add_argument("--rest", action="store_true", help="use the REST API (port serving.port + 1 unless --server)")
    sp.add_argument("--include-history", action="store_true", help="do not exclude the history's own items")
    sp = add("add-items", cmd_add_items, "onboard new items (JSON lines) without retraining: embed with the "
             "frozen LLM, item tower, new index, new version")
    sp.add_argument("items", help="JSON-lines file: one object per item with item_id and text fields")
    sp.add_argument("--model-dir", help="trained model directory (default: <output_dir>/models/<pipeline.model_kind>)")
