"""Quality table: SASRec against LEARN variants on the peer and cold protocols, 3 seeds each.

One command trains every (protocol, model, seed) run with the library's own
code path (`jobs.build_towers` + `trainer.train`, exactly what `learn train`
runs), scores the test cases with the project's evaluator (full ranking over
the catalogue, the "expected" tie rule, masked and unmasked), and writes:

- `<out>/runs/<protocol>/<model>/seed<k>.json`: one run (summary metrics,
  per-segment NDCG@10, per-case NDCG@10 for the bootstrap, wall times);
  existing files are reused unless `--fresh` (so an interrupted table resumes);
- `docs/results.md`, the section between the `quality-bench` markers: mean and
  std over seeds, the paired bootstrap CI of LEARN minus SASRec per protocol
  and segment, the share of top-10 already in the user's history, and the wall
  time of `learn train` to its best checkpoint;
- `docs/quality.png`: NDCG@10 per model and segment, both protocols.

Prerequisites (once): `learn ingest` + `learn embed` for configs/movielens.yaml,
`learn ingest` for configs/movielens-loo.yaml, whose embeddings directory may
be a link to the first one's.

Usage:
  python benchmarks/quality_bench.py                     # the whole table (about 1.5 h on 2 cores)
  python benchmarks/quality_bench.py --seeds 2024 --protocols loo --models sasrec,learn_hybrid
  python benchmarks/quality_bench.py --only-report       # tables from the stored runs
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Any, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

PROTOCOLS = {
    "loo": ("configs/movielens-loo.yaml", "peer protocol: plain leave-one-out, no cold items"),
    "cold": ("configs/movielens.yaml", "cold protocol: 10% of items held out of training"),
}
# The cold protocol's runs use the peer recipe (model + train sections of movielens-loo.yaml) on
# movielens.yaml's data and split; "learn_a_demo" is movielens.yaml's own LEARN (what `make demo` trains).
RECIPE = "configs/movielens-loo.yaml"
# name -> (model kind, config overrides on top of the protocol's YAML)
MODELS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "sasrec": ("sasrec", {}),
    # The config's LEARN: item tower e, content + ID inputs with ID dropout, dot scores.
    "learn_hybrid": ("learn", {}),
    # The same, untrained (cold) items given ridge-predicted ID vectors (`train.cold_ids: ridge`, L2 chosen on
    # validation): only differs where items were never trained, so it is run on the cold protocol.
    "learn_hybrid_ridge": ("learn", {"train": {"cold_ids": "ridge"}}),
    # ID dropout 0.2 (content trained to stand alone) + ridge cold IDs: a cold-protocol try.
    "hyb_d2_ridge": ("learn", {"model": {"id_dropout": 0.2}, "train": {"cold_ids": "ridge"}}),
    # ID dropout 0.2 with dropped IDs predicted from content by a learned map (DropoutNet-style,
    # `model.id_fallback: content`); untrained items get that prediction.
    "learn_hybrid_map": ("learn", {"model": {"id_dropout": 0.2, "id_fallback": "content"}}),
    # The cold-item operating point: ID dropout 0.2, ridge cold IDs with the L2 chosen on the validation
    # cases whose target is cold (`train.cold_ridge_metric: cold_item`).
    "hyb_d2_ridge_cold": ("learn", {"model": {"id_dropout": 0.2},
                                    "train": {"cold_ids": "ridge", "cold_ridge_metric": "cold_item"}}),
    # Between the two: the best overall validation NDCG@10 among the ridge strengths that keep half of the
    # best cold-item validation NDCG@10 (`train.cold_ridge_metric: balanced`, `cold_ridge_floor: 0.5`).
    "hyb_d2_ridge_bal": ("learn", {"model": {"id_dropout": 0.2},
                                   "train": {"cold_ids": "ridge", "cold_ridge_metric": "balanced"}}),
    # The same without ID vectors: content only (what a cold item gets).
    "learn_e": ("learn", {"model": {"item_inputs": "content"}}),
    # No alignment: items are the raw content vectors, cosine x 20 against the user tower.
    "learn_c": ("learn_c", {"model": {"item_inputs": "content", "similarity": "cosine", "input_norm": True,
                                      "dropout": 0.2}}),
    # `make demo`'s LEARN: movielens.yaml's own model + train sections (tower a, dense in-batch objective).
    "learn_a_demo": ("learn", {"model": {"__from__": "configs/movielens.yaml"},
                               "train": {"__from__": "configs/movielens.yaml"}}),
}
LABELS = {"sasrec": "SASRec", "learn_hybrid": "LEARN hybrid (e, content + ID, two-stage)",
          "learn_hybrid_ridge": "LEARN hybrid, ridge cold IDs",
          "hyb_d2_ridge": "LEARN hybrid, ID dropout 0.2, ridge cold IDs",
          "hyb_d2_ridge_cold": "LEARN hybrid, ID dropout 0.2, ridge cold IDs chosen on cold items",
          "hyb_d2_ridge_bal": "LEARN hybrid, ID dropout 0.2, ridge cold IDs chosen on both (cold floor 0.5)",
          "learn_hybrid_map": "LEARN hybrid, ID dropout 0.2, learned content->ID map",
          "learn_e": "LEARN (e), content only", "learn_c": "LEARN (c), no alignment",
          "learn_a_demo": "LEARN (a), dense in-batch (make demo)", "popularity": "Popularity"}
SEGMENTS = ("cold_item", "long_tail_item", "head_item", "short_history_user")
SEEDS = (2024, 7, 13)
MARK_BEGIN, MARK_END = "<!-- quality-bench:begin -->", "<!-- quality-bench:end -->"


def register_variant(spec: str) -> str:
    """Adds 'NAME=KIND;section.key=value;...' to MODELS (for experiments); returns NAME."""
    head, *sets = [p.strip() for p in spec.split(";") if p.strip()]
    name, kind = head.split("=")
    overrides: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, value = item.split("=", 1)
        section, field = key.split(".")
        overrides.setdefault(section, {})[field] = yaml.safe_load(value)
    MODELS[name] = (kind, overrides)
    LABELS.setdefault(name, name)
    return name


def load_cfg(protocol: str, overrides: dict[str, dict[str, Any]], seed: int) -> Any:
    """The protocol's config with `overrides` merged per section and `train.seed` = seed."""
    from learn_tf.config import config_from_dict

    def read(rel: str) -> dict[str, Any]:
        with open(os.path.join(REPO, rel), encoding="utf-8") as f:
            return yaml.safe_load(f)

    path = os.path.join(REPO, PROTOCOLS[protocol][0])
    raw = copy.deepcopy(read(PROTOCOLS[protocol][0]))
    recipe = read(RECIPE)
    raw["model"], raw["train"] = copy.deepcopy(recipe["model"]), copy.deepcopy(recipe["train"])
    for section, values in overrides.items():
        values = dict(values)
        source = values.pop("__from__", None)
        if source:
            raw[section] = copy.deepcopy(read(source)[section])
        raw.setdefault(section, {}).update(values)
    raw.setdefault("train", {})["seed"] = seed
    raw["output_dir"] = os.path.join(REPO, "runs", "{name}")
    return config_from_dict(raw, origin=f"{path} + {overrides}")


