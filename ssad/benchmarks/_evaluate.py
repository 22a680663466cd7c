"""Run an estimator and the baselines over the splits of a protocol; the sensitivity score."""

from __future__ import annotations

import datetime as _dt
import json
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
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

from ssad.benchmarks._env import environment
from ssad.benchmarks._protocols import Split
from ssad.benchmarks._registry import PixelFeatures, make_estimator
from ssad.scoring import KNNScorer

__all__ = [
    "SCHEMA_VERSION",
    "EvaluationResult",
    "ModelResult",
    "SensitivitySelection",
    "SplitResult",
    "evaluate",
    "json_safe",
    "select_by_sensitivity",
    "sensitivity_score",
]

logger = logging.getLogger(__name__)

#: Version of the JSON layout written by :meth:`EvaluationResult.to_dict` (see schema.json).
SCHEMA_VERSION = "1.0"

#: The baselines ``baselines="auto"`` runs, in this order.
AUTO_BASELINES = ("knn-embeddings", "knn-pixels", "iforest-pixels")

_MB = 2.0**20


# -- JSON-safe parameters -----------------------------------------------------------------


def json_safe(obj: Any) -> Any:
    """A JSON-serialisable copy of ``obj`` (estimator parameters, metadata).

    Estimators become ``{"class": "module.Class", "params": {...}}`` with
    their ``get_params(deep=False)``, recursively; tuples become lists;
    numpy scalars and arrays become numbers and lists; paths, devices and
    other objects become strings; non-finite floats become ``"nan"``,
    ``"inf"`` or ``"-inf"``.

    Parameters
    ----------
    obj : object
        What to convert.

    Returns
    -------
    object
        ``None``, bool, int, float, str, list or dict, safe for :func:`json.dumps`
        (with ``allow_nan=False``).

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
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
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


def _signature(estimator: Any) -> str:
    """A string equal for estimators of the same class with the same parameters."""
    return json.dumps(json_safe(estimator), sort_keys=True)


def _class_path(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


def _params(estimator: Any) -> dict[str, Any]:
    if hasattr(estimator, "get_params"):
        params = json_safe(estimator.get_params(deep=False))
        return params if isinstance(params, dict) else {}
    return {}


# -- peak memory ----------------------------------------------------------------------------


def _read_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (Linux), in MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        return None
    return None


def _current_rss_mb() -> float | None:
    rss = _read_status_mb("VmRSS")
    if rss is not None:
        return rss
    try:
        import psutil
    except ImportError:
        return None
    return float(psutil.Process().memory_info().rss) / _MB


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB else


class _PeakMemory:
    """Peak CPU RSS (and CUDA memory) between ``__enter__`` and ``__exit__``.

    On Linux the kernel's peak-RSS counter (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs, so the peak is that of the block; elsewhere it is
    the process's peak since it started (``ru_maxrss``).  Both include what
    the process already held (the data set, the libraries).
    """

    method: str = "ru_maxrss"

    def __enter__(self) -> _PeakMemory:
        self.rss_mb: float | None = None
        self.cuda_mb: float | None = None
        self.rss_before_mb = _current_rss_mb()
        self._reset = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._reset = _read_status_mb("VmHWM") is not None
        except OSError:
            self._reset = False
        if self._cuda_active():
            torch.cuda.reset_peak_memory_stats()
        return self

    @staticmethod
    def _cuda_active() -> bool:
        return bool(torch.cuda.is_available() and torch.cuda.is_initialized())

    def __exit__(self, *exc: object) -> None:
        if self._reset:
            self.rss_mb = _read_status_mb("VmHWM")
            self.method = "VmHWM"
        if self.rss_mb is None:
            self.rss_mb = _ru_maxrss_mb()
            self.method = "ru_maxrss"
        if self._cuda_active():
            self.cuda_mb = torch.cuda.max_memory_allocated() / _MB


# -- results --------------------------------------------------------------------------------


def _rate(n: int, seconds: float) -> float:
    return float(n) / max(seconds, 1e-9)


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
    auroc : float
        ``roc_auc_score(is_anomaly, -scores)``: anomalies are the positive class.
    average_precision : float
        ``average_precision_score(is_anomaly, -scores)``.
    fit_seconds, score_seconds : float
        Wall time of ``fit`` on the training images and of ``score_samples``
        on the test images.
    peak_rss_mb : float
        Peak resident memory of the process during fit + score, in MiB
        (see ``memory_measure`` of :class:`ModelResult`).
    peak_cuda_mb : float or None
        ``torch.cuda.max_memory_allocated`` during fit + score, in MiB; None
        when CUDA was not used.
    rss_before_mb : float or None
        Resident memory of the process when the split started (libraries and
        data already loaded), in MiB; None where it cannot be read.
    is_anomaly : ndarray of shape (n_test,), dtype bool
        The labels scored (kept for ROC plots; not written to JSON).
    scores : ndarray of shape (n_test,), dtype float64
        ``score_samples`` of the test images, higher = more normal (kept for
        ROC plots; not written to JSON).

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import SplitResult
    >>> r = SplitResult("class 0", 10, 4, 2, 0, 1.0, 1.0, 0.5, 0.1, 100.0, None, 90.0,
    ...                 np.array([False, False, True, True]), np.array([2.0, 1.0, 0.0, -1.0]))
    >>> r.fit_images_per_s, r.score_images_per_s
    (20.0, 40.0)
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

    @property
    def fit_images_per_s(self) -> float:
        """Training images per second of ``fit``."""
        return _rate(self.n_train, self.fit_seconds)

    @property
    def score_images_per_s(self) -> float:
        """Test images per second of ``score_samples``."""
        return _rate(self.n_test, self.score_seconds)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-safe dict (without the scores).

        Returns
        -------
        dict
            Keys as in ``schema.json`` (``$defs/split``).
        """
        return {
            "name": self.name,
            "n_train": int(self.n_train),
            "n_test": int(self.n_test),
            "n_anomalies": int(self.n_anomalies),
            "n_train_anomalies": int(self.n_train_anomalies),
            "auroc": float(self.auroc),
            "average_precision": float(self.average_precision),
            "fit_seconds": float(self.fit_seconds),
            "score_seconds": float(self.score_seconds),
            "fit_images_per_s": self.fit_images_per_s,
            "score_images_per_s": self.score_images_per_s,
            "peak_rss_mb": float(self.peak_rss_mb),
            "peak_cuda_mb": None if self.peak_cuda_mb is None else float(self.peak_cuda_mb),
            "rss_before_mb": None if self.rss_before_mb is None else float(self.rss_before_mb),
        }


