"""Run an estimator, its ablations and the baselines over the splits of a protocol."""

from __future__ import annotations

import contextlib
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
from ssad.metrics import pixel_roc_auc_score, pro_score
from ssad.model_selection import _embedder, _held_out_auroc, _scorer_of
from ssad.scoring import KNNScorer

__all__ = [
    "SCHEMA_VERSION",
    "EvaluationResult",
    "FromFitted",
    "ModelResult",
    "SplitResult",
    "WithFitParams",
    "default_baselines",
    "evaluate",
    "json_safe",
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
        return {"class": _class_path(obj), "params": json_safe(obj.get_params(deep=False))}
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


def _status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (Linux), in MiB."""
    try:
        with open("/proc/self/status") as fh:
            line = next((line for line in fh if line.startswith(key + ":")), None)
    except OSError:
        return None
    return None if line is None else float(line.split()[1]) / 1024.0  # kB


class _PeakMemory:
    """Peak RSS (and CUDA memory) of the block: VmHWM reset via /proc/self/clear_refs (Linux),
    else ``ru_maxrss``, the peak since the process started."""

    def __enter__(self) -> _PeakMemory:
        self.before_mb = _status_mb("VmRSS")
        self.method = "ru_maxrss"
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
            self.method = "VmHWM" if _status_mb("VmHWM") is not None else "ru_maxrss"
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
    pixel_auroc, pro : float or None, default=None
        Pixel AUROC and PRO (:mod:`ssad.metrics`) of the model's
        ``anomaly_map`` when the test images have masks.
    training : dict or None, default=None
        The fitted model's training record, where it has one: the
        attributes ending as in :data:`TRAINING_ATTRIBUTES`, without their last ``_``.

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
    pixel_auroc: float | None = None
    pro: float | None = None
    training: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-safe dict (``schema.json``, ``$defs/split``), without scores."""
        out = {k: getattr(self, k) for k in _SPLIT_KEYS}
        out["fit_images_per_s"] = self.n_train / max(self.fit_seconds, 1e-9)
        out["score_images_per_s"] = self.n_test / max(self.score_seconds, 1e-9)
        return json_safe(out)


_SPLIT_KEYS = (
    "name n_train n_test n_anomalies n_train_anomalies auroc average_precision fit_seconds "
    "score_seconds peak_rss_mb peak_cuda_mb rss_before_mb sensitivity pixel_auroc pro training"
).split()

#: Endings of the fitted attributes a report keeps per split (training length and curves).
TRAINING_ATTRIBUTES = ("n_epochs_", "best_epoch_", "_curve_")


def _training_record(fitted: Any, train_is_anomaly: np.ndarray | None) -> dict[str, Any] | None:
    """Training attributes; with ``abnormal_candidates_`` and a known contamination, the
    share of the anomalies among the candidates and the share a random guess would catch."""
    record = {a[:-1]: getattr(fitted, a) for a in dir(fitted) if a.endswith(TRAINING_ATTRIBUTES)}
    flagged = np.asarray(getattr(fitted, "abnormal_candidates_", []), dtype=bool)
    truth = np.zeros(0, bool) if train_is_anomaly is None else train_is_anomaly
    if flagged.shape == truth.shape and flagged.any() and truth.any():
        record["candidate_recall"] = float(flagged[truth].mean())
        record["candidate_share"] = float(flagged.mean())
    return json_safe(record) or None


#: Split measures averaged over the splits as ``mean_<name>`` (None where no split has one).
_MEANS = ("average_precision", "sensitivity", "pixel_auroc", "pro")


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
            **{f"mean_{k}": _mean([getattr(x, k) for x in s]) for k in _MEANS},
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
    def variants(self) -> list[ModelResult]:
        """The estimator and its ablations (the rows that are not baselines)."""
        return [m for m in self.models if m.role != "baseline"]

    @property
    def splits(self) -> list[SplitResult]:
        """The estimator's per-split results."""
        return self.estimator.splits

    @property
    def mean_auroc(self) -> float:
        """The estimator's mean AUROC."""
        return self.estimator.mean_auroc

    def sensitivity_correlation(self) -> float | None:
        """Spearman correlation of mean sensitivity and AUROC over the estimator and ablations."""
        rows = [(_mean([x.sensitivity for x in m.splits]), m.mean_auroc) for m in self.variants]
        pairs = [row for row in rows if row[0] is not None]
        if len(pairs) < 3 or any(len(set(values)) == 1 for values in zip(*pairs)):
            return None  # undefined
        rho = spearmanr(*zip(*pairs)).statistic
        return None if not np.isfinite(rho) else float(rho)

    def to_dict(self) -> dict[str, Any]:
        """Everything, as a JSON-safe dict that validates against ``schema.json``."""
        meta = json_safe(self.metadata)
        return {
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

    def to_markdown(self) -> str:
        """Markdown tables: AUROC per split, then quality and cost per model (in %)."""
        models = self.models
        labels = [m.name + (" †" if m.from_fitted else "") for m in models]
        lines = ["| split | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(models)]
        for i, split in enumerate(self.estimator.splits):
            row = [f"{100 * m.splits[i].auroc:.1f}" for m in models]
            lines.append(f"| {split.name} | " + " | ".join(row) + " |")
        means = " | ".join(f"**{100 * m.mean_auroc:.1f}**" for m in models)
        lines.append(f"| **mean AUROC** | {means} |")
        rows = [m.to_dict() for m in models]
        pixel = {"mean_pixel_auroc": "pixel AUROC", "mean_pro": "PRO"}
        extra = [k for k in pixel if any(d[k] is not None for d in rows)]
        head = "| model | role | mean AUROC | mean AP | sensitivity | fit s | score s | "
        head += "".join(f"{pixel[k]} | " for k in extra)
        lines += ["", head + "fit img/s | peak RSS MiB |", "|---|---|" + "---:|" * (7 + len(extra))]

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}"

        for label, m, d in zip(labels, models, rows):
            lines.append(
                f"| {label} | {m.role} | {100 * d['mean_auroc']:.1f} | "
                f"{100 * (d['mean_average_precision'] or 0):.1f} | {pct(d['mean_sensitivity'])} | "
                f"{d['fit_seconds']:.1f} | {d['score_seconds']:.1f} | "
                + "".join(f"{pct(d[k])} | " for k in extra)
                + f"{d['fit_images_per_s']:.0f} | {d['peak_rss_mb']:.0f} |"
            )
        lines.append("")
        if any(m.from_fitted for m in models):
            lines.append("† scored from the estimator's fit and embeddings (no fit of their own).")
        rho = self.sensitivity_correlation()
        if rho is not None:
            lines.append(f"Spearman of sensitivity and AUROC over the variants: {rho:.2f}.")
            rows = [d for d in rows[: len(self.variants)] if d["mean_sensitivity"] is not None]
            chosen = max(rows, key=lambda d: d["mean_sensitivity"])
            best = max(rows, key=lambda d: d["mean_auroc"])
            lines.append(
                f"Chosen by the highest sensitivity (no anomaly labels): {chosen['name']} "
                f"(AUROC {100 * chosen['mean_auroc']:.1f}); best AUROC among the variants: "
                f"{best['name']} ({100 * best['mean_auroc']:.1f})."
            )
        for name, reason in self.skipped_baselines.items():
            lines.append(f"- baseline {name} not run: {reason}")
        lines += _training_table(models)
        return "\n".join(lines).rstrip() + "\n"


def _training_table(models: Sequence[ModelResult]) -> list[str]:
    """Markdown lines of the training records: length, losses, candidates, teacher entropy."""
    trained = [(m, r.name, r.training or {}) for m in models for r in m.splits]
    trained = [(m, name, t) for m, name, t in trained if t.get("loss_curve")]
    caught = any("candidate_recall" in t for *_, t in trained)
    entropy = any("teacher_entropy_curve" in t for *_, t in trained)
    head = "| model | split | epochs | best epoch | loss: first, last | val. loss: best, last |"
    head += " anomalies caught by its abnormal candidates % (chance) |" * caught
    head += " teacher entropy, nats: first, last (of the mean output) |" * entropy
    lines = ["", head, "|---|---|---:|---:|---|---|" + "---|" * (caught + entropy)]
    for m, name, t in trained:
        loss, val, best = t["loss_curve"], t.get("validation_curve"), t.get("best_epoch", -1)
        h, hm = t.get("teacher_entropy_curve"), t.get("teacher_mean_entropy_curve")
        row = f"| {m.name} | {name} | {t.get('n_epochs', len(loss))} | "
        row += f"{best + 1 if best is not None and best >= 0 else '-'} | {loss[0]:.4g}, "
        row += f"{loss[-1]:.4g} | " + (f"{min(val):.4g}, {val[-1]:.4g} |" if val else "- |")
        recall, share = 100 * t.get("candidate_recall", -1), 100 * t.get("candidate_share", -1)
        row += (f" {recall:.0f} ({share:.0f}) |" if recall >= 0 else " - |") * caught
        mean = f" ({hm[0]:.3g}, {hm[-1]:.3g})" if hm else ""
        lines.append(row + (f" {h[0]:.3g}, {h[-1]:.3g}{mean} |" if h else " - |") * entropy)
    return lines if trained else []


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
    - ``knn-frozen-unit``: the same on the L2-normalised features (the space
      of the detectors that score on the unit sphere; often the stronger);
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
    knn = steps[-1] if steps and isinstance(steps[-1], KNNScorer) else None
    is_knn2 = knn is not None and (knn.n_neighbors, knn.metric, knn.aggregate) == (2, "l2", "sum")
    if frozen is None:
        skipped["knn-frozen"] = "the estimator has no network features"
    elif is_knn2 and len(steps or ()) == 2:
        skipped["knn-frozen"] = "the estimator is kNN (k=2) on frozen features"
    else:
        base["knn-frozen"] = Pipeline([("features", frozen), ("knn", KNNScorer(n_neighbors=2))])
    if frozen is not None and frozen.normalize:
        skipped["knn-frozen-unit"] = "the frozen features are L2-normalised (see knn-frozen)"
    elif frozen is not None:
        unit = clone(frozen).set_params(normalize=True)
        base["knn-frozen-unit"] = Pipeline([("features", unit), ("knn", KNNScorer(n_neighbors=2))])
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


def _take(X: Any, idx: np.ndarray) -> Any:
    """Images of ``X`` at ``idx`` (arrays, tensors, ImageSets and lists)."""
    if hasattr(X, "subset"):
        return X.subset(idx)
    return [X[i] for i in idx] if isinstance(X, (list, tuple)) else X[idx]


def _metrics(is_anomaly: np.ndarray, scores: Any) -> tuple[float, float]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != is_anomaly.shape[0]:
        raise RuntimeError(f"Got {scores.shape[0]} scores for {is_anomaly.shape[0]} images.")
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(f"{int(np.sum(~np.isfinite(scores)))} scores are not finite.")
    auroc, ap = roc_auc_score(is_anomaly, -scores), average_precision_score(is_anomaly, -scores)
    return float(auroc), float(ap)


@dataclass
class _Row:
    name: str
    role: Role
    model: Any  # an estimator template, or FromFitted


def _model_result(row: _Row, estimator_name: str) -> ModelResult:
    """A row's result without splits: its class and JSON-safe parameters, or how it is scored."""
    if isinstance(row.model, FromFitted):
        how = {"scored from": estimator_name, "how": row.model.description}
        return ModelResult(row.name, row.role, estimator_name, how, "VmHWM", from_fitted=True)
    est = _estimator_of(row.model)
    params = json_safe(est.get_params(deep=False)) if hasattr(est, "get_params") else {}
    if isinstance(row.model, WithFitParams) and isinstance(params, dict):
        params["fit_params"] = {k: type(v).__name__ for k, v in row.model.fit_params.items()}
    params = params if isinstance(params, dict) else {}
    return ModelResult(row.name, row.role, _class_path(est), params, "VmHWM")


@dataclass
class _SplitRun:
    """One split's images; runs rows on them (the estimator's row first)."""

    X_fit: Any
    X_score: Any
    is_anomaly: np.ndarray
    sensitivity_holdout: int | None
    seed: int
    masks: np.ndarray | None = None
    fitted: Any = None
    last: Any = None
    Z: tuple[np.ndarray, np.ndarray] | None = None

    def pixel_metrics(self) -> tuple[float | None, float | None]:
        """Pixel AUROC and PRO of the last row's anomaly maps (None without masks or maps)."""
        masks, has_maps = self.masks, hasattr(self.last, "anomaly_map")
        if masks is None or not masks.any() or masks.all() or not has_maps:
            return None, None
        maps = self.last.anomaly_map(self.X_score)
        return pixel_roc_auc_score(masks, maps), pro_score(masks, maps)

    def run(self, row: _Row) -> tuple[np.ndarray, float, float, float | None]:
        """Scores, fit and score seconds, and sensitivity of a row."""
        self.last = None
        if isinstance(row.model, FromFitted):
            if self.Z is None:  # the estimator's embeddings, once for all such rows
                self.Z = self._embeddings(self.fitted, row.name)
            start = time.perf_counter()
            scores = row.model(self.fitted, *self.Z)
            elapsed = time.perf_counter() - start
            return scores, elapsed, 0.0, self._sensitivity(self.Z, row.model.scorer)
        fit_params = dict(row.model.fit_params) if isinstance(row.model, WithFitParams) else {}
        start = time.perf_counter()
        est = clone(_estimator_of(row.model)).fit(self.X_fit, **fit_params)
        fitted_at = time.perf_counter()
        scores = np.asarray(est.score_samples(self.X_score), np.float64)
        fit_s, score_s = fitted_at - start, time.perf_counter() - fitted_at
        scorer, Z = _scorer_of(est), None
        self.last = est
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
    masks: Any = None,
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
    masks : array of shape (n_test, H, W), default=None
        Ground-truth defect masks of ``X_test``: pixel AUROC and PRO of the
        rows that have ``anomaly_map``.
    random_state : int or None, default=None
        Seed of the default baselines and of the held-out draws.
    metadata : mapping, default=None
        Context stored in the result.
    verbose : int, default=0
        > 0: a progress bar on stderr with one step per split and row.

    Returns
    -------
    EvaluationResult
        Per-split and mean AUROC, average precision, sensitivity, pixel
        AUROC and PRO, times, images per second and peak memory of every row.

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
    if isinstance(baselines, str) and baselines == "auto":
        baselines, skipped = default_baselines(estimator, random_state)
    elif baselines is not None and not isinstance(baselines, Mapping):
        got = repr(baselines) if isinstance(baselines, str) else f"a {type(baselines).__name__}"
        raise ValueError(
            "The 'baselines' parameter of evaluate must be 'auto', None or a mapping of names "
            f"to estimators. Got {got} instead."
        )
    rows = [_Row(name, "estimator", estimator)]
    rows += [_Row(str(k), "ablation", v) for k, v in (ablations or {}).items()]
    rows += [_Row(str(k), "baseline", v) for k, v in (baselines or {}).items()]
    results = [_model_result(r, name) for r in rows]
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
                None if masks is None else np.asarray(masks)[split.test_idx],
            )
            for row, result in zip(rows, results):
                bar.set_description(f"{split.name} | {row.name}")
                with _PeakMemory() as mem:
                    scores, fit_s, score_s, sens = ctx.run(row)
                auroc, ap = _metrics(ctx.is_anomaly, scores)
                result.memory_measure = mem.method
                n = (split.n_train, split.n_test, split.n_anomalies, split.n_train_anomalies)
                measures = (*n, auroc, ap, fit_s, score_s, mem.rss_mb, mem.cuda_mb, mem.before_mb)
                res = SplitResult(split.name, *measures, ctx.is_anomaly, scores, sens)
                res.pixel_auroc, res.pro = ctx.pixel_metrics()
                res.training = _training_record(ctx.last, split.train_is_anomaly)
                result.splits.append(res)
                logger.info("%s | %s: AUROC %.4f, fit %.1f s", split.name, row.name, auroc, fit_s)
                bar.set_postfix(auroc=f"{auroc:.3f}")
                bar.update(1)
    meta = dict(metadata or {})
    return EvaluationResult(
        results[0], results[1:], skipped, random_state, meta, environment(), created
    )
