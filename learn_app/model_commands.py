"""`learn train | evaluate`: train the towers and score them with the shared evaluator."""

from __future__ import annotations

import argparse

from learn_tf.config import Config
from learn_tf.cllm4rec.job import evaluate_cllm4rec_job
from learn_tf.training.jobs import MODEL_KINDS, evaluate_job, train_job


def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    """Trains LEARN (and the SASRec baseline / the no-alignment variant) on the split."""
    train_job(cfg, args.model or ["learn", "learn_c", "sasrec"])
    return 0


def cmd_evaluate(cfg: Config, args: argparse.Namespace) -> int:
    """Full-catalogue evaluation of every trained model and the baselines (or of CLLM4Rec)."""
    if args.model == "cllm4rec":
        evaluate_cllm4rec_job(cfg, split=args.split)
        return 0
    evaluate_job(cfg, split=args.split)
    return 0


def register(add) -> None:  # noqa: ANN001  (the CLI's subparser factory)
    """Adds the model subcommands."""
    sp = add("train", cmd_train, "train LEARN twin towers and baselines (TFRS), with early stopping")
    sp.add_argument("--model", action="append", choices=list(MODEL_KINDS),
                    help="which model(s) to train, repeatable (default: all three)")
    sp = add("evaluate", cmd_evaluate, "full-catalogue Recall/NDCG/MRR per protocol and segment, JSON + md + PNG")
    sp.add_argument("--split", default="test", choices=["test", "validation"])
    sp.add_argument("--model", default="towers", choices=["towers", "cllm4rec"],
                    help="the trained towers + baselines (default), or CLLM4Rec + Popularity")
