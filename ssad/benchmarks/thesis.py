"""The Gasoyan thesis comparison on Fashion-MNIST, leave-one-class-out, offline.

``python -m ssad.benchmarks.thesis`` embeds the images once with a frozen
backbone (default: the ImageNet EfficientNet-Lite0 from PyPI), then for each
held-out class reports the AUROC of the thesis pipeline (PCA 100 -> K-means
with the elbow rule) before and after GMM filtering of the training set, and
of :class:`ssad.GaussianScorer` and :class:`ssad.KNNScorer` (k=2) on the same
features, all in one run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ssad import GaussianScorer, KNNScorer, TimmFeatures
from ssad.benchmarks._cli import finish, parser_with_common_options, setup, teacher_checkpoint
from ssad.benchmarks._env import environment
from ssad.benchmarks._protocols import leave_one_out_splits
from ssad.datasets import load_fashion_mnist
from ssad.detectors import thesis_scores

logger = logging.getLogger(__name__)

COLUMNS = ("kmeans", "gmm_filtered_kmeans", "gaussian", "knn")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison; returns the results dictionary."""
    data = load_fashion_mnist(args.root)
    rng = np.random.default_rng(args.seed)
    tr = np.sort(rng.choice(len(data.y_train), min(args.max_train, len(data.y_train)), False))
    te = np.sort(rng.choice(len(data.y_test), min(args.max_test, len(data.y_test)), False))
    checkpoint = teacher_checkpoint(args)
    features = TimmFeatures(
        args.backbone,
        pretrained=checkpoint is None,
        checkpoint_path=checkpoint,
        pooling=args.pooling,
        image_size=args.image_size,
        verbose=args.verbose,
    )
    start = time.perf_counter()
    features.fit(data.X_train[tr[:1]])
    Z_train = features.transform(data.X_train[tr])
    Z_test = features.transform(data.X_test[te])
    embed_s = time.perf_counter() - start
    y_train, y_test = data.y_train[tr], data.y_test[te]

    rows = []
    for split in leave_one_out_splits(
        y_train, y_test, args.classes, target_names=data.target_names
    ):
        Zf, Zs = Z_train[split.train_idx], Z_test[split.test_idx]
        start = time.perf_counter()
        out = thesis_scores(
            Zf,
            Zs,
            n_components=args.n_components,
            max_clusters=args.max_clusters,
            max_components=args.max_components,
            random_state=args.seed,
        )
        scores = {k: out[k] for k in ("kmeans", "gmm_filtered_kmeans")}
        scores["gaussian"] = GaussianScorer().fit(Zf).score_samples(Zs)
        scores["knn"] = KNNScorer(n_neighbors=2).fit(Zf).score_samples(Zs)
        row = {
            "split": split.name,
            "n_train": split.n_train,
            "n_test": split.n_test,
            **{k: float(roc_auc_score(split.is_anomaly, -v)) for k, v in scores.items()},
            "n_filtered": out["n_filtered"],
            "n_clusters_before_after": list(out["n_clusters"]),
            "gmm": {
                "n_components": int(out["filter"].n_components_),
                "covariance_type": out["filter"].covariance_type_,
            },
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        logger.info("%-22s %s", split.name, " ".join(f"{k}={100 * row[k]:.2f}" for k in COLUMNS))
    return {
        "benchmark": "thesis-pipeline",
        "dataset": "fashion-mnist",
        "protocol": "leave-one-out",
        "features": features.get_params(),
        "n_components": args.n_components,
        "max_clusters": args.max_clusters,
        "max_components": args.max_components,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "seed": args.seed,
        "embed_seconds": embed_s,
        "embed_images_per_s": (len(tr) + len(te)) / embed_s,
        "splits": rows,
        "mean_auroc": {k: float(np.mean([r[k] for r in rows])) for k in COLUMNS},
        "command": "python -m ssad.benchmarks.thesis " + " ".join(sys.argv[1:]),
        "environment": environment(),
    }


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown table of a result dictionary from :func:`run` (AUROC in %)."""
    lines = [
        "| held-out class | K-means | GMM filter + K-means | Gaussian | kNN (k=2) "
        "| K before/after |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["splits"]:
        cells = " | ".join(f"{100 * r[k]:.2f}" for k in COLUMNS)
        k_ba = "/".join(str(k) for k in r["n_clusters_before_after"])
        lines.append(f"| {r['split']} | {cells} | {k_ba} |")
    mean = " | ".join(f"**{100 * result['mean_auroc'][k]:.2f}**" for k in COLUMNS)
    lines.append(f"| **mean** | {mean} | |")
    lines.append("")
    lines.append(
        f"Embedding: {result['embed_images_per_s']:.1f} images/s; command: `{result['command']}`"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = parser_with_common_options(
        "python -m ssad.benchmarks.thesis",
        __doc__,
        image_size=64,
        max_train=10000,
        max_test=10000,
    )
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--n-components", type=int, default=100)
    parser.add_argument("--max-clusters", type=int, default=10)
    parser.add_argument("--max-components", type=int, default=10)
    args = parser.parse_args(argv)
    setup(args, logger)
    return finish(args, "thesis", run(args), to_markdown, logger)


if __name__ == "__main__":
    main()
