"""`learn train --model cllm4rec` and its evaluation: split data -> documents -> schedule -> saved tables.

CLLM4Rec reads the ingested items (their text, rendered by the embedding
job's template) and the split's training interactions; it needs no content
embeddings. Evaluation goes through the shared evaluator
(`learn_tf.evaluation.evaluator.evaluate_models`) with Popularity on the same
cases.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import numpy as np
import pandas as pd

from learn_tf.baselines import PopularityBaseline
from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.documents import DocumentBuilder, Prompts
from learn_tf.cllm4rec.model import CLLM4Rec
from learn_tf.cllm4rec.protocol import binarised_split, own_metrics
from learn_tf.cllm4rec.scoring import CLLM4RecScorer
from learn_tf.cllm4rec.train import Schedule, Trainer, TrainData
from learn_tf.cllm4rec.vocab import FrozenLM
from learn_tf.config import CLLM4RecConfig, Config
from learn_tf.data.ingest import read_ingested
from learn_tf.data.splits import order_interactions, read_splits
from learn_tf.embeddings.templates import item_text, resolve_template, text_columns
from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.evaluation.evaluator import evaluate_models
from learn_tf.models.catalogue import user_histories
from learn_tf.utils.io import atomic_path, write_json

MODEL_NAME = "cllm4rec"
CURVE_FILE = "curve.json"
CURVE_PLOT = "curve.png"


def prompts_from(c: CLLM4RecConfig) -> Prompts:
    """The hard prompts of a config section."""
    return Prompts(collaborative=c.collaborative_prompt, content=c.content_prompt, recommend=c.recommend_prompt)


def schedule_from(c: CLLM4RecConfig) -> Schedule:
    """The training schedule of a config section."""
    return Schedule(content_warmup_epochs=c.content_warmup_epochs, alternating_epochs=c.alternating_epochs,
                    finetune_epochs=c.finetune_epochs, batch_size=c.batch_size, max_batch_tokens=c.max_batch_tokens,
                    pretrain_learning_rate=c.pretrain_learning_rate,
                    finetune_learning_rate=c.finetune_learning_rate, lambda_v=c.lambda_v,
                    mask_fraction=c.mask_fraction, finetune_target=c.finetune_target, seed=c.seed)


def item_texts(items: pd.DataFrame, template: str) -> dict[str, str]:
    """Item id -> the text the embedding job renders for it (MovieLens has no reviews: these are the documents)."""
    tmpl = resolve_template(template)
    rows = items[[c for c in text_columns(tmpl) if c in items.columns]].to_dict("records")
    return {str(r["item_id"]): item_text(tmpl, r)[0] for r in rows}


def training_data(builder: DocumentBuilder, item_ids: list[str], user_ids: list[str], train: pd.DataFrame,
                  texts: dict[str, str]) -> TrainData:
    """Collaborative documents (one per user), content documents (one per item) and fine-tuning histories."""
    item_index = {i: k for k, i in enumerate(item_ids)}
    user_index = {u: k for k, u in enumerate(user_ids)}
    histories = [(user_index[u], np.asarray([item_index[i] for i in h], np.int64))
                 for u, h in user_histories(train)]
    collab = [builder.collaborative(u, h) for u, h in histories]
    content = builder.content(list(range(len(item_ids))), [texts[i] for i in item_ids])
    return TrainData(collaborative=collab, content=content, histories=histories)


def curve_cases(validation: pd.DataFrame, users: int) -> Optional[pd.DataFrame]:
    """The validation cases of the first `users` users (sorted ids) scored for the learning curve; None if 0."""
    if users <= 0:
        return None
    keep = sorted(validation["user_id"].unique())[:users]
    return validation[validation["user_id"].isin(keep)].reset_index(drop=True)


def case_scorer(model: CLLM4Rec, builder: DocumentBuilder, meta: dict[str, Any], cases: pd.DataFrame,
                batch_size: int = 32) -> Any:
    """The shared evaluator's score function of a saved CLLM4Rec on `cases` (each history keyed to its user)."""
    return CLLM4RecScorer(model, builder, meta["item_ids"], meta["user_ids"], batch_size).for_cases(cases).score


def curve_callback(scorer: CLLM4RecScorer, cases: pd.DataFrame, item_ids: list[str]):  # noqa: ANN201
    """After each epoch: validation NDCG@10 / Recall@10 (masked, unmasked) on `cases` (the learning curve)."""
    def on_epoch(_: dict[str, Any]) -> dict[str, Any]:
        t0 = time.time()
        res = evaluate_models({"m": scorer.score}, cases, np.asarray(item_ids), ks=(10,))["models"]["m"]
        return {f"val_{p}_{m}": res[p]["overall"]["metrics"][m] for p in res for m in ("ndcg@10", "recall@10")} | {
            "val_seconds": time.time() - t0}
    return on_epoch


