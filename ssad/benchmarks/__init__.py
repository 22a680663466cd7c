"""Benchmarks: the papers' protocols, one evaluation, presets and one command-line runner.

Not imported by ``import ssad``; use ``import ssad.benchmarks``.

Protocols (:func:`one_class_splits`, :func:`leave_one_out_splits`,
:func:`contaminated_splits`, :func:`dataset_vs_dataset`) yield :class:`Split`
objects: indices over the training and test sets, and which test images are
anomalies.  :func:`evaluate` fits a clone of an estimator, its ablations and
the baselines (:func:`default_baselines`; :class:`FromFitted` rows are scored
from the estimator's own fit) on each split and reports AUROC (anomalies
positive: ``roc_auc_score(is_anomaly, -score_samples)``), average precision,
the sensitivity score (:mod:`ssad.model_selection`), pixel AUROC and PRO where
the data have masks (:mod:`ssad.metrics`), times, images/s and peak memory.
Every report has a ``knn-frozen`` row: kNN on the untrained backbone's
features, which says whether a method's training helps.  A paper's table is
a :class:`Preset` (:func:`register_preset`; estimators by name:
:func:`register_estimator`): ``python -m ssad.benchmarks --preset NAME``
(:func:`run_preset`, :func:`run_benchmark`) runs it and writes JSON (schema:
``schema.json``), Markdown and PNG plots (:func:`write_report`); ``--list``
shows estimators and presets.
"""

from ssad.benchmarks import _speed  # noqa: F401  (registers the speed preset's estimators)
from ssad.benchmarks._evaluate import (
    EvaluationResult,
    FromFitted,
    ModelResult,
    SplitResult,
    WithFitParams,
    default_baselines,
    evaluate,
    json_safe,
)
from ssad.benchmarks._presets import Preset, Variant, available_presets, get_preset, register_preset
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
from ssad.benchmarks._runner import report_stem, run_benchmark, run_preset, write_report
from ssad.benchmarks._schema import load_schema, validate_report

# moved to ssad.model_selection; importable from here as before
from ssad.model_selection import (  # noqa: F401
    SensitivitySelection,
    select_by_sensitivity,
    sensitivity_score,
)

__all__ = [
    "EvaluationResult",
    "FromFitted",
    "ModelResult",
    "Preset",
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
    "validate_report",
    "write_report",
]
