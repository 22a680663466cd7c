"""The ``ssad`` command: fit a detector on a folder of images, score another, benchmark.

Examples::

    ssad list
    ssad fit efficientnet-knn good_images/ -o model.ssad
    ssad fit efficientnet-knn good_images/ -o model.ssad --val-dir more_good/ --fpr 0.01
    ssad score model.ssad to_check/ --csv scores.csv
    ssad benchmark --dataset digits --classes 0 --out results

Model files are written with :func:`ssad.save` and read with :func:`ssad.load`,
a format that cannot run code.  Exit status: 0 on success, 2 for a usage error
(unknown option or estimator name, malformed ``--params``), 1 when the work
fails (missing or empty folder, missing or invalid model file, unreadable
image); the error is one line on standard error.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import pickle
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
from sklearn.pipeline import Pipeline

__all__ = ["build_parser", "main"]

PROG = "ssad"

logger = logging.getLogger(__name__)

#: Errors of the work itself (files, images, weights, devices): exit status 1.
_FAILURES = (OSError, ValueError, TypeError, ImportError, RuntimeError, ArithmeticError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ssad`` command.

    ``ssad benchmark`` is listed here but parsed by the benchmark runner's
    own parser (:func:`ssad.benchmarks.__main__.build_parser`).

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one sub-command per action.

    Examples
    --------
    >>> from ssad.cli import build_parser
    >>> args = build_parser().parse_args(["fit", "knn-pixels", "train/", "-o", "m.ssad"])
    >>> args.command, args.name, args.output
    ('fit', 'knn-pixels', 'm.ssad')
    """
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Image anomaly detection: fit a detector on a folder of normal images, "
        "score the images of another folder, or run the benchmarks.",
        epilog="Run 'ssad COMMAND --help' for the options of a command.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    # -v after the command too; SUPPRESS keeps a -v given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="list the estimators 'ssad fit' knows")

    fit = sub.add_parser(
        "fit",
        parents=[common],
        help="fit an estimator on a folder of normal images and save it",
        description="Fit a registered estimator (see 'ssad list') on the images found "
        "anywhere below TRAIN_DIR, and save it with ssad.save (a file that cannot run code).",
    )
    fit.add_argument("name", metavar="NAME", help="a registered estimator, e.g. efficientnet-knn")
    fit.add_argument("train_dir", metavar="TRAIN_DIR", help="folder of normal training images")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    fit.add_argument(
        "--params",
        type=json.loads,
        metavar="JSON",
        help="JSON object for set_params, e.g. '{\"knn__n_neighbors\": 5}'",
    )
    fit.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    fit.add_argument(
        "--val-dir",
        metavar="VAL_DIR",
        help="folder of further normal images (not fitted on) that set the threshold and "
        "the p-values; needs --fpr",
    )
    fit.add_argument(
        "--fpr",
        type=float,
        help="target false-positive rate on normal images, e.g. 0.01 (with --val-dir)",
    )
    fit.set_defaults(usage_error=fit.error)  # errors found after parsing show this usage

    score = sub.add_parser(
        "score",
        parents=[common],
        help="score the images of a folder with a saved model, as CSV",
        description="Score the images found anywhere below DIR with a model file written by "
        "'ssad fit' (or ssad.save), and write one CSV row per image: path, score (higher = "
        "more normal), p_value (conformal, higher = more normal) and label (normal or anomaly).",
    )
    score.add_argument("model", metavar="MODEL", help="model file written by 'ssad fit'")
    score.add_argument("dir", metavar="DIR", help="folder of images to score")
    score.add_argument("--csv", metavar="FILE", help="CSV file to write (default: standard output)")
    score.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also read a pickle model file; pickles can run any code: only files you trust",
    )

    sub.add_parser(
        "benchmark",
        help="evaluate estimators under the papers' protocols (see 'ssad benchmark --help')",
        add_help=False,
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ssad`` command; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments after the program name; default: ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when the work fails (the error is one line on
        standard error).  Usage errors exit with status 2 through
        :class:`SystemExit`, as :mod:`argparse` does.

    Examples
    --------
    >>> from ssad.cli import main
    >>> main(["fit", "knn-pixels", "train/", "-o", "model.ssad"])  # doctest: +SKIP
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    words = [a for a in argv if not a.startswith("-")]
    if words[:1] == ["benchmark"]:  # the runner parses its own options
        if argv[0] != "benchmark":
            parser.error(
                f"put 'benchmark' first: {PROG} benchmark [OPTIONS] (the runner has its own "
                f"options, see {PROG} benchmark --help)"
            )
        from ssad.benchmarks.__main__ import main as benchmark_main

        return benchmark_main(argv[1:], prog=f"{PROG} benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(name)s %(levelname)s: %(message)s",
    )
    try:
        if args.command == "list":
            return _list(sys.stdout)
        if args.command == "fit":
            return _fit(args)
        return _score(args)
    except _FAILURES as exc:
        if args.verbose:
            logger.exception("%s failed:", args.command)
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1


def _list(out: TextIO) -> int:
    from ssad.benchmarks import available_estimators

    for name, text in available_estimators().items():
        print(f"{name:28s} {text}", file=out)
    return 0


def _fit(args: argparse.Namespace) -> int:
    import ssad
    from ssad._images import check_images
    from ssad.benchmarks import available_estimators, make_estimator

    if args.name not in available_estimators():
        args.usage_error(f"unknown estimator {args.name!r}; 'ssad list' shows the names")
    if args.params is not None and not isinstance(args.params, dict):
        args.usage_error("--params must be a JSON object, e.g. '{\"knn__n_neighbors\": 5}'")
    if (args.val_dir is None) != (args.fpr is None):
        args.usage_error("--val-dir and --fpr go together")
    if args.fpr is not None and not 0 < args.fpr < 1:
        args.usage_error(f"--fpr must be in (0, 1); got {args.fpr}")
    estimator = make_estimator(args.name, args.params, random_state=args.seed)
    images = check_images(args.train_dir, name="TRAIN_DIR")
    estimator.fit(images)
    if args.val_dir is not None:
        ssad.set_threshold(estimator, check_images(args.val_dir, name="VAL_DIR"), fpr=args.fpr)
    ssad.save(estimator, args.output)
    print(f"Fitted {args.name} on {len(images)} images from {args.train_dir}; wrote {args.output}")
    return 0


def _load_model(path: str, trust_pickle: bool) -> Any:
    import ssad

    try:
        return ssad.load(path)
    except ValueError as exc:
        if not trust_pickle:
            raise
        not_ssad = exc
    with open(path, "rb") as f:  # the user vouched for this file with --trust-pickle
        try:
            return pickle.load(f)
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{not_ssad} Nor is it a pickle: {exc}") from exc


def _score(args: argparse.Namespace) -> int:
    from ssad._images import check_images

    model = _load_model(args.model, args.trust_pickle)
    final = model[-1] if isinstance(model, Pipeline) else model
    if not (hasattr(model, "score_samples") and hasattr(final, "offset_")):
        raise TypeError(
            f"The model file '{args.model}' holds a {type(model).__name__}, not a fitted "
            "outlier detector (score_samples and offset_); write one with 'ssad fit'."
        )
    images = check_images(args.dir, name="DIR")
    scores = np.asarray(model.score_samples(images), dtype=np.float64)
    # decision_function = score_samples - offset_: the contract of every detector
    labels = np.where(scores - final.offset_ >= 0, "normal", "anomaly")
    if hasattr(final, "calibration_scores_"):
        from ssad.thresholds import conformal_p_values

        p_values = [f"{p:.6g}" for p in conformal_p_values(scores, final.calibration_scores_)]
    else:
        logger.warning("%s has no calibration scores: p_value is left empty.", type(final).__name__)
        p_values = [""] * len(scores)
    out = open(args.csv, "w", newline="", encoding="utf-8") if args.csv else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(["path", "score", "p_value", "label"])
        for path, score, p_value, label in zip(images.data, scores, p_values, labels):
            writer.writerow([path, repr(float(score)), p_value, label])
    finally:
        if out is not sys.stdout:
            out.close()
    if args.csv:
        n_anomalies = int(np.sum(labels == "anomaly"))
        print(f"Scored {len(scores)} images ({n_anomalies} anomalies); wrote {args.csv}")
    return 0