_DATA: dict[str, Any] = {}


def load_data(protocol: str, cfg: Any) -> dict[str, Any]:
    """Training data and validation/test cases (with every earlier item, for masking), cached."""
    if protocol not in _DATA:
        from learn_tf.evaluation.cases import add_earlier_items
        from learn_tf.training.jobs import load_training_data

        data = load_training_data(cfg)
        for split in ("validation", "test"):
            data[split] = add_earlier_items(data["splits"].cases(split), data["interactions"])
        _DATA[protocol] = data
    return _DATA[protocol]


def score_cases(score_fn: Any, cases: Any, item_ids: np.ndarray) -> dict[str, Any]:
    """Summary metrics (the project's evaluator) + per-case NDCG@10 and the top-10-in-history share."""
    from learn_tf.evaluation.evaluator import _mask, _target_columns, evaluate
    from learn_tf.evaluation.metrics import case_metrics, rank_counts

    res = evaluate(score_fn, cases, item_ids, ks=(10, 50), protocols=("masked", "unmasked"))
    index = __import__("pandas").Index(np.asarray(item_ids).astype(str))
    targets = _target_columns(cases, index)
    per_case: dict[str, list[float]] = {"masked": [], "unmasked": []}
    in_history = []
    histories = [list(map(str, h)) for h in cases["history"]]
    earlier = [list(map(str, h)) for h in cases["earlier_items"]]
    for lo in range(0, len(cases), 256):
        hi = min(lo + 256, len(cases))
        scores = np.asarray(score_fn(histories[lo:hi]))
        exclude = _mask(earlier[lo:hi], index)
        for p in per_case:
            g, t = rank_counts(scores, targets[lo:hi], exclude if p == "masked" else None)
            per_case[p].extend(case_metrics(g, t, (10,), "expected")["ndcg@10"].tolist())
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        in_history.extend(exclude[np.arange(hi - lo)[:, None], top].mean(axis=1).tolist())
    out: dict[str, Any] = {"protocols": {}}
    for p in ("masked", "unmasked"):
        block = res["protocols"][p]
        out["protocols"][p] = {
            "overall": block["overall"]["metrics"],
            "segments": {s: {"count": v["count"], "ndcg@10": v["metrics"]["ndcg@10"]}
                         for s, v in block["segments"].items()},
            "per_case_ndcg@10": per_case[p],
        }
    out["top10_in_history"] = float(np.mean(in_history))
    return out


