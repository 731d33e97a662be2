"""The `learn` command line: one subcommand per job, each reading `--config` and writing under `--output`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Optional, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from learn_app import data_commands, model_commands, pipeline_commands, serving_commands
from learn_tf.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "configs/movielens.yaml"
Command = Callable[[Config, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="learn",
        description="LEARN-TF: frozen-LLM item embeddings adapted to recommendation with TFRS, TFX and TF Serving.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        sp.add_argument("--output", help="the run root every path lives under (default: the config's output_dir); "
                                         "the same in every subcommand, see learn_tf/layout.py")
        sp.set_defaults(fn=fn)
        return sp

    data_commands.register(add)
    model_commands.register(add)
    serving_commands.register(add)
    pipeline_commands.register(add)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `learn` console script."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.output:
            cfg = dataclasses.replace(cfg, output_dir=args.output)
        return int(args.fn(cfg, args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
