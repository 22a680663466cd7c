"""Cleaning a contaminated memory: which filter keeps the contaminating anomalies out.

Under the contaminated one-class protocol the training set of a class holds a
share ``--ratio`` of images of the other classes.  A kNN score compares a test
image with every training image, so a test anomaly that resembles one of the
contaminating images scores as normal.  This scores with kNN (k=2) on raw
pixels against the training images that each of four filters keeps (each
drops 10 % of them, as ``ConvexMILDetector(memory_filter=...)`` does):

- ``filter-knn5``: mean distance to the 5 nearest other training images
  (ConvexMIL's eq. 2 with its K = 5 over the whole training set);
- ``filter-knn-sqrt``: the same with K = ceil(sqrt(n_train)), which grows with
  the training set (``KNNScorer(n_neighbors="sqrt")``);
- ``filter-gmm``: a BIC-chosen Gaussian mixture on 90 % of the PCA variance
  (the registered ``knn-pixels-filtered``);
- ``filter-iforest``: an isolation forest;

beside kNN on every training image (the estimator row) and the isolation
forest as a scorer (``iforest-pixels``).  It writes the usual benchmark
reports (JSON + Markdown) and adds, per filter, the share of the
contaminating anomalies it dropped (``filter_recall`` in the JSON, a table in
the Markdown).  Everything runs on raw pixels in seconds.

Run:  python examples/memory_filters.py --dataset fashion-mnist --ratio 0.05 \
          --max-train 1000 --seed 0 --out docs/results
"""

import argparse
import shlex
import sys

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from ssad.benchmarks import make_estimator, run_benchmark, write_report
from ssad.features import PixelFeatures
from ssad.scoring import FilteredFit, KNNScorer

FRACTION = 0.1  # share of the training images each filter drops


def filters(seed: int) -> dict[str, object]:
    """The outlier filters compared, each dropping ``FRACTION`` of the training images."""
    gmm = make_estimator("knn-pixels-filtered")[-1].filter  # PCA 90 % + BIC GMM
    return {
        "filter-knn5": KNNScorer(n_neighbors=5, aggregate="mean", contamination=FRACTION),
        "filter-knn-sqrt": KNNScorer(n_neighbors="sqrt", aggregate="mean", contamination=FRACTION),
        "filter-gmm": gmm,
        "filter-iforest": IsolationForest(contamination=FRACTION, random_state=seed),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ratio", type=float, default=0.05, help="contamination share")
    parser.add_argument("--max-train", type=int, help="training images per split, at most")
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder of the reports")
    args = parser.parse_args(argv)

    rows = {
        name: Pipeline([("pixels", PixelFeatures()), ("knn", FilteredFit(f, KNNScorer()))])
        for name, f in filters(args.seed).items()
    }
    result, _, data = run_benchmark(
        args.dataset,
        protocol="contaminated",
        estimator="knn-pixels",
        ratio=args.ratio,
        baselines=rows,
        classes=args.classes,
        seed=args.seed,
        max_train=args.max_train,
        max_test=args.max_test,
        name=f"{args.dataset}_contaminated_memory-filters-pixels",
        out=args.out,
        verbose=0,
        command=["python", "examples/memory_filters.py", *(sys.argv[1:] if argv is None else argv)],
    )
    # the share of each split's contaminating images that each filter drops
    recall: dict[str, list[float]] = {name: [] for name in rows}
    for split in data.splits:
        X = PixelFeatures().fit_transform(data.X_train[split.train_idx])
        for name, f in filters(args.seed).items():
            dropped = ~FilteredFit(f, KNNScorer()).fit(X).inlier_mask_
            recall[name].append(float(dropped[split.train_is_anomaly].mean()))
    result.metadata["filter_recall"] = recall
    aurocs = {m.name: 100 * m.mean_auroc for m in result.models}
    print(f"{args.dataset}, ratio {args.ratio}, seed {args.seed}: mean AUROC % (share of the")
    print("contaminating anomalies each filter drops)")
    for name, auroc in aurocs.items():
        drops = f"  (drops {100 * np.mean(recall[name]):.0f} %)" if name in recall else ""
        print(f"  {name:18s} {auroc:5.1f}{drops}")
    if args.out:
        json_path, md_path = write_report(result, args.out)[:2]
        lines = [
            "",
            f"Contaminating anomalies each filter dropped, % (it drops {FRACTION:.0%} of the "
            f"training images; contamination share {args.ratio:.0%}):",
            "",
            "| split | " + " | ".join(recall) + " |",
            "|---|" + "---:|" * len(recall),
        ]
        for i, split in enumerate(data.splits):
            cells = " | ".join(f"{100 * recall[name][i]:.0f}" for name in recall)
            lines.append(f"| {split.name} | {cells} |")
        means = " | ".join(f"**{100 * np.mean(v):.0f}**" for v in recall.values())
        lines.append(f"| **mean** | {means} |")
        with open(md_path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"wrote {json_path} and {md_path}; command: {shlex.join(result.metadata['command'])}")
    return aurocs


if __name__ == "__main__":
    main()
