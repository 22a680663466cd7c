"""Command line: ``python -m ssad.benchmarks`` (also the ``ssad`` console script).

Examples::

    python -m ssad.benchmarks --dataset fashion-mnist --protocol one-class \\
        --estimator knn-pixels --out results
    python -m ssad.benchmarks --dataset digits --protocol contaminated --ratio 0.1 \\
        --estimator efficientnet-knn --params '{"features__image_size": 64}' --plots
    python -m ssad.benchmarks --list
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from ssad.benchmarks._registry import available_estimators
from ssad.benchmarks._runner import DATASETS, PROTOCOLS, run_benchmark, write_report

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the runner.

    Returns
    -------
    argparse.ArgumentParser
        The parser; ``python -m ssad.benchmarks --help`` prints its help.

    Examples
    --------
    >>> from ssad.benchmarks.__main__ import build_parser
    >>> build_parser().parse_args(["--dataset", "digits"]).protocol
    'one-class'
    """
    parser = argparse.ArgumentParser(
        prog="python -m ssad.benchmarks",
        description=(
            "Evaluate an anomaly detector under a paper's protocol, with baselines on the same "
            "splits (kNN k=2 and IsolationForest on raw pixels, kNN on the estimator's own "
            "embeddings), and write JSON + Markdown results."
        ),
    )
    parser.add_argument(
        "--dataset",
        help=f"data set: {', '.join(DATASETS)}",
    )
    parser.add_argument("--root", help="folder of the data set's files")
    parser.add_argument(
        "--image-size", type=int, default=None, help="resize when reading (mvtec:*, folder)"
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="one-class")
    parser.add_argument(
        "--ratio", type=float, default=0.05, help="contamination share (contaminated protocol)"
    )
    parser.add_argument("--ood-dataset", help="out-of-distribution data set (dataset-vs-dataset)")
    parser.add_argument("--ood-root", help="folder of the out-of-distribution data set")
    parser.add_argument(
        "--estimator", default="knn-pixels", help="registered estimator name (see --list)"
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default=None,
        help="JSON object for the estimator's set_params, e.g. '{\"knn__n_neighbors\": 5}'",
    )
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="classes to run")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-train", type=int, default=None, help="subsample training images")
    parser.add_argument("--max-test", type=int, default=None, help="subsample test images")
    parser.add_argument("--out", default="benchmark-results", help="output folder")
    parser.add_argument("--plots", action="store_true", help="also write PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every split")
    parser.add_argument("--list", action="store_true", help="list the registered estimators")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        Arguments; default: ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status, 0 on success.

    Examples
    --------
    >>> from ssad.benchmarks.__main__ import main
    >>> main(["--dataset", "digits", "--classes", "0", "1", "--out", "results"])  # doctest: +SKIP
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, description in available_estimators().items():
            print(f"{name:28s} {description}")
        return 0
    if args.dataset is None:
        parser.error("--dataset is required")
    if args.params is not None and not isinstance(args.params, dict):
        parser.error("--params must be a JSON object")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    if args.plots:
        import matplotlib

        matplotlib.use("Agg")
    try:
        result, estimator, data = run_benchmark(
            args.dataset,
            root=args.root,
            protocol=args.protocol,
            estimator=args.estimator,
            params=args.params,
            classes=args.classes,
            ratio=args.ratio,
            ood_dataset=args.ood_dataset,
            ood_root=args.ood_root,
            seed=args.seed,
            max_train=args.max_train,
            max_test=args.max_test,
            image_size=args.image_size,
            verbose=0 if args.quiet else 1,
            command=argv,
        )
    except (ValueError, OSError, ImportError) as exc:  # bad arguments, missing files or weights
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    paths = write_report(result, args.out, plots=args.plots, estimator=estimator, data=data)
    if not args.quiet:
        print(paths[1].read_text(encoding="utf-8"))
        print("Wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