def run_one(protocol: str, name: str, seed: int, out_dir: str, fresh: bool = False) -> dict[str, Any]:
    """Trains and scores one (protocol, model, seed); cached as JSON."""
    path = os.path.join(out_dir, "runs", protocol, name, f"seed{seed}.json")
    if os.path.exists(path) and not fresh:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    import tensorflow as tf

    from learn_tf.models.catalogue import TowerScorer
    from learn_tf.training.jobs import build_towers, train_settings
    from learn_tf.training.trainer import train

    kind, overrides = MODELS[name]
    cfg = load_cfg(protocol, overrides, seed)
    data = load_data(protocol, cfg)
    tf.keras.utils.set_random_seed(seed)
    towers = build_towers(cfg.model, cfg.train.max_len, kind, data["catalogue"], data["content"])
    print(f"[quality] {protocol} {name} seed {seed}: training", flush=True)
    settings = train_settings(cfg.train, kind)
    result = train(towers, data["catalogue"], data["sequences"], data["validation"], settings, verbose=0)
    scorer = TowerScorer(towers, data["catalogue"], cfg.train.max_len)
    scored = score_cases(scorer.score, data["test"], data["catalogue"].item_ids)
    record = {"protocol": protocol, "model": name, "kind": kind, "seed": seed, "overrides": overrides,
              "train": {k: v for k, v in settings.__dict__.items()}, "model_config": dict(cfg.model.__dict__),
              "best_epoch": result.best_epoch, "best_val_ndcg@10": result.best_metric,
              "epochs_run": len(result.history), "seconds": result.seconds, "best_seconds": result.best_seconds,
              "cold_ids": result.cold_ids,
              "history": result.history, **scored}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    m = scored["protocols"]
    print(f"[quality] {protocol} {name} seed {seed}: test NDCG@10 unmasked {m['unmasked']['overall']['ndcg@10']:.4f}"
          f" masked {m['masked']['overall']['ndcg@10']:.4f} (best epoch {result.best_epoch}, "
          f"{result.seconds:.0f} s, best at {result.best_seconds:.0f} s)", flush=True)
    return record


def popularity(protocol: str) -> dict[str, Any]:
    """The Popularity reference on the same cases (deterministic, one run)."""
    from learn_tf.baselines import PopularityBaseline

    cfg = load_cfg(protocol, {}, SEEDS[0])
    data = load_data(protocol, cfg)
    cat = data["catalogue"]
    pop = PopularityBaseline.from_interactions(cat.item_ids, data["splits"].train["item_id"])
    return {"model": "popularity", "seed": 0, **score_cases(pop.score, data["test"], cat.item_ids)}


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over cases and its 95% paired bootstrap interval."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _stat(runs: list[dict[str, Any]], get: Any) -> tuple[float, float]:
    vals = [get(r) for r in runs]
    vals = [v for v in vals if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))


