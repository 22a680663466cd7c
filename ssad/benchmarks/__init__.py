"""Benchmarks: the papers' protocols, one evaluation, presets and one command-line runner.

Not imported by ``import ssad``; use ``import ssad.benchmarks``.

Protocols yield :class:`Split` objects (indices over the training and test
sets, and which test images are anomalies); :func:`evaluate` fits a clone of
an estimator, its ablations and the baselines on each split and reports
AUROC (anomalies positive: ``roc_auc_score(is_anomaly, -score_samples)``),
average precision, the sensitivity score, times, images/s and peak memory.
Every report has a ``knn-frozen`` row: kNN on the untrained backbone's
features, which says whether a method's training helps.  A paper's table is
a :class:`Preset` (data, protocol, method, ablations, baselines):
``python -m ssad.benchmarks --preset NAME`` runs it and writes JSON (schema:
``schema.json``) and Markdown; ``--list`` shows estimators and presets.

=====================================  ==========================================
:func:`one_class_splits`               fit on one class, the others are anomalies
:func:`leave_one_out_splits`           fit on all classes but one, the anomaly
:func:`contaminated_splits`            one-class with unlabeled anomalies in training
:func:`dataset_vs_dataset`             another data set's test images are anomalies
:func:`evaluate`                       estimator + ablations + baselines over the splits
:func:`default_baselines`              knn-frozen, knn-embeddings, pixel baselines
:class:`FromFitted`                    a row scored from the estimator's own fit
:func:`sensitivity_score`              held-out training vs test images (no anomalies)
:func:`select_by_sensitivity`          pick a hyperparameter by the sensitivity score
:func:`register_estimator`             add a name for ``--estimator``
:class:`Preset`, :func:`register_preset`  a paper's benchmark as data
:func:`run_benchmark`, :func:`run_preset`  what the command line runs
:func:`write_report`                   JSON + Markdown (+ PNG) files of a result
=====================================  ==========================================
"""

from ssad.benchmarks import _speed  # noqa: F401  (registers the speed preset's estimators)
from ssad.benchmarks._evaluate import (
    EvaluationResult,
    FromFitted,
    ModelResult,
    SensitivitySelection,
    SplitResult,
    WithFitParams,
    default_baselines,
    evaluate,
    json_safe,
    select_by_sensitivity,
    sensitivity_score,
)
from ssad.benchmarks._presets import (
    Preset,
    Variant,
    available_presets,
    get_preset,
    register_preset,
)
from ssad.benchmarks._protocols import (
    Split,
    contaminated_splits,
    dataset_vs_dataset,
    leave_one_out_splits,
    one_class_splits,
)
from ssad.benchmarks._registry import (
    available_estimators,
    estimator_companions,
    make_estimator,
    register_estimator,
)
from ssad.benchmarks._runner import (
    report_stem,
    run_benchmark,
    run_preset,
    write_report,
)
from ssad.benchmarks._schema import load_schema, validate_report

__all__ = [
    "EvaluationResult",
    "FromFitted",
    "ModelResult",
    "Preset",
    "SensitivitySelection",
    "Split",
    "SplitResult",
    "Variant",
    "WithFitParams",
    "available_estimators",
    "available_presets",
    "contaminated_splits",
    "dataset_vs_dataset",
    "default_baselines",
    "estimator_companions",
    "evaluate",
    "get_preset",
    "json_safe",
    "leave_one_out_splits",
    "load_schema",
    "make_estimator",
    "one_class_splits",
    "register_estimator",
    "register_preset",
    "report_stem",
    "run_benchmark",
    "run_preset",
    "select_by_sensitivity",
    "sensitivity_score",
    "validate_report",
    "write_report",
]
