"""What the per-detector benchmark commands share: options, teacher weights, output."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssad.backbones import efficientnet_lite0_checkpoint

__all__ = ["finish", "parser_with_common_options", "setup", "teacher_checkpoint"]


def parser_with_common_options(
    prog: str, description: str | None, *, image_size: int, max_train: int, max_test: int
) -> argparse.ArgumentParser:
    """Parser with the options of the Fashion-MNIST benchmarks with a frozen teacher."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="*", default=None)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--checkpoint-path", default=None)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--max-train", type=int, default=max_train)
    parser.add_argument("--max-test", type=int, default=max_test)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    return parser


def teacher_checkpoint(args: argparse.Namespace) -> str | None:
    """``--checkpoint-path``, or the offline EfficientNet-Lite0 weights for that backbone."""
    if args.checkpoint_path is None and args.backbone == "tf_efficientnet_lite0":
        return str(efficientnet_lite0_checkpoint())
    return args.checkpoint_path


def setup(args: argparse.Namespace, logger: logging.Logger) -> None:
    """Torch threads, and the command's per-split lines on stderr."""
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)


def finish(
    args: argparse.Namespace,
    name: str,
    result: dict[str, Any],
    to_markdown: Callable[[dict[str, Any]], str],
    logger: logging.Logger,
) -> dict[str, Any]:
    """Write ``<out>/<name>.json`` and ``.md`` and log the table."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    table = to_markdown(result)
    (args.out / f"{name}.md").write_text(table)
    logger.info("%s", table)
    return result