def _fmt(mean_std: tuple[float, float], n: int) -> str:
    m, s = mean_std
    if np.isnan(m):
        return "-"
    return f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"


def report(out_dir: str, protocols: list[str], models: list[str], best: dict[str, str]) -> str:
    """The markdown tables (and the PNG) from the stored runs."""
    lines = [MARK_BEGIN, "", "_Written by `python benchmarks/quality_bench.py`; do not edit by hand._", ""]
    plot: dict[str, dict[str, float]] = {}
    for protocol in protocols:
        pop = popularity(protocol)
        runs = {m: _load_runs(out_dir, protocol, m) for m in models}
        runs = {m: r for m, r in runs.items() if r}
        if not runs:
            continue
        lines += [f"### {PROTOCOLS[protocol][1]}", ""]
        lines += ["Test NDCG@10 and Recall@10, mean ± std over seeds (n = seeds); top-10 in history = share "
                  "of the unmasked top 10 that the user already had.", ""]
        lines += ["| model | n | NDCG@10 unmasked | Recall@10 unmasked | NDCG@10 masked | Recall@10 masked | "
                  "top-10 in history | best epoch | train s to best |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m, rs in list(runs.items()) + [("popularity", [pop])]:
            n = len(rs)
            g = lambda p, k: (lambda r: r["protocols"][p]["overall"][k])  # noqa: E731
            be = _stat(rs, lambda r: r.get("best_epoch")) if m != "popularity" else (float("nan"), 0)
            bs = _stat(rs, lambda r: r.get("best_seconds")) if m != "popularity" else (float("nan"), 0)
            lines.append(f"| {LABELS.get(m, m)} | {n} | {_fmt(_stat(rs, g('unmasked', 'ndcg@10')), n)} | "
                         f"{_fmt(_stat(rs, g('unmasked', 'recall@10')), n)} | "
                         f"{_fmt(_stat(rs, g('masked', 'ndcg@10')), n)} | "
                         f"{_fmt(_stat(rs, g('masked', 'recall@10')), n)} | "
                         f"{_stat(rs, lambda r: r['top10_in_history'])[0]:.3f} | "
                         f"{'-' if np.isnan(be[0]) else f'{be[0]:.0f}'} | "
                         f"{'-' if np.isnan(bs[0]) else f'{bs[0]:.0f}'} |")
        lines.append("")
        counts = pop["protocols"]["masked"]["segments"]
        segs = [s for s in SEGMENTS if counts.get(s, {}).get("count")]
        for p in ("unmasked", "masked"):
            lines += [f"NDCG@10 per segment ({p}), mean over seeds:", "",
                      "| model | " + " | ".join(f"{s} ({counts[s]['count']})" for s in segs) + " |",
                      "|---|" + "---:|" * len(segs)]
            for m, rs in list(runs.items()) + [("popularity", [pop])]:
                cells = [f"{_stat(rs, lambda r, s=s: r['protocols'][p]['segments'][s]['ndcg@10'])[0]:.4f}"
                         for s in segs]
                lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
                if p == "unmasked":
                    plot.setdefault(f"{protocol}: {LABELS.get(m, m)}", {})
            lines.append("")
        if "sasrec" in runs:
            lines += ["Paired bootstrap over test cases (per-case NDCG@10 averaged over seeds, 5,000 "
                      "resamples): LEARN variant minus SASRec, mean [95% interval]; ratio of means.", "",
                      "| variant | protocol | overall | " + " | ".join(segs) + " | ratio |",
                      "|---|---|---:|" + "---:|" * len(segs) + "---:|"]
            cases = load_data(protocol, load_cfg(protocol, {}, SEEDS[0]))["test"]
            for m in runs:
                if m == "sasrec":
                    continue
                seeds = sorted({r["seed"] for r in runs[m]} & {r["seed"] for r in runs["sasrec"]})
                if not seeds:
                    continue
                for p in ("unmasked", "masked"):
                    a = np.mean([np.array(r["protocols"][p]["per_case_ndcg@10"]) for r in runs[m]
                                 if r["seed"] in seeds], axis=0)
                    b = np.mean([np.array(r["protocols"][p]["per_case_ndcg@10"]) for r in runs["sasrec"]
                                 if r["seed"] in seeds], axis=0)
                    cells = []
                    for sel in [np.ones(len(a), bool)] + [cases[s].to_numpy(bool) for s in segs]:
                        d, lo, hi = bootstrap_diff(a[sel], b[sel])
                        cells.append(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
                    ratio = a.mean() / b.mean() if b.mean() > 0 else float("nan")
                    lines.append(f"| {LABELS.get(m, m)} (seeds {len(seeds)}) | {p} | " + " | ".join(cells)
                                 + f" | {ratio:.2f}x |")
            lines.append("")
        for m, rs in runs.items():
            for s in ["overall"] + segs:
                key = f"{PROTOCOLS[protocol][0].split('/')[-1]} {LABELS.get(m, m)}"
                v = _stat(rs, (lambda r: r["protocols"]["unmasked"]["overall"]["ndcg@10"]) if s == "overall" else
                          (lambda r, s=s: r["protocols"]["unmasked"]["segments"][s]["ndcg@10"]))[0]
                plot.setdefault(key, {})[s] = v
    lines += [MARK_END]
    _plot({k: v for k, v in plot.items() if v}, os.path.join(REPO, "docs", "quality.png"))
    return "\n".join(lines)


def _load_runs(out_dir: str, protocol: str, model: str) -> list[dict[str, Any]]:
    d = os.path.join(out_dir, "runs", protocol, model)
    if not os.path.isdir(d):
        return []
    runs = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".json"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                runs.append(json.load(fh))
    return runs


def _plot(values: dict[str, dict[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not values:
        return
    names = list(values)
    segs = ["overall"] + [s for s in SEGMENTS if any(s in v for v in values.values())]
    fig, ax = plt.subplots(figsize=(13, 4.2))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar(np.arange(len(segs)) + i * width, [values[n].get(s, 0.0) for s in segs], width, label=n)
    ax.set_xticks(np.arange(len(segs)) + 0.4 - width / 2)
    ax.set_xticklabels(segs)
    ax.set_ylabel("test NDCG@10 (unmasked), mean over seeds")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(section: str) -> None:
    """Replaces the marked section of docs/results.md (appends it when absent)."""
    path = os.path.join(REPO, "docs", "results.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if MARK_BEGIN in text and MARK_END in text:
        text = text[:text.index(MARK_BEGIN)] + section + text[text.index(MARK_END) + len(MARK_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default="loo,cold")
    ap.add_argument("--models", default="sasrec,learn_hybrid,learn_hybrid_ridge,learn_e,learn_c")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "quality"))
    ap.add_argument("--fresh", action="store_true", help="retrain runs that are stored already")
    ap.add_argument("--variant", action="append", default=[],
                    help="an extra model: 'NAME=KIND;section.key=value;...' (values parsed as YAML)")
    ap.add_argument("--only-report", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print the tables, leave docs/ alone")
    args = ap.parse_args(argv)
    for spec in args.variant:
        register_variant(spec)
    protocols, models = args.protocols.split(","), args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    if not args.only_report:
        for seed in seeds:  # seed-major: a partial table already has every model
            for protocol in protocols:
                for name in models:
                    if protocol == "loo" and name in ("learn_c", "learn_e", "learn_hybrid_ridge", "hyb_d2_ridge",
                                                     "hyb_d2_ridge_cold", "hyb_d2_ridge_bal", "learn_hybrid_map"):
                        continue  # the content-only ablations matter for cold items
                    run_one(protocol, name, seed, args.out, args.fresh)
    section = report(args.out, protocols, models, {})
    print(section)
    if not args.no_write:
        write_results(section)
    print(f"[quality] done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
