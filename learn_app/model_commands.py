"""`learn train | evaluate`: train the towers and score them with the shared evaluator."""

from __future__ import annotations

import argparse

from learn_tf.config import Config
from learn_tf.cllm4rec.job import evaluate_cllm4rec_job, own_protocol_job
from learn_tf.training.jobs import MODEL_KINDS, evaluate_job, train_job


def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    """Trains LEARN (and the SASRec baseline / the no-alignment variant) on the split.

    `--own-protocol` trains and scores CLLM4Rec on its own protocol instead (rating > 3, per-user random
    80/10/10; R@20, R@40, N@100 beside Popularity) under `<output_dir>/models/cllm4rec_own/`.
    """
    if args.own_protocol:
        if args.model not in (None, ["cllm4rec"]):
            raise ValueError("--own-protocol is CLLM4Rec's protocol: use it with --model cllm4rec (or alone)")
        own_protocol_job(cfg)
        return 0
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
    sp.add_argument("--own-protocol", action="store_true",
                    help="CLLM4Rec on its own protocol: rating > 3, per-user random 80/10/10, R@20 / R@40 / N@100 "
                    "beside Popularity (trains a second CLLM4Rec under models/cllm4rec_own)")
    sp = add("evaluate", cmd_evaluate, "full-catalogue Recall/NDCG/MRR per protocol and segment, JSON + md + PNG")
    sp.add_argument("--split", default="test", choices=["test", "validation"])
    sp.add_argument("--model", default="towers", choices=["towers", "cllm4rec"],
                    help="the trained towers + baselines (default), or CLLM4Rec + Popularity")
