"""Run an estimator, its ablations and the baselines over the splits of a protocol."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from ssad.benchmarks._env import environment
from ssad.benchmarks._protocols import Split
from ssad.benchmarks._registry import make_estimator
from ssad.features import PixelFeatures, TimmFeatures
from ssad.scoring import KNNScorer

__all__ = [
    "SCHEMA_VERSION",
    "EvaluationResult",
    "FromFitted",
    "ModelResult",
    "SensitivitySelection",
    "SplitResult",
    "WithFitParams",
    "default_baselines",
    "evaluate",
    "json_safe",
    "select_by_sensitivity",
    "sensitivity_score",
]

logger = logging.getLogger(__name__)

#: Version of the JSON layout written by :meth:`EvaluationResult.to_dict` (see schema.json).
SCHEMA_VERSION = "2.0"

Role = Literal["estimator", "ablation", "baseline"]
_MB = 2.0**20


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy of ``obj`` (estimator parameters, metadata).

    Estimators become ``{"class": "module.Class", "params": {...}}`` with
    their ``get_params(deep=False)``, recursively; tuples become lists; numpy
    scalars and arrays become numbers and lists; paths, devices and other
    objects become strings; non-finite floats become ``"nan"``, ``"inf"`` or
    ``"-inf"``.

    Parameters
    ----------
    obj : object
        What to convert.

    Returns
    -------
    object
        ``None``, bool, int, float, str, list or dict.

    Examples
    --------
    >>> from ssad.benchmarks import json_safe
    >>> from ssad.scoring import KNNScorer
    >>> json_safe(KNNScorer(n_neighbors=3))["params"]["n_neighbors"]
    3
    >>> json_safe((1, float("nan")))
    [1, 'nan']
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, BaseEstimator):
        cls = type(obj)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "params": json_safe(obj.get_params(deep=False)),
        }
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [json_safe(v) for v in items]
    if isinstance(obj, (PurePath, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, type) or callable(obj):
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        module = getattr(obj, "__module__", None)
        if name is not None:
            return f"{module}.{name}" if module else str(name)
    return str(obj)


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _estimator_of(row: Any) -> Any:
    return row.estimator if isinstance(row, WithFitParams) else row


def _params(estimator: Any) -> dict[str, Any]:
    est = _estimator_of(estimator)
    params = json_safe(est.get_params(deep=False)) if hasattr(est, "get_params") else {}
    if isinstance(estimator, WithFitParams) and isinstance(params, dict):
        params["fit_params"] = {k: type(v).__name__ for k, v in estimator.fit_params.items()}
    return params if isinstance(params, dict) else {}


# -- peak memory ----------------------------------------------------------------------------


def _status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (Linux), in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        return None
    return None


class _PeakMemory:
    """Peak RSS (and CUDA memory) of the process between ``__enter__`` and ``__exit__``.

    On Linux the kernel's peak-RSS counter (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs, so the peak is that of the block; elsewhere it is
    the peak since the process started (``ru_maxrss``).
    """

    def __enter__(self) -> _PeakMemory:
        self.before_mb = _status_mb("VmRSS")
        self.method = "ru_maxrss"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM" if _status_mb("VmHWM") is not None else "ru_maxrss"
        except OSError:
            pass
        self.cuda = bool(torch.cuda.is_available() and torch.cuda.is_initialized())
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_mb("VmHWM") if self.method == "VmHWM" else None
        if peak is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = kb / _MB if sys.platform == "darwin" else kb / 1024.0
        self.rss_mb = float(peak)
        self.cuda_mb = torch.cuda.max_memory_allocated() / _MB if self.cuda else None


# -- results --------------------------------------------------------------------------------


@dataclass
class SplitResult:
    """Quality and cost of one model on one split.

    Parameters
    ----------
    name : str
        The split's name.
    n_train, n_test, n_anomalies, n_train_anomalies : int
        Images fitted on, scored, anomalous among the scored, and not normal
        among the fitted.
    auroc, average_precision : float
        ``roc_auc_score(is_anomaly, -scores)`` and the average precision:
        anomalies are the positive class.
    fit_seconds, score_seconds : float
        Wall time of fitting and scoring (for a :class:`FromFitted` row: of
        its own work on the estimator's embeddings).
    peak_rss_mb : float
        Peak resident memory of the process during fit + score, in MiB.
    peak_cuda_mb : float or None
        ``torch.cuda.max_memory_allocated`` during fit + score, in MiB.
    rss_before_mb : float or None
        Resident memory when the split started, in MiB.
    is_anomaly, scores : ndarray of shape (n_test,)
        Labels and ``score_samples`` (higher = more normal); kept for plots,
        not written to JSON.
    sensitivity : float or None, default=None
        The sensitivity score (:func:`sensitivity_score`) when requested.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import SplitResult
    >>> r = SplitResult("class 0", 10, 4, 2, 0, 1.0, 1.0, 0.5, 0.1, 100.0, None, 90.0,
    ...                 np.array([False, False, True, True]), np.array([2.0, 1.0, 0.0, -1.0]))
    >>> r.to_dict()["fit_images_per_s"]
    20.0
    """

    name: str
    n_train: int
    n_test: int
    n_anomalies: int
    n_train_anomalies: int
    auroc: float
    average_precision: float
    fit_seconds: float
    score_seconds: float
    peak_rss_mb: float
    peak_cuda_mb: float | None
    rss_before_mb: float | None
    is_anomaly: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    sensitivity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-safe dict (``schema.json``, ``$defs/split``), without scores."""
        out = {k: getattr(self, k) for k in _SPLIT_KEYS}
        out["fit_images_per_s"] = self.n_train / max(self.fit_seconds, 1e-9)
        out["score_images_per_s"] = self.n_test / max(self.score_seconds, 1e-9)
        return json_safe(out)


_SPLIT_KEYS = (
    "name n_train n_test n_anomalies n_train_anomalies auroc average_precision fit_seconds "
    "score_seconds peak_rss_mb peak_cuda_mb rss_before_mb sensitivity"
).split()


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


@dataclass
class ModelResult:
    """Results of one model (the estimator, an ablation or a baseline) over every split.

    Parameters
    ----------
    name : str
        Name in tables, e.g. ``"knn-frozen"``.
    role : {"estimator", "ablation", "baseline"}
        What the row is.
    estimator : str
        Class of the model, ``"module.Class"``.
    params : dict
        JSON-safe ``get_params(deep=False)``, or a description.
    memory_measure : {"VmHWM", "ru_maxrss"}
        How ``peak_rss_mb`` was measured.
    splits : list of SplitResult
        One per split, in protocol order.
    from_fitted : bool, default=False
        Scored from the estimator's fit (a :class:`FromFitted` row).

    Examples
    --------
    >>> from ssad.benchmarks import ModelResult
    >>> ModelResult("m", "estimator", "x.Y", {}, "VmHWM", []).mean_auroc
    nan
    """

    name: str
    role: Role
    estimator: str
    params: dict[str, Any]
    memory_measure: str
    splits: list[SplitResult] = field(default_factory=list)
    from_fitted: bool = False

    @property
    def mean_auroc(self) -> float:
        """Mean AUROC over the splits (NaN without splits)."""
        return float(np.mean([s.auroc for s in self.splits])) if self.splits else math.nan

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-safe dict (``schema.json``, ``$defs/model``)."""
        s = self.splits
        fit_s, score_s = sum(x.fit_seconds for x in s), sum(x.score_seconds for x in s)
        added = [x.peak_rss_mb - x.rss_before_mb for x in s if x.rss_before_mb is not None]
        cuda = [x.peak_cuda_mb for x in s if x.peak_cuda_mb is not None]
        out = {
            "name": self.name,
            "role": self.role,
            "estimator": self.estimator,
            "params": self.params,
            "from_fitted": self.from_fitted,
            "mean_auroc": self.mean_auroc,
            "mean_average_precision": _mean([x.average_precision for x in s]),
            "mean_sensitivity": _mean([x.sensitivity for x in s]),
            "fit_seconds": fit_s,
            "score_seconds": score_s,
            "fit_images_per_s": sum(x.n_train for x in s) / max(fit_s, 1e-9),
            "score_images_per_s": sum(x.n_test for x in s) / max(score_s, 1e-9),
            "peak_rss_mb": max((x.peak_rss_mb for x in s), default=0.0),
            "peak_rss_increase_mb": max(0.0, max(added)) if added else None,
            "peak_cuda_mb": max(cuda) if cuda else None,
            "memory_measure": self.memory_measure,
            "splits": [x.to_dict() for x in s],
        }
        return json_safe(out)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns: every model's results on the same splits.

    Parameters
    ----------
    estimator : ModelResult
        The estimator evaluated.
    baselines : list of ModelResult
        Its ablations, then the baselines.
    skipped_baselines : dict of str to str
        Baselines not run, with the reason.
    random_state : int or None
        Seed given to :func:`evaluate`.
    metadata : dict
        JSON-safe context written at the top level of :meth:`to_dict`.
    environment : dict
        Package versions and machine.
    created : str
        UTC time of the evaluation, ISO 8601.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import evaluate, one_class_splits
    >>> from ssad.datasets import make_shape_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, y = make_shape_images(80, n_classes=2, image_size=16, random_state=0)
    >>> result = evaluate(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                   one_class_splits(y[:60], y[60:]), X[:60], X[60:], baselines=None)
    >>> [s.name for s in result.splits], 0.0 <= result.mean_auroc <= 1.0
    (['class 0', 'class 1'], True)
    """

    estimator: ModelResult
    baselines: list[ModelResult] = field(default_factory=list)
    skipped_baselines: dict[str, str] = field(default_factory=dict)
    random_state: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def models(self) -> list[ModelResult]:
        """The estimator, its ablations, then the baselines."""
        return [self.estimator, *self.baselines]

    @property
    def splits(self) -> list[SplitResult]:
        """The estimator's per-split results."""
        return self.estimator.splits

    @property
    def mean_auroc(self) -> float:
        """The estimator's mean AUROC."""
        return self.estimator.mean_auroc

    def sensitivity_correlation(self) -> float | None:
        """Spearman correlation of mean sensitivity and mean AUROC over the rows that have both."""
        rows = [m.to_dict() for m in self.models]
        pairs = [(r["mean_sensitivity"], r["mean_auroc"]) for r in rows]
        pairs = [p for p in pairs if p[0] is not None]
        if len(pairs) < 3:
            return None
        rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
        return None if not np.isfinite(rho) else float(rho)

    def to_dict(self) -> dict[str, Any]:
        """Everything, as a JSON-safe dict that validates against ``schema.json``."""
        meta = json_safe(self.metadata)
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "seed": self.random_state,
            "dataset": meta.pop("dataset", None),
            "protocol": meta.pop("protocol", None),
            **meta,
            "estimator": self.estimator.to_dict(),
            "baselines": [b.to_dict() for b in self.baselines],
            "skipped_baselines": dict(self.skipped_baselines),
            "sensitivity_auroc_spearman": self.sensitivity_correlation(),
            "environment": json_safe(self.environment),
        }
        return out

    def to_markdown(self) -> str:
        """Markdown tables: AUROC per split, then quality and cost per model (in %)."""
        models = self.models
        labels = [m.name + (" †" if m.from_fitted else "") for m in models]
        lines = ["| split | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(models)]
        for i, split in enumerate(self.estimator.splits):
            row = [f"{100 * m.splits[i].auroc:.1f}" for m in models]
            lines.append(f"| {split.name} | " + " | ".join(row) + " |")
        lines.append(
            "| **mean AUROC** | "
            + " | ".join(f"**{100 * m.mean_auroc:.1f}**" for m in models)
            + " |"
        )
        head = "| model | role | mean AUROC | mean AP | sensitivity | fit s | score s | "
        lines += ["", head + "fit img/s | peak RSS MiB |", "|---|---|" + "---:|" * 7]
        for label, m in zip(labels, models):
            d = m.to_dict()
            sens = "-" if d["mean_sensitivity"] is None else f"{100 * d['mean_sensitivity']:.1f}"
            lines.append(
                f"| {label} | {m.role} | {100 * d['mean_auroc']:.1f} | "
                f"{100 * (d['mean_average_precision'] or 0):.1f} | {sens} | "
                f"{d['fit_seconds']:.1f} | {d['score_seconds']:.1f} | "
                f"{d['fit_images_per_s']:.0f} | {d['peak_rss_mb']:.0f} |"
            )
        lines.append("")
        if any(m.from_fitted for m in models):
            lines.append(
                "† scored from the estimator's fit and embeddings (no training of its own)."
            )
        rho = self.sensitivity_correlation()
        if rho is not None:
            lines.append(f"Spearman correlation of sensitivity and AUROC over the rows: {rho:.2f}.")
            rows = [d for d in (m.to_dict() for m in models) if d["mean_sensitivity"] is not None]
            chosen = max(rows, key=lambda d: d["mean_sensitivity"])
            best = max(rows, key=lambda d: d["mean_auroc"])
            lines.append(
                f"Chosen by the highest sensitivity (no anomaly labels): {chosen['name']} "
                f"(AUROC {100 * chosen['mean_auroc']:.1f}); best AUROC among these rows: "
                f"{best['name']} ({100 * best['mean_auroc']:.1f})."
            )
        for name, reason in self.skipped_baselines.items():
            lines.append(f"- baseline {name} not run: {reason}")
        return "\n".join(lines).rstrip() + "\n"


# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FromFitted:
    """A row scored from the estimator fitted on the split, without a fit of its own.

    ``fn(fitted, Z_fit, Z_score) -> scores`` receives the fitted estimator and
    its embeddings (``transform``, or the fitted feature steps of a pipeline)
    of the training and test images, computed once per split for all such
    rows; scores are higher = more normal.  Use it for what one fit gives:
    one feature space of Transformaly, kNN on the trained embeddings, a
    scorer before and after filtering.

    A row given a ``scorer`` instead (a 2-D scorer, cloned and fitted on
    ``Z_fit``) also gets a sensitivity score when :func:`evaluate` computes
    them, e.g. the paper's cosine kernel at another temperature.

    Parameters
    ----------
    fn : callable or None
        ``fn(fitted, Z_fit, Z_score) -> ndarray (n_score,)``.
    description : str, default=""
        Written as the row's parameters.
    scorer : estimator, default=None
        Score with ``clone(scorer).fit(Z_fit).score_samples(Z_score)``
        (``fn`` must then be None).

    Examples
    --------
    >>> from ssad.benchmarks import FromFitted
    >>> from ssad.scoring import KNNScorer
    >>> row = FromFitted(lambda est, zf, zs: KNNScorer().fit(zf).score_samples(zs), "kNN")
    >>> row.description
    'kNN'
    >>> FromFitted(None, "kNN, k=5", scorer=KNNScorer(n_neighbors=5)).scorer.n_neighbors
    5
    """

    fn: Callable[[Any, np.ndarray, np.ndarray], np.ndarray] | None
    description: str = ""
    scorer: Any = None

    def __post_init__(self) -> None:
        if (self.fn is None) == (self.scorer is None):
            raise ValueError("FromFitted needs exactly one of fn and scorer.")

    def __call__(self, fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        """The row's scores of the test images (higher = more normal)."""
        if self.fn is not None:
            return np.asarray(self.fn(fitted, Z_fit, Z_score), dtype=np.float64)
        return np.asarray(clone(self.scorer).fit(Z_fit).score_samples(Z_score), np.float64)


@dataclass(frozen=True)
class WithFitParams:
    """A row whose estimator is fitted with extra fit parameters: ``fit(X, **fit_params)``.

    Parameters
    ----------
    estimator : estimator
        The unfitted estimator.
    fit_params : mapping
        E.g. ``{"X_aux": images}`` for the auxiliary negatives of
        :class:`~ssad.SelfDistillNegDetector`.

    Examples
    --------
    >>> from ssad.benchmarks import WithFitParams
    >>> from ssad.scoring import KNNScorer
    >>> sorted(WithFitParams(KNNScorer(), {"X_aux": None}).fit_params)
    ['X_aux']
    """

    estimator: Any
    fit_params: Mapping[str, Any]


def _embedder(fitted: Any) -> Callable[[Any], np.ndarray] | None:
    """The embedding function of a fitted estimator (pipeline head or ``transform``)."""
    if isinstance(fitted, Pipeline):
        return fitted[:-1].transform if len(fitted.steps) > 1 else None
    return getattr(fitted, "transform", None)


def _scorer_of(fitted: Any) -> Any:
    """The scorer on the embeddings of a fitted estimator (pipeline's last step or ``scorer_``)."""
    if isinstance(fitted, Pipeline):
        return fitted[-1] if len(fitted.steps) > 1 else None
    return getattr(fitted, "scorer_", None)


def _frozen_features(estimator: Any) -> TimmFeatures | None:
    if hasattr(estimator, "frozen_features"):
        return estimator.frozen_features()
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[0][1], TimmFeatures):
        return clone(estimator.steps[0][1])
    return None


def _knn_on_embeddings(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
    return KNNScorer(n_neighbors=2).fit(Z_fit).score_samples(Z_score)


def default_baselines(
    estimator: Any, random_state: int | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The baselines every benchmark runs beside ``estimator``, and those it skips (why).

    - ``knn-frozen``: kNN (k=2, faiss) on the features of the estimator's
      backbone with its starting weights, image size and pooling, untrained
      (``estimator.frozen_features()``, or the first step of a pipeline that
      starts with :class:`~ssad.TimmFeatures`): does the training help?
    - ``knn-embeddings``: kNN (k=2) on the estimator's own (trained)
      embeddings, from its fit (:class:`FromFitted`);
    - ``knn-pixels`` and ``iforest-pixels``: kNN (k=2) and IsolationForest on
      raw pixels.

    Parameters
    ----------
    estimator : estimator
        The estimator evaluated (unfitted).
    random_state : int or None, default=None
        Seed of IsolationForest.

    Returns
    -------
    baselines : dict of str to estimator or FromFitted
    skipped : dict of str to str

    Examples
    --------
    >>> from ssad.benchmarks import default_baselines, make_estimator
    >>> base, skipped = default_baselines(make_estimator("knn-pixels"))
    >>> sorted(base), sorted(skipped)
    (['iforest-pixels'], ['knn-embeddings', 'knn-frozen', 'knn-pixels'])
    """
    base: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    frozen = _frozen_features(estimator)
    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else None
    is_knn2 = (
        steps is not None
        and isinstance(steps[-1], KNNScorer)
        and (steps[-1].n_neighbors, steps[-1].metric, steps[-1].aggregate) == (2, "l2", "sum")
    )
    if frozen is None:
        skipped["knn-frozen"] = "the estimator has no network features"
    elif is_knn2 and len(steps or ()) == 2:
        skipped["knn-frozen"] = "the estimator is kNN (k=2) on frozen features"
    else:
        base["knn-frozen"] = Pipeline([("features", frozen), ("knn", KNNScorer(n_neighbors=2))])
    if steps is not None and all(isinstance(s, PixelFeatures) for s in steps[:-1]):
        skipped["knn-embeddings"] = "the estimator's embeddings are the raw pixels"
    elif steps is not None and len(steps) == 2 and isinstance(steps[0], TimmFeatures):
        skipped["knn-embeddings"] = "the estimator's features are untrained (see knn-frozen)"
    elif is_knn2:
        skipped["knn-embeddings"] = "the estimator is kNN (k=2) on its own embeddings"
    elif steps is None and not hasattr(estimator, "transform"):
        skipped["knn-embeddings"] = "the estimator exposes no embeddings"
    else:
        base["knn-embeddings"] = FromFitted(_knn_on_embeddings, "kNN (k=2) on its embeddings")
    for name in ("knn-pixels", "iforest-pixels"):
        candidate = make_estimator(name, random_state=random_state)
        if json_safe(candidate) == json_safe(estimator):
            skipped[name] = "it is the estimator evaluated"
        else:
            base[name] = candidate
    return base, skipped


# -- evaluate -------------------------------------------------------------------------------


def _take(X: Any, idx: np.ndarray) -> Any:
    """Images of ``X`` at ``idx`` (arrays, tensors, ImageSets and lists)."""
    if hasattr(X, "subset"):
        return X.subset(idx)
    if isinstance(X, (list, tuple)):
        return [X[i] for i in idx]
    return X[idx]


def _metrics(is_anomaly: np.ndarray, scores: Any) -> tuple[float, float]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != is_anomaly.shape[0]:
        raise RuntimeError(f"Got {scores.shape[0]} scores for {is_anomaly.shape[0]} images.")
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(f"{int(np.sum(~np.isfinite(scores)))} scores are not finite.")
    return (
        float(roc_auc_score(is_anomaly, -scores)),
        float(average_precision_score(is_anomaly, -scores)),
    )


def _held_out_auroc(
    Z_fit: np.ndarray, Z_in: np.ndarray, scorer: Any, n_holdout: int, seed: int
) -> float:
    """The sensitivity score from training and in-distribution test embeddings."""
    n = Z_fit.shape[0]
    if not 1 <= n_holdout < n:
        raise ValueError(
            f"The 'n_holdout' parameter of sensitivity_score must be an int in the range "
            f"[1, {n - 1}] (fewer than the {n} training images). Got {n_holdout!r} instead."
        )
    perm = np.random.default_rng(seed).permutation(n)
    held, kept = perm[:n_holdout], perm[n_holdout:]
    reference = clone(scorer).fit(Z_fit[kept])
    s_held = np.asarray(reference.score_samples(Z_fit[held]), dtype=np.float64)
    s_in = np.asarray(reference.score_samples(Z_in), dtype=np.float64)
    labels = np.r_[np.zeros(len(s_held)), np.ones(len(s_in))]
    return float(roc_auc_score(labels, -np.r_[s_held, s_in]))


@dataclass
class _Row:
    name: str
    role: Role
    model: Any  # an estimator template, or FromFitted


@dataclass
class _SplitRun:
    """One split's images; runs rows on them (the estimator's row first)."""

    X_fit: Any
    X_score: Any
    is_anomaly: np.ndarray
    sensitivity_holdout: int | None
    seed: int
    fitted: Any = None
    Z: tuple[np.ndarray, np.ndarray] | None = None

    def run(self, row: _Row) -> tuple[np.ndarray, float, float, float | None]:
        """Scores, fit and score seconds, and sensitivity of a row."""
        if isinstance(row.model, FromFitted):
            if self.Z is None:  # the estimator's embeddings, once for all such rows
                self.Z = self._embeddings(self.fitted, row.name)
            start = time.perf_counter()
            scores = row.model(self.fitted, *self.Z)
            elapsed = time.perf_counter() - start
            return scores, elapsed, 0.0, self._sensitivity(self.Z, row.model.scorer)
        model, fit_params = row.model, {}
        if isinstance(model, WithFitParams):
            model, fit_params = model.estimator, dict(model.fit_params)
        start = time.perf_counter()
        est = clone(model).fit(self.X_fit, **fit_params)
        fitted_at = time.perf_counter()
        scores = np.asarray(est.score_samples(self.X_score), np.float64)
        fit_s, score_s = fitted_at - start, time.perf_counter() - fitted_at
        scorer, Z = _scorer_of(est), None
        if row.role == "estimator":
            self.fitted = est
        if self.sensitivity_holdout is not None and scorer is not None:
            Z = self._embeddings(est, row.name)
            if row.role == "estimator":
                self.Z = Z
        return scores, fit_s, score_s, None if Z is None else self._sensitivity(Z, scorer)

    def _embeddings(self, fitted: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        transform = _embedder(fitted)
        if transform is None:
            raise ValueError(f"Row {name!r}: the estimator has no embeddings.")
        return np.asarray(transform(self.X_fit)), np.asarray(transform(self.X_score))

    def _sensitivity(self, Z: tuple[np.ndarray, np.ndarray], scorer: Any) -> float | None:
        if self.sensitivity_holdout is None or scorer is None:
            return None
        Z_in = Z[1][~self.is_anomaly]
        return _held_out_auroc(Z[0], Z_in, scorer, self.sensitivity_holdout, self.seed)


def evaluate(
    estimator: Any,
    protocol_splits: Iterable[Split],
    X_train: Any,
    X_test: Any,
    *,
    ablations: Mapping[str, Any] | None = None,
    baselines: Mapping[str, Any] | Literal["auto"] | None = "auto",
    name: str | None = None,
    sensitivity_holdout: int | None = None,
    random_state: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    verbose: int = 0,
) -> EvaluationResult:
    """Fit and score an estimator, its ablations and the baselines on every split.

    For each split every row is evaluated on the same images: an estimator
    row is cloned (:func:`sklearn.base.clone`), fitted on
    ``X_train[split.train_idx]`` and scores ``X_test[split.test_idx]``; a
    :class:`FromFitted` row is scored from the estimator fitted on that
    split.  AUROC and average precision take the anomalies as the positive
    class: ``roc_auc_score(split.is_anomaly, -scores)``.

    Parameters
    ----------
    estimator : estimator
        Anything with ``fit(X)`` and ``score_samples(X)`` (higher = more
        normal) that :func:`~sklearn.base.clone` copies.
    protocol_splits : iterable of Split
        E.g. ``one_class_splits(y_train, y_test)``; read once.
    X_train, X_test : images
        Indexed by ``train_idx`` / ``test_idx`` (array, tensor, ImageSet or list).
    ablations : mapping of str to estimator or FromFitted, default=None
        The method's variants, rows with role ``"ablation"``.
    baselines : "auto", mapping of str to estimator or FromFitted, or None, default="auto"
        ``"auto"``: :func:`default_baselines`.  A mapping runs those (combine
        with ``default_baselines(estimator)[0]`` to add to them).
    name : str, default=None
        Name of the estimator in tables; default: its class name.
    sensitivity_holdout : int, default=None
        Also compute the sensitivity score of every estimator row on each
        split, with this many training images held out of the reference set
        (the in-distribution test images are the split's normal ones).
    random_state : int or None, default=None
        Seed of the default baselines and of the held-out draws.
    metadata : mapping, default=None
        Context stored in the result.
    verbose : int, default=0
        > 0: a progress bar on stderr with one step per split and row.

    Returns
    -------
    EvaluationResult
        Per-split and mean AUROC, average precision, sensitivity, times,
        images per second and peak memory of every row.

    Raises
    ------
    ValueError
        If ``protocol_splits`` is empty or ``baselines`` is invalid.
    FloatingPointError
        If a model returns non-finite scores.

    Notes
    -----
    Peak memory is the resident set size of the whole process (data
    included) during a row's fit + score of a split.  Times are wall-clock.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import evaluate, one_class_splits
    >>> from ssad.datasets import make_shape_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, y = make_shape_images(120, n_classes=3, image_size=16, random_state=0)
    >>> res = evaluate(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                one_class_splits(y[:90], y[90:]), X[:90], X[90:], random_state=0)
    >>> [m.name for m in res.models]
    ['Pipeline', 'knn-pixels', 'iforest-pixels']
    """
    splits = list(protocol_splits)
    if not splits:
        raise ValueError("protocol_splits yielded no split.")
    if not all(isinstance(s, Split) for s in splits):
        raise TypeError("protocol_splits must yield Split objects.")
    name = name if name is not None else type(estimator).__name__
    skipped: dict[str, str] = {}
    if isinstance(baselines, str):
        if baselines != "auto":
            raise ValueError(
                "The 'baselines' parameter of evaluate must be 'auto', None or a mapping of "
                f"names to estimators. Got {baselines!r} instead."
            )
        baselines, skipped = default_baselines(estimator, random_state)
    elif baselines is not None and not isinstance(baselines, Mapping):
        raise ValueError(
            "The 'baselines' parameter of evaluate must be 'auto', None or a mapping of names "
            f"to estimators. Got an object of type {type(baselines).__name__} instead."
        )
    rows = [_Row(name, "estimator", estimator)]
    rows += [_Row(str(k), "ablation", v) for k, v in (ablations or {}).items()]
    rows += [_Row(str(k), "baseline", v) for k, v in (baselines or {}).items()]
    results = [
        ModelResult(
            r.name,
            r.role,
            name,
            {"scored from": name, "how": r.model.description},
            "VmHWM",
            from_fitted=True,
        )
        if isinstance(r.model, FromFitted)
        else ModelResult(
            r.name, r.role, _class_path(_estimator_of(r.model)), _params(r.model), "VmHWM"
        )
        for r in rows
    ]
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    base_seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    with tqdm(total=len(splits) * len(rows), disable=verbose <= 0, file=sys.stderr) as bar:
        for i, split in enumerate(splits):
            ctx = _SplitRun(
                _take(X_train, split.train_idx),
                _take(X_test, split.test_idx),
                np.asarray(split.is_anomaly, dtype=bool),
                sensitivity_holdout,
                base_seed + i,
            )
            for row, result in zip(rows, results):
                bar.set_description(f"{split.name} | {row.name}")
                with _PeakMemory() as mem:
                    scores, fit_s, score_s, sensitivity = ctx.run(row)
                auroc, ap = _metrics(ctx.is_anomaly, scores)
                result.memory_measure = mem.method
                result.splits.append(
                    SplitResult(
                        split.name,
                        split.n_train,
                        split.n_test,
                        int(ctx.is_anomaly.sum()),
                        split.n_train_anomalies,
                        auroc,
                        ap,
                        fit_s,
                        score_s,
                        mem.rss_mb,
                        mem.cuda_mb,
                        mem.before_mb,
                        ctx.is_anomaly,
                        scores,
                        sensitivity,
                    )
                )
                logger.info("%s | %s: AUROC %.4f, fit %.1f s", split.name, row.name, auroc, fit_s)
                bar.set_postfix(auroc=f"{auroc:.3f}")
                bar.update(1)
    return EvaluationResult(
        estimator=results[0],
        baselines=results[1:],
        skipped_baselines=skipped,
        random_state=random_state,
        metadata=dict(metadata or {}),
        environment=environment(),
        created=created,
    )


# -- sensitivity score ----------------------------------------------------------------------


def sensitivity_score(
    estimator: Any,
    X_train: Any,
    X_test_in: Any,
    n_holdout: int,
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Sensitivity score (SSL-SDN, Rafiee et al., section 3.4): a check that needs no anomaly.

    A clone of the estimator is fitted on **all** training images.
    ``n_holdout`` of them (B in the paper), drawn at random, are then left
    out of the final scorer's reference set only: the scorer is refitted on
    the embeddings of the other training images.  The score is the AUROC of
    telling the held-out training images (label 0) from the in-distribution
    test images (label 1): ``roc_auc_score(labels, -scores)``.

    Parameters
    ----------
    estimator : estimator
        A pipeline ending in a scorer, or an ssad detector (``transform`` and
        ``scorer_``): anything whose fitted form splits into embeddings and
        a scorer on them.
    X_train : images
        The training images (normal data).
    X_test_in : images
        In-distribution test images.
    n_holdout : int
        Number of training images held out of the reference set, in
        ``[1, n_train - 1]``.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images.

    Returns
    -------
    float
        The AUROC.  A model whose representation memorises its training
        images places the held-out ones (seen in training) closer to the
        reference set than unseen test images: the score is then well above
        0.5.  The paper selects hyperparameters by maximising it.

    Raises
    ------
    ValueError
        If ``n_holdout`` is out of range, or the fitted estimator does not
        split into embeddings and a scorer.

    Notes
    -----
    The AUROC of two samples of sizes ``B`` and ``n`` from one distribution
    has a standard deviation of about ``sqrt((B + n + 1) / (12 B n))``; use a
    ``n_holdout`` of a few hundred so that differences are not noise.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import sensitivity_score
    >>> from ssad.datasets import make_anomaly_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, _ = make_anomaly_images(300, 0, image_size=16, random_state=0)
    >>> s = sensitivity_score(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                       X[:200], X[200:], n_holdout=100, random_state=0)
    >>> 0.35 < s < 0.65
    True
    """
    if isinstance(n_holdout, bool) or not isinstance(n_holdout, (int, np.integer)):
        raise ValueError(f"The 'n_holdout' parameter must be an int. Got {n_holdout!r} instead.")
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    fitted = clone(estimator).fit(X_train)
    transform, scorer = _embedder(fitted), _scorer_of(fitted)
    if transform is None or scorer is None:
        raise ValueError(
            f"sensitivity_score needs an estimator that splits into embeddings and a scorer "
            f"(a pipeline ending in a scorer, or a detector with transform and scorer_); "
            f"got {type(estimator).__name__}."
        )
    Z_fit, Z_in = np.asarray(transform(X_train)), np.asarray(transform(X_test_in))
    return _held_out_auroc(Z_fit, Z_in, scorer, int(n_holdout), seed)


@dataclass
class SensitivitySelection:
    """What :func:`select_by_sensitivity` returns.

    Parameters
    ----------
    best_value : object
        The value with the highest sensitivity score (the first on ties).
    best_sensitivity : float
        Its sensitivity score.
    table : list of dict
        ``{"value": ..., "sensitivity": ...}`` for every value, in order.

    Examples
    --------
    >>> from ssad.benchmarks import SensitivitySelection
    >>> SensitivitySelection(3, 0.71, [{"value": 3, "sensitivity": 0.71}]).best_value
    3
    """

    best_value: Any
    best_sensitivity: float
    table: list[dict[str, Any]]


def select_by_sensitivity(
    estimator: Any,
    param_name: str,
    values: Sequence[Any],
    X_train: Any,
    X_test_in: Any,
    n_holdout: int,
    random_state: int | np.random.RandomState | None = None,
) -> SensitivitySelection:
    """Choose a hyperparameter without anomaly labels: the highest sensitivity score.

    For each value, ``estimator.set_params(**{param_name: value})`` and
    :func:`sensitivity_score`, with the same held-out images for every value.
    The paper (Rafiee et al., section 3.4) keeps the hyperparameters whose
    score is highest.

    Parameters
    ----------
    estimator : estimator
        As in :func:`sensitivity_score`, with ``set_params``.
    param_name : str
        The parameter to vary (``step__param`` for pipelines).
    values : sequence
        Candidate values, at least one.
    X_train, X_test_in : images
        Training and in-distribution test images.
    n_holdout : int
        Number of held-out training images.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images (once, for all values).

    Returns
    -------
    SensitivitySelection
        The chosen value, its score and the table of all scores.

    Raises
    ------
    ValueError
        If ``values`` is empty or ``param_name`` is not a parameter.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import select_by_sensitivity
    >>> from ssad.datasets import make_anomaly_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, _ = make_anomaly_images(200, 0, image_size=16, random_state=0)
    >>> sel = select_by_sensitivity(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                             "knnscorer__n_neighbors", [1, 5], X[:150], X[150:],
    ...                             n_holdout=50, random_state=0)
    >>> sel.best_value in (1, 5), len(sel.table)
    (True, 2)
    """
    values = list(values)
    if not values:
        raise ValueError("values must hold at least one candidate value.")
    seed = (  # an int goes through as it is: the same draw as sensitivity_score(..., seed)
        int(random_state)
        if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
        else int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    )
    table = []
    for value in values:
        candidate = clone(estimator).set_params(**{param_name: value})
        score = sensitivity_score(candidate, X_train, X_test_in, n_holdout, seed)
        logger.info("%s=%r: sensitivity %.4f", param_name, value, score)
        table.append({"value": value, "sensitivity": score})
    best = max(table, key=lambda row: row["sensitivity"])
    return SensitivitySelection(best["value"], float(best["sensitivity"]), table)