@dataclass
class ModelResult:
    """Results of one model (the estimator or a baseline) over every split.

    Parameters
    ----------
    name : str
        Name in tables, e.g. ``"knn-pixels"``.
    role : {"estimator", "baseline"}
        Whether this is the estimator evaluated or a baseline.
    estimator : str
        Class of the model, ``"module.Class"``.
    params : dict
        JSON-safe ``get_params(deep=False)`` (nested estimators expanded).
    memory_measure : {"VmHWM", "ru_maxrss"}
        How ``peak_rss_mb`` was measured: the Linux peak-RSS counter reset at
        the start of each split, or the process's peak since it started.
    splits : list of SplitResult
        One per split, in protocol order.

    Examples
    --------
    >>> from ssad.benchmarks import ModelResult
    >>> ModelResult("m", "estimator", "x.Y", {}, "VmHWM", []).mean_auroc
    nan
    """

    name: str
    role: Literal["estimator", "baseline"]
    estimator: str
    params: dict[str, Any]
    memory_measure: str
    splits: list[SplitResult] = field(default_factory=list)

    @property
    def mean_auroc(self) -> float:
        """Mean AUROC over the splits (NaN without splits)."""
        return float(np.mean([s.auroc for s in self.splits])) if self.splits else math.nan

    @property
    def mean_average_precision(self) -> float:
        """Mean average precision over the splits (NaN without splits)."""
        if not self.splits:
            return math.nan
        return float(np.mean([s.average_precision for s in self.splits]))

    @property
    def fit_seconds(self) -> float:
        """Total fit time over the splits."""
        return float(sum(s.fit_seconds for s in self.splits))

    @property
    def score_seconds(self) -> float:
        """Total score time over the splits."""
        return float(sum(s.score_seconds for s in self.splits))

    @property
    def fit_images_per_s(self) -> float:
        """Training images fitted per second, over all splits."""
        return _rate(sum(s.n_train for s in self.splits), self.fit_seconds)

    @property
    def score_images_per_s(self) -> float:
        """Test images scored per second, over all splits."""
        return _rate(sum(s.n_test for s in self.splits), self.score_seconds)

    @property
    def peak_rss_mb(self) -> float:
        """Largest per-split peak RSS, in MiB."""
        return float(max((s.peak_rss_mb for s in self.splits), default=0.0))

    @property
    def peak_rss_increase_mb(self) -> float | None:
        """Largest per-split ``peak_rss_mb - rss_before_mb``: what fit + score added, in MiB."""
        values = [
            s.peak_rss_mb - s.rss_before_mb for s in self.splits if s.rss_before_mb is not None
        ]
        return float(max(0.0, max(values))) if values else None

    @property
    def peak_cuda_mb(self) -> float | None:
        """Largest per-split peak CUDA memory, in MiB (None when CUDA was not used)."""
        values = [s.peak_cuda_mb for s in self.splits if s.peak_cuda_mb is not None]
        return float(max(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-safe dict.

        Returns
        -------
        dict
            Keys as in ``schema.json`` (``$defs/model``).
        """
        return {
            "name": self.name,
            "role": self.role,
            "estimator": self.estimator,
            "params": self.params,
            "mean_auroc": self.mean_auroc,
            "mean_average_precision": self.mean_average_precision,
            "fit_seconds": self.fit_seconds,
            "score_seconds": self.score_seconds,
            "fit_images_per_s": self.fit_images_per_s,
            "score_images_per_s": self.score_images_per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_increase_mb": self.peak_rss_increase_mb,
            "peak_cuda_mb": self.peak_cuda_mb,
            "memory_measure": self.memory_measure,
            "splits": [s.to_dict() for s in self.splits],
        }


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns: the estimator's results and the baselines'.

    Parameters
    ----------
    estimator : ModelResult
        The estimator evaluated.
    baselines : list of ModelResult
        The baselines, run on the same splits.
    skipped_baselines : dict of str to str
        Baselines not run, with the reason (e.g. the estimator is one).
    random_state : int or None
        Seed given to :func:`evaluate`.
    metadata : dict
        Free JSON-safe context written at the top level of :meth:`to_dict`;
        the runner sets ``dataset``, ``protocol`` and ``command``.
    environment : dict
        Package versions and machine (:func:`ssad.benchmarks._env.environment`).
    created : str
        UTC time of the evaluation, ISO 8601.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import PixelFeatures, evaluate, one_class_splits
    >>> from ssad.datasets import make_shape_images
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
        """The estimator then the baselines."""
        return [self.estimator, *self.baselines]

    @property
    def splits(self) -> list[SplitResult]:
        """The estimator's per-split results."""
        return self.estimator.splits

    @property
    def mean_auroc(self) -> float:
        """The estimator's mean AUROC."""
        return self.estimator.mean_auroc

    def to_dict(self) -> dict[str, Any]:
        """Everything, as a JSON-safe dict that validates against ``schema.json``.

        Returns
        -------
        dict
            ``schema_version``, ``created``, ``seed``, ``dataset``, ``protocol``
            (None unless set in ``metadata``), the other metadata keys,
            ``estimator``, ``baselines``, ``skipped_baselines`` and ``environment``.
        """
        meta = json_safe(self.metadata)
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "seed": self.random_state,
            "dataset": meta.pop("dataset", None),
            "protocol": meta.pop("protocol", None),
        }
        out.update(meta)
        out["estimator"] = self.estimator.to_dict()
        out["baselines"] = [b.to_dict() for b in self.baselines]
        out["skipped_baselines"] = dict(self.skipped_baselines)
        out["environment"] = json_safe(self.environment)
        return out

    def to_markdown(self) -> str:
        """Two Markdown tables: AUROC per split, then quality and cost per model.

        AUROC and average precision are shown in percent.

        Returns
        -------
        str
            The tables, ending with a newline.
        """
        models = self.models
        labels = []
        for m in models:
            label = m.name
            if m.role == "baseline" and m.name == self.estimator.name:
                label += " (baseline)"
            labels.append(label)
        lines = [
            "| split | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(models),
        ]
        for i, split in enumerate(self.estimator.splits):
            row = [f"{100 * m.splits[i].auroc:.1f}" for m in models]
            lines.append(f"| {split.name} | " + " | ".join(row) + " |")
        mean = [f"**{100 * m.mean_auroc:.1f}**" for m in models]
        lines.append("| **mean AUROC** | " + " | ".join(mean) + " |")
        lines += [
            "",
            "| model | role | mean AUROC | mean AP | fit s | score s | fit img/s | "
            "score img/s | peak RSS MiB | RSS increase MiB | peak CUDA MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, m in zip(labels, models):
            cuda = "-" if m.peak_cuda_mb is None else f"{m.peak_cuda_mb:.0f}"
            added = "-" if m.peak_rss_increase_mb is None else f"{m.peak_rss_increase_mb:.0f}"
            lines.append(
                f"| {label} | {m.role} | {100 * m.mean_auroc:.1f} | "
                f"{100 * m.mean_average_precision:.1f} | {m.fit_seconds:.2f} | "
                f"{m.score_seconds:.2f} | {m.fit_images_per_s:.0f} | "
                f"{m.score_images_per_s:.0f} | {m.peak_rss_mb:.0f} | {added} | {cuda} |"
            )
        if self.skipped_baselines:
            lines.append("")
            for name, reason in self.skipped_baselines.items():
                lines.append(f"- baseline {name} not run: {reason}")
        return "\n".join(lines) + "\n"


# -- evaluate -------------------------------------------------------------------------------


def _take(X: Any, idx: np.ndarray) -> Any:
    """Images of ``X`` at ``idx`` (arrays, tensors, ImageSets and lists)."""
    if hasattr(X, "subset"):
        return X.subset(idx)
    if isinstance(X, (list, tuple)):
        return [X[i] for i in idx]
    return X[idx]


def _metrics(is_anomaly: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != is_anomaly.shape[0]:
        raise RuntimeError(
            f"score_samples returned {scores.shape[0]} scores for {is_anomaly.shape[0]} images."
        )
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(
            f"{int(np.sum(~np.isfinite(scores)))} of {scores.shape[0]} scores are not finite."
        )
    return (
        float(roc_auc_score(is_anomaly, -scores)),
        float(average_precision_score(is_anomaly, -scores)),
    )


@dataclass
class _Model:
    """A model to run on each split: ``run(X_fit, X_score, fitted_estimator) -> scores``."""

    name: str
    role: Literal["estimator", "baseline"]
    estimator: str
    params: dict[str, Any]
    run: Callable[[Any, Any, Any], tuple[Any, np.ndarray, float, float]]


def _fit_score(template: Any) -> Callable[[Any, Any, Any], tuple[Any, np.ndarray, float, float]]:
    def run(X_fit: Any, X_score: Any, _fitted: Any) -> tuple[Any, np.ndarray, float, float]:
        est = clone(template)
        start = time.perf_counter()
        est.fit(X_fit)
        fitted_at = time.perf_counter()
        scores = np.asarray(est.score_samples(X_score), dtype=np.float64)
        return est, scores, fitted_at - start, time.perf_counter() - fitted_at

    return run


def _embedder(estimator: Any) -> tuple[Callable[[Any], Callable[[Any], Any]] | None, str]:
    """How to get embeddings from the *fitted* estimator, or None and the reason."""
    if isinstance(estimator, Pipeline):
        if len(estimator.steps) < 2:
            return None, "the estimator is a one-step pipeline (no embeddings)"
        head = [step for _, step in estimator.steps[:-1] if step not in (None, "passthrough")]
        if all(isinstance(step, PixelFeatures) for step in head):
            return None, "the estimator's embeddings are the raw pixels (see knn-pixels)"
        last = estimator.steps[-1][1]
        if (
            isinstance(last, KNNScorer)
            and last.n_neighbors == 2
            and last.metric == "l2"
            and last.aggregate == "sum"
        ):
            return None, "the estimator is kNN (k=2) on its own embeddings"
        return (lambda fitted: fitted[:-1].transform), ""
    if hasattr(estimator, "transform"):
        return (lambda fitted: fitted.transform), ""
    return None, "the estimator exposes no embeddings (not a pipeline, no transform method)"


def _knn_on_embeddings(
    get_transform: Callable[[Any], Callable[[Any], Any]],
) -> Callable[[Any, Any, Any], tuple[Any, np.ndarray, float, float]]:
    def run(X_fit: Any, X_score: Any, fitted: Any) -> tuple[Any, np.ndarray, float, float]:
        transform = get_transform(fitted)
        start = time.perf_counter()
        knn = KNNScorer(n_neighbors=2).fit(np.asarray(transform(X_fit)))
        fitted_at = time.perf_counter()
        scores = knn.score_samples(np.asarray(transform(X_score)))
        return knn, scores, fitted_at - start, time.perf_counter() - fitted_at

    return run


def _models(
    estimator: Any,
    name: str,
    baselines: Mapping[str, Any] | Literal["auto"] | None,
    random_state: int | None,
) -> tuple[list[_Model], dict[str, str]]:
    models = [
        _Model(name, "estimator", _class_path(estimator), _params(estimator), _fit_score(estimator))
    ]
    skipped: dict[str, str] = {}
    if baselines is None:
        return models, skipped
    if isinstance(baselines, str):
        if baselines != "auto":
            raise ValueError(
                "The 'baselines' parameter of evaluate must be 'auto', None or a mapping of "
                f"names to estimators. Got {baselines!r} instead."
            )
        get_transform, reason = _embedder(estimator)
        if get_transform is None:
            skipped["knn-embeddings"] = reason
        else:
            knn = KNNScorer(n_neighbors=2)
            models.append(
                _Model(
                    "knn-embeddings",
                    "baseline",
                    _class_path(knn),
                    {
                        "embeddings": f"{name} (its fitted feature steps / transform)",
                        "scorer": json_safe(knn),
                    },
                    _knn_on_embeddings(get_transform),
                )
            )
        chosen = {b: make_estimator(b, random_state=random_state) for b in AUTO_BASELINES[1:]}
    elif isinstance(baselines, Mapping):
        chosen = dict(baselines)
    else:
        raise TypeError(
            "The 'baselines' parameter of evaluate must be 'auto', None or a mapping of names "
            f"to estimators. Got an object of type {type(baselines).__name__} instead."
        )
    own = _signature(estimator)
    for bname, base in chosen.items():
        if _signature(base) == own:
            skipped[bname] = "it is the estimator evaluated"
            continue
        models.append(
            _Model(str(bname), "baseline", _class_path(base), _params(base), _fit_score(base))
        )
    return models, skipped


def evaluate(
    estimator: Any,
    protocol_splits: Iterable[Split],
    X_train: Any,
    X_test: Any,
    *,
    baselines: Mapping[str, Any] | Literal["auto"] | None = "auto",
    name: str | None = None,
    random_state: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    verbose: int = 0,
) -> EvaluationResult:
    """Fit and score an estimator, and the baselines, on every split of a protocol.

    For each split the estimator is cloned (:func:`sklearn.base.clone`),
    fitted on ``X_train[split.train_idx]`` and scores
    ``X_test[split.test_idx]``; AUROC and average precision take the anomalies
    as the positive class: ``roc_auc_score(split.is_anomaly, -scores)``.  Each
    baseline runs on the same split right after the estimator.

    Parameters
    ----------
    estimator : estimator
        Anything with ``fit(X)`` and ``score_samples(X)`` (higher = more
        normal) that :func:`~sklearn.base.clone` copies: an ssad detector, a
        :class:`~sklearn.pipeline.Pipeline` ending in a scorer, a scikit-learn
        outlier detector.
    protocol_splits : iterable of Split
        E.g. ``one_class_splits(y_train, y_test)``; read once.
    X_train : images
        Training images, indexed by ``train_idx`` (array, tensor,
        :class:`ssad._images.ImageSet` or list).
    X_test : images
        Test images, indexed by ``test_idx``.
    baselines : "auto", mapping of str to estimator, or None, default="auto"
        ``"auto"``: kNN (k=2, faiss) on the estimator's own embeddings (the
        fitted ``pipeline[:-1]`` of a pipeline, or the fitted estimator's
        ``transform``; reuses the fitted estimator of the split, so no
        training is repeated), kNN (k=2, faiss) on raw pixels, and
        scikit-learn's IsolationForest on raw pixels (``random_state``).
        A baseline equal to the estimator (same class and parameters) is
        skipped.  A mapping runs the estimators given, under those names.
        None runs none.
    name : str, default=None
        Name of the estimator in tables; default: its class name.
    random_state : int or None, default=None
        Seed of the IsolationForest baseline; recorded in the result.
    metadata : mapping, default=None
        Context stored in the result (:attr:`EvaluationResult.metadata`).
    verbose : int, default=0
        > 0: a progress bar on stderr with one step per split and model.

    Returns
    -------
    EvaluationResult
        Per-split and mean AUROC and average precision, fit and score seconds,
        images per second, peak memory, for the estimator and each baseline.

    Raises
    ------
    ValueError
        If ``protocol_splits`` is empty or ``baselines`` is invalid.
    FloatingPointError
        If a model returns non-finite scores.

    See Also
    --------
    one_class_splits, leave_one_out_splits, contaminated_splits, dataset_vs_dataset
    sensitivity_score : A check that needs no anomalies.

    Notes
    -----
    Peak memory is the resident set size of the whole process (data set
    included) during fit + score of a split; on Linux the kernel's peak
    counter is reset before each split, elsewhere it is the peak since the
    process started.  CUDA memory is ``torch.cuda.max_memory_allocated``
    when CUDA is initialised.  Times are wall-clock.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import PixelFeatures, evaluate, one_class_splits
    >>> from ssad.datasets import make_shape_images
    >>> from ssad.scoring import KNNScorer
    >>> X, y = make_shape_images(120, n_classes=3, image_size=16, random_state=0)
    >>> res = evaluate(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                one_class_splits(y[:90], y[90:]), X[:90], X[90:], random_state=0)
    >>> [m.name for m in res.models]
    ['Pipeline', 'knn-pixels', 'iforest-pixels']
    >>> res.skipped_baselines["knn-embeddings"]
    "the estimator's embeddings are the raw pixels (see knn-pixels)"
    """
    splits = list(protocol_splits)
    if not splits:
        raise ValueError("protocol_splits yielded no split.")
    for split in splits:
        if not isinstance(split, Split):
            raise TypeError(
                f"protocol_splits must yield Split objects; got {type(split).__name__}."
            )
    name = name if name is not None else type(estimator).__name__
    models, skipped = _models(estimator, name, baselines, random_state)
    if skipped:
        for bname, reason in skipped.items():
            logger.info("Baseline %s not run: %s.", bname, reason)
    results = [
        ModelResult(m.name, m.role, m.estimator, m.params, _PeakMemory.method) for m in models
    ]
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with tqdm(
        total=len(splits) * len(models),
        disable=verbose <= 0,
        file=sys.stderr,
        unit="fit",
        desc=name,
    ) as bar:
        for split in splits:
            X_fit = _take(X_train, split.train_idx)
            X_score = _take(X_test, split.test_idx)
            is_anomaly = np.asarray(split.is_anomaly, dtype=bool)
            fitted = None
            for model, result in zip(models, results):
                bar.set_description(f"{split.name} | {model.name}")
                with _PeakMemory() as mem:
                    est, scores, fit_s, score_s = model.run(X_fit, X_score, fitted)
                if model.role == "estimator":
                    fitted = est
                auroc, ap = _metrics(is_anomaly, scores)
                assert mem.rss_mb is not None
                result.memory_measure = mem.method
                result.splits.append(
                    SplitResult(
                        name=split.name,
                        n_train=split.n_train,
                        n_test=split.n_test,
                        n_anomalies=int(is_anomaly.sum()),
                        n_train_anomalies=split.n_train_anomalies,
                        auroc=auroc,
                        average_precision=ap,
                        fit_seconds=fit_s,
                        score_seconds=score_s,
                        peak_rss_mb=mem.rss_mb,
                        peak_cuda_mb=mem.cuda_mb,
                        rss_before_mb=mem.rss_before_mb,
                        is_anomaly=is_anomaly,
                        scores=np.asarray(scores, dtype=np.float64),
                    )
                )
                logger.info(
                    "%s | %s: AUROC %.4f, AP %.4f, fit %.2f s, score %.2f s",
                    split.name,
                    model.name,
                    auroc,
                    ap,
                    fit_s,
                    score_s,
                )
                bar.set_postfix(auroc=f"{auroc:.3f}")
                bar.update(1)
            del fitted
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


def _check_holdout(n_holdout: object, n_train: int) -> int:
    if (
        isinstance(n_holdout, bool)
        or not isinstance(n_holdout, (int, np.integer))
        or not 1 <= int(n_holdout) < n_train
    ):
        raise ValueError(
            f"The 'n_holdout' parameter of sensitivity_score must be an int in the range "
            f"[1, {n_train - 1}] (fewer than the {n_train} training images). "
            f"Got {n_holdout!r} instead."
        )
    return int(n_holdout)


def sensitivity_score(
    estimator: Any,
    X_train: Any,
    X_test_in: Any,
    n_holdout: int,
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Sensitivity score (SSLSDN section 3.4): a check that needs no anomaly.

    ``n_holdout`` training images, drawn at random, are held out; a clone of
    the estimator is fitted on the other training images and scores the
    held-out training images (label 0) and the in-distribution test images
    (label 1).  The score is the AUROC of telling them apart:
    ``roc_auc_score(labels, -scores)``.

    Parameters
    ----------
    estimator : estimator
        Anything with ``fit`` and ``score_samples`` (higher = more normal).
    X_train : images
        The training images (normal data).
    X_test_in : images
        In-distribution test images: normal images the model never saw.
    n_holdout : int
        Number of training images held out (B in the paper), in
        ``[1, n_train - 1]``.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images.

    Returns
    -------
    float
        The AUROC, in [0, 1].  Near 0.5: the model scores unseen training
        images and unseen test images alike.  Above 0.5: the test images look
        *less* normal than the held-out training images (the sign convention of
        the anomaly AUROC, with the test images in the role of anomalies);
        below 0.5: the reverse.

    Raises
    ------
    ValueError
        If ``n_holdout`` is out of range.

    See Also
    --------
    select_by_sensitivity : Pick a hyperparameter by this score.

    Notes
    -----
    As written in BENCHMARKS.md, the held-out images are left out of the
    whole ``fit``; neither they nor the test images are seen by the model.
    A score far from 0.5 therefore says that the model reacts to what differs
    between the training sample and the test sample rather than to the
    distribution they share, which is what the paper uses it for: choosing
    hyperparameters without anomaly labels.  The AUROC of two samples of
    sizes ``B`` and ``n`` from one distribution has a standard deviation of
    about ``sqrt((B + n + 1) / (12 B n))``; use a ``n_holdout`` of a few
    hundred so that differences are not noise.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import PixelFeatures, sensitivity_score
    >>> from ssad.datasets import make_anomaly_images
    >>> from ssad.scoring import KNNScorer
    >>> X, _ = make_anomaly_images(300, 0, image_size=16, random_state=0)
    >>> s = sensitivity_score(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                       X[:200], X[200:], n_holdout=100, random_state=0)
    >>> 0.35 < s < 0.65
    True
    """
    n_train = len(X_train)
    n_holdout = _check_holdout(n_holdout, n_train)
    rng = check_random_state(random_state)
    perm = rng.permutation(n_train)
    held = np.sort(perm[:n_holdout])
    kept = np.sort(perm[n_holdout:])
    est = clone(estimator).fit(_take(X_train, kept))
    s_held = np.asarray(est.score_samples(_take(X_train, held)), dtype=np.float64)
    s_test = np.asarray(est.score_samples(X_test_in), dtype=np.float64)
    labels = np.concatenate([np.zeros(s_held.shape[0]), np.ones(s_test.shape[0])])
    return float(roc_auc_score(labels, -np.concatenate([s_held, s_test])))


@dataclass
class SensitivitySelection:
    """What :func:`select_by_sensitivity` returns.

    Parameters
    ----------
    best_value : object
        The value whose sensitivity score is closest to 0.5 (the first such
        value on ties).
    best_sensitivity : float
        Its sensitivity score.
    table : list of dict
        ``{"value": ..., "sensitivity": ...}`` for every value, in order.

    Examples
    --------
    >>> from ssad.benchmarks import SensitivitySelection
    >>> SensitivitySelection(3, 0.51, [{"value": 3, "sensitivity": 0.51}]).best_value
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
    """Choose a hyperparameter without anomaly labels: the sensitivity closest to 0.5.

    For each value, ``estimator.set_params(**{param_name: value})`` and
    :func:`sensitivity_score` with the same held-out images for every value.

    Parameters
    ----------
    estimator : estimator
        Anything with ``fit``, ``score_samples`` and ``set_params``.
    param_name : str
        The parameter to vary (``step__param`` for pipelines).
    values : sequence
        Candidate values, at least one.
    X_train : images
        The training images.
    X_test_in : images
        In-distribution test images.
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

    See Also
    --------
    sensitivity_score : The score computed for each value.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import PixelFeatures, select_by_sensitivity
    >>> from ssad.datasets import make_anomaly_images
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
    seed = (
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
    best = min(table, key=lambda row: abs(row["sensitivity"] - 0.5))
    return SensitivitySelection(best["value"], float(best["sensitivity"]), table)
