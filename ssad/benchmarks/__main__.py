"""Command line: ``python -m ssad.benchmarks`` (also ``ssad benchmark``).

Examples::

    python -m ssad.benchmarks --list
    python -m ssad.benchmarks --preset transformaly-one-class --classes 0 1 --n-epochs 2
    python -m ssad.benchmarks --dataset fashion-mnist --protocol one-class \\
        --estimator knn-pixels --out results
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ssad.benchmarks._presets import available_presets
from ssad.benchmarks._registry import available_estimators
from ssad.benchmarks._runner import PROTOCOLS, SETTINGS, run_benchmark, run_preset, write_report
from ssad.datasets import DATASETS

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "python -m ssad.benchmarks") -> argparse.ArgumentParser:
    """The argument parser of the runner (the only one in :mod:`ssad.benchmarks`).

    Examples
    --------
    >>> from ssad.benchmarks.__main__ import build_parser
    >>> build_parser().parse_args(["--preset", "speed"]).preset
    'speed'
    """
    p = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate anomaly detectors under a paper's protocol, beside their "
        "ablations and baselines on the same splits (knn-frozen: the untrained backbone; kNN "
        "and IsolationForest on raw pixels), and write JSON + Markdown reports.",
    )
    what = p.add_argument_group("what to run: a preset, or an estimator on a data set")
    what.add_argument("--preset", help="a preset (see --list): data, protocol, method, rows")
    what.add_argument("--estimator", help="a registered estimator; with --preset: its method")
    what.add_argument("--dataset", help=f"data set: {', '.join(DATASETS)}")
    what.add_argument("--protocol", choices=PROTOCOLS, help="protocol (default one-class)")
    what.add_argument("--ratio", type=float, help="contamination share (default 0.05)")
    what.add_argument("--ood-dataset", help="out-of-distribution set (dataset-vs-dataset)")
    what.add_argument("--params", type=json.loads, help="JSON for set_params, e.g. '{\"k\": 5}'")
    what.add_argument("--list", action="store_true", help="list estimators and presets")
    size = p.add_argument_group("overrides (a short run is one command)")
    size.add_argument("--classes", type=int, nargs="+", help="classes to run")
    size.add_argument("--max-train", type=int, help="training images per split, at most")
    size.add_argument("--max-test", type=int, help="test images, at most")
    size.add_argument("--image-size", type=int, help="model input size of every row")
    size.add_argument("--n-epochs", type=int, help="training epochs of every row")
    size.add_argument("--ratios", type=float, nargs="+", help="contamination shares (presets)")
    size.add_argument("--sensitivity-holdout", type=int, help="held-out images of the score")
    size.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    io = p.add_argument_group("files and output")
    io.add_argument("--root", help="folder of the data set's files")
    io.add_argument("--ood-root", help="folder of the out-of-distribution data set")
    io.add_argument("--read-size", type=int, help="resize when reading (mvtec:NAME, folder)")
    io.add_argument("--out", default="benchmark-results", help="output folder")
    io.add_argument("--overwrite", action="store_true", help="replace existing reports")
    io.add_argument("--plots", action="store_true", help="also write PNG plots")
    io.add_argument("--threads", type=int, help="torch threads")
    io.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    io.add_argument("-v", "--verbose", action="store_true", help="log every split")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m ssad.benchmarks") -> int:
    """Run the benchmark command line; returns the exit status.

    Examples
    --------
    >>> from ssad.benchmarks.__main__ import main
    >>> main(["--dataset", "digits", "--classes", "0", "1", "--out", "results"])  # doctest: +SKIP
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.list:
        lists = {"estimators (--estimator)": available_estimators()}
        for title, names in {**lists, "presets (--preset)": available_presets()}.items():
            print(f"{title}:")
            for name, text in names.items():
                print(f"  {name:28s} {text}")
        return 0
    if (args.preset is None) == (args.dataset is None):
        parser.error("give either --preset NAME or --dataset NAME (with --estimator)")
    if args.preset is None and args.ratios is not None:
        parser.error("--ratios goes with --preset; give a single run's share with --ratio")
    given = [k for k in ("protocol", "ratio", "ood_dataset") if vars(args)[k] is not None]
    if args.preset is not None and given:  # a preset fixes them: refused, not ignored
        parser.error(f"--{given[0].replace('_', '-')}: a preset fixes it (shares: --ratios)")
    if args.params is not None and not isinstance(args.params, dict):
        parser.error("--params must be a JSON object")
    fmt = "%(asctime)s %(name)s %(levelname)s: %(message)s"
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format=fmt)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.plots:
        import matplotlib

        matplotlib.use("Agg")
    keys = ("classes", "seed", "root", "ood_root", "read_size", "out", "overwrite", "params")
    common = {k: getattr(args, k) for k in (*keys, *SETTINGS)}
    common.update(verbose=0 if args.quiet else 1, command=argv)
    runs: Iterable[tuple[Any, Any, Any]]
    try:
        if args.preset is not None:
            runs = run_preset(args.preset, ratios=args.ratios, estimator=args.estimator, **common)
        else:
            ratio = 0.05 if args.ratio is None else args.ratio
            what = {"protocol": args.protocol or "one-class", "ood_dataset": args.ood_dataset}
            what.update(estimator=args.estimator or "knn-pixels", ratio=ratio)
            runs = [run_benchmark(args.dataset, **what, **common)]
        for result, estimator, data in runs:
            report = {"plots": args.plots, "estimator": estimator, "data": data}
            paths = write_report(result, args.out, overwrite=args.overwrite, **report)
            if not args.quiet:
                print(result.to_markdown())
                print("Wrote " + ", ".join(str(p) for p in paths))
    except (ValueError, OSError, ImportError) as exc:  # bad arguments, files, weights
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
