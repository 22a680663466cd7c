"""Benchmarks: the papers' evaluation protocols, metrics and a command-line runner.

Not imported by ``import ssad``; use ``import ssad.benchmarks``.

Protocols yield :class:`Split` objects (indices over the training and test
sets, and which test images are anomalies); :func:`evaluate` fits a clone of
an estimator on each split and reports AUROC (anomalies positive:
``roc_auc_score(is_anomaly, -score_samples)``), average precision, times,
images/s and peak memory, with the baselines run on the same splits.
``python -m ssad.benchmarks`` does it all from the command line and writes
JSON (schema: ``schema.json``, :func:`load_schema`) and Markdown.

=====================================  ==========================================
:func:`one_class_splits`               fit on one class, the others are anomalies
:func:`leave_one_out_splits`           fit on all classes but one, the anomaly
:func:`contaminated_splits`            one-class with unlabeled anomalies in training
:func:`dataset_vs_dataset`             another data set's test images are anomalies
:func:`evaluate`                       estimator + baselines over the splits
:func:`sensitivity_score`              held-out training vs test images (no anomalies)
:func:`select_by_sensitivity`          pick a hyperparameter by the sensitivity score
:func:`register_estimator`             add a name for ``--estimator``
:func:`make_estimator`                 build a registered estimator
:func:`run_benchmark`                  what the command line runs
:func:`write_report`                   JSON + Markdown (+ PNG) files of a result
=====================================  ==========================================
"""

from ssad.benchmarks._evaluate import (
    EvaluationResult,
    ModelResult,
    SensitivitySelection,
    SplitResult,
    evaluate,
    json_safe,
    select_by_sensitivity,
    sensitivity_score,
)
from ssad.benchmarks._protocols import (
    Split,
    contaminated_splits,
    dataset_vs_dataset,
    leave_one_out_splits,
    one_class_splits,
)
from ssad.benchmarks._registry import (
    PixelFeatures,
    available_estimators,
    make_estimator,
    register_estimator,
)
from ssad.benchmarks._runner import load_benchmark_data, run_benchmark, write_report
from ssad.benchmarks._schema import load_schema, validate_report

__all__ = [
    "EvaluationResult",
    "ModelResult",
    "PixelFeatures",
    "SensitivitySelection",
    "Split",
    "SplitResult",
    "available_estimators",
    "contaminated_splits",
    "dataset_vs_dataset",
    "evaluate",
    "json_safe",
    "leave_one_out_splits",
    "load_benchmark_data",
    "load_schema",
    "make_estimator",
    "one_class_splits",
    "register_estimator",
    "run_benchmark",
    "select_by_sensitivity",
    "sensitivity_score",
    "validate_report",
    "write_report",
]