def write_curve_plot(records: list[dict[str, Any]], path: str) -> None:
    """curve.png: each epoch's training losses (left) and validation NDCG@10 (right), phases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    x = list(range(1, len(records) + 1))
    labels = [f"{r['phase'].replace('content_', '')} {r['epoch']}" for r in records]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, name in (("collab_loss", "collaborative LM (items)"), ("content_loss", "content LM (vocabulary)"),
                      ("rec_loss", "recommendation / 20 (multinomial)")):
        pts = [(i, r[key] / (20.0 if key == "rec_loss" else 1.0)) for i, r in zip(x, records) if key in r]
        if pts:
            a.plot(*zip(*pts), marker="o", label=name)
    a.set_ylabel("training loss")
    for key, name in (("val_masked_ndcg@10", "masked"), ("val_unmasked_ndcg@10", "unmasked")):
        pts = [(i, r[key]) for i, r in zip(x, records) if key in r]
        if pts:
            b.plot(*zip(*pts), marker="o", label=name)
    b.set_ylabel("validation NDCG@10")
    for ax in (a, b):
        if ax.get_legend_handles_labels()[0]:  # a run without a curve (the own protocol) has no validation points
            ax.legend(fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def train_cllm4rec(c: CLLM4RecConfig, items: pd.DataFrame, train: pd.DataFrame, template: str, out_dir: str,
                   curve_cases: Optional[pd.DataFrame] = None, lm: Optional[FrozenLM] = None,
                   log: Any = print) -> tuple[CLLM4Rec, DocumentBuilder, dict[str, Any]]:
    """Trains CLLM4Rec on a split's training interactions and saves it to `out_dir`.

    Args:
      c: the cllm4rec config section.
      items: canonical items (the catalogue, sorted ids, and their text fields).
      train: the split's training interactions (user_id, item_id, position).
      template: the item-text template (the embedding section's).
      out_dir: where tables.npz, cllm4rec.json and curve.json go.
      curve_cases: validation cases (with earlier_items) scored after each epoch; None: no curve.
      lm: an already loaded backbone (default: load `c.model`).

    Returns:
      (model, builder, {"seconds", "epochs", "final": last epoch record, "frozen_weights_unchanged"}).
    """
    t0 = time.time()
    lm = lm or FrozenLM.from_preset(c.model)
    item_ids = sorted(items["item_id"].astype(str))
    user_ids = sorted(train["user_id"].astype(str).unique())
    model, builder = store.build(lm, item_ids, user_ids, prompts_from(c), c.max_content_tokens, seed=c.seed)
    data = training_data(builder, item_ids, user_ids, train, item_texts(items, template))
    frozen = [w.numpy().tobytes() for w in lm.frozen_weights()]
    curve = None
    if curve_cases is not None and len(curve_cases):
        scorer = CLLM4RecScorer(model, builder, item_ids, user_ids, c.score_batch_size).for_cases(curve_cases)
        curve = curve_callback(scorer, curve_cases, item_ids)
    done: list[dict[str, Any]] = []

    def on_epoch(rec: dict[str, Any]) -> dict[str, Any]:
        """The curve point, then a checkpoint of the tables and the curve so far (a cut run keeps its epochs)."""
        extra = curve(rec) if curve else {}
        done.append({**rec, **extra})
        store.save(model, out_dir, c.model, item_ids, user_ids, prompts_from(c), c.max_content_tokens,
                   {"epochs_done": len(done), "last_phase": rec["phase"]})
        write_json(os.path.join(out_dir, CURVE_FILE), done)
        write_curve_plot(done, os.path.join(out_dir, CURVE_PLOT))
        return extra
    log(f"[cllm4rec] {len(user_ids):,} users, {len(item_ids):,} items, "
        f"{sum(len(d) for d in data.collaborative):,} collaborative tokens, "
        f"{sum(len(d) for d in data.content):,} content tokens; backbone vocabulary {lm.base_size:,}, d {lm.dim}")
    records = Trainer(model, builder, schedule_from(c)).fit(data, on_epoch, log=log)
    unchanged = all(a == w.numpy().tobytes() for a, w in zip(frozen, lm.frozen_weights()))
    seconds = time.time() - t0
    store.save(model, out_dir, c.model, item_ids, user_ids, prompts_from(c), c.max_content_tokens,
               {"train_seconds": round(seconds, 1), "frozen_weights_unchanged": unchanged})
    write_json(os.path.join(out_dir, CURVE_FILE), records)
    write_curve_plot(records, os.path.join(out_dir, CURVE_PLOT))
    return model, builder, {"seconds": round(seconds, 1), "epochs": len(records),
                            "final": records[-1] if records else None, "frozen_weights_unchanged": unchanged}


def _cases(cfg: Config, split: str, interactions: pd.DataFrame) -> pd.DataFrame:
    return add_earlier_items(read_splits(cfg.layout().split).cases(split), interactions)


def train_cllm4rec_job(cfg: Config, models_dir: Optional[str] = None, log: Any = print) -> dict[str, Any]:
    """`learn train --model cllm4rec`: trains on the run's split and saves under `<models_dir>/cllm4rec/`."""
    layout = cfg.layout()
    items, interactions = read_ingested(layout.data)
    splits = read_splits(layout.split)
    val = curve_cases(splits.cases("validation"), cfg.cllm4rec.curve_users)
    curve = add_earlier_items(val, interactions) if val is not None else None
    out = os.path.join(models_dir or layout.models, MODEL_NAME)
    log(f"[learn train] cllm4rec -> {out}")
    return train_cllm4rec(cfg.cllm4rec, items, splits.train, cfg.embedding.template, out, curve, log=log)[2]


def own_protocol_job(cfg: Config, out_dir: Optional[str] = None, log: Any = print) -> dict[str, Any]:
    """CLLM4Rec's own protocol: trains on the binarised 80% split and reports R@20, R@40, N@100 on its test.

    The collaborative documents keep each user's training positives in time
    order; the prompt at test time holds all of them (scored -inf).
    """
    layout = cfg.layout()
    items, interactions = read_ingested(layout.data)
    parts = binarised_split(interactions, seed=cfg.cllm4rec.seed)
    ordered = order_interactions(interactions)[["user_id", "item_id", "position"]].astype({"user_id": str,
                                                                                          "item_id": str})
    train = parts["train"].merge(ordered, on=["user_id", "item_id"]).drop_duplicates(["user_id", "item_id"])
    out = out_dir or os.path.join(layout.models, MODEL_NAME + "_own")
    model, builder, summary = train_cllm4rec(cfg.cllm4rec, items, train, cfg.embedding.template, out, log=log)
    meta = store.read_meta(out)
    scorer = CLLM4RecScorer(model, builder, meta["item_ids"], meta["user_ids"], cfg.cllm4rec.score_batch_size)
    col = scorer.item_index
    seen = dict(list(user_histories(train)))
    test = parts["test"].groupby("user_id")["item_id"].agg(list)
    users = sorted(test.index)
    t0 = time.time()
    scores = scorer.score_users([seen.get(u, []) for u in users], users)
    seen_cols = [[col[i] for i in seen.get(u, [])] for u in users]
    test_cols = [[col[i] for i in test[u]] for u in users]
    metrics = own_metrics(scores, seen_cols, test_cols)
    score_seconds = round(time.time() - t0, 1)
    # Popularity on the same split (training positives' counts, the same ranking for every user): the floor.
    pop = PopularityBaseline.from_interactions(np.asarray(meta["item_ids"]), train["item_id"])
    popularity = own_metrics(pop.score(users), seen_cols, test_cols)
    result = {"protocol": "CLLM4Rec own (rating > 3, per-user random 80/10/10)", "metrics": metrics,
              "popularity": popularity, "train": summary, "score_seconds": score_seconds,
              "split": {k: int(len(v)) for k, v in parts.items()}}
    log(f"[cllm4rec own protocol] {metrics['users']} users: "
        + ", ".join(f"{m} {metrics[m]:.4f} (Popularity {popularity[m]:.4f})" for m in metrics if m != "users"))
    write_json(os.path.join(out, "own_protocol.json"), result)
    return result


def evaluate_cllm4rec(model: CLLM4Rec, builder: DocumentBuilder, meta: dict[str, Any], cases: pd.DataFrame,
                      train: pd.DataFrame, batch_size: int = 32) -> dict[str, Any]:
    """CLLM4Rec and Popularity through the shared evaluator (both protocols, every segment)."""
    item_ids = np.asarray(meta["item_ids"])
    popularity = PopularityBaseline.from_interactions(item_ids, train["item_id"])
    return evaluate_models({MODEL_NAME: case_scorer(model, builder, meta, cases, batch_size),
                            "popularity": popularity.score}, cases, item_ids)


def evaluate_cllm4rec_job(cfg: Config, models_dir: Optional[str] = None, results_dir: Optional[str] = None,
                          split: str = "test") -> dict[str, Any]:
    """`learn evaluate --model cllm4rec`: writes results.json / results.md under `<results>/cllm4rec/`."""
    from learn_tf.evaluation.report import format_table, write_report  # matplotlib, only when writing reports

    layout = cfg.layout()
    model, builder, meta = store.load(os.path.join(models_dir or layout.models, MODEL_NAME))
    _, interactions = read_ingested(layout.data)
    cases = _cases(cfg, split, interactions)
    t0 = time.time()
    results = evaluate_cllm4rec(model, builder, meta, cases, read_splits(layout.split).train,
                                cfg.cllm4rec.score_batch_size)
    results.update({"split": split, "seconds": round(time.time() - t0, 1)})
    out = os.path.join(results_dir or layout.results, MODEL_NAME)
    write_report(results, out)
    print(format_table(results))
    return results
