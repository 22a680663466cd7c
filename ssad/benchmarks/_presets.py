"""Presets: a paper's benchmark as data (protocol, data, the method, its ablations, baselines)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from ssad.benchmarks._evaluate import FromFitted
from ssad.benchmarks._registry import make_estimator
from ssad.datasets import make_natural_patches
from ssad.scoring import CosineKernelScorer, GaussianScorer, KMeansScorer, KNNScorer

__all__ = ["Preset", "Variant", "available_presets", "get_preset", "register_preset"]


@dataclass(frozen=True)
class Variant:
    """A row of a preset built from its method.

    Parameters
    ----------
    params : mapping, default={}
        ``set_params`` applied on top of the method's parameters (an ablation).
    estimator : str, default=None
        Another registered estimator instead of the method (its parameters
        are then ``params`` alone).
    build : callable, default=None
        ``build(method) -> estimator``: a row made from the (configured)
        method, e.g. a scorer on its frozen features.
    description : str, default=""
        What the row is, for ``--list``.
    fit_params : mapping of str to callable, default={}
        Extra data for ``fit(X, **fit_params)``: each callable is called
        once per run and returns the value (e.g. auxiliary images).

    Examples
    --------
    >>> from ssad.benchmarks import Variant
    >>> Variant({"negatives": None}, description="no negatives").params
    {'negatives': None}
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    estimator: str | None = None
    build: Callable[[Any], Any] | None = None
    description: str = ""
    fit_params: Mapping[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """A benchmark of the runner, ``python -m ssad.benchmarks --preset NAME``.

    Parameters
    ----------
    name : str
        Its name.
    description : str
        One line for ``--list``.
    dataset, protocol : str
        Runner names (:data:`ssad.datasets.DATASETS`, ``PROTOCOLS``).
    estimator : str
        The registered method.
    params : mapping, default={}
        ``set_params`` of the method.
    ablations : mapping of str to Variant or FromFitted, default={}
        Rows with role ``"ablation"``.
    baselines : mapping of str to Variant or FromFitted, default={}
        Rows added to the default baselines (:func:`ssad.benchmarks.default_baselines`).
    ood_dataset : str, default=None
        Out-of-distribution set of ``protocol="dataset-vs-dataset"``.
    ratios : tuple of float, default=(0.05,)
        Contamination shares of ``protocol="contaminated"``: one report each.
    classes : tuple of int, default=None
        Classes to run; default: all.
    max_train, max_test, image_size, n_epochs : int, default=None
        Defaults of the runner's overrides.
    sensitivity_holdout : int, default=None
        Compute the sensitivity score with this many held-out training images.

    Examples
    --------
    >>> from ssad.benchmarks import get_preset
    >>> get_preset("transformaly-one-class").protocol
    'one-class'
    """

    name: str
    description: str
    dataset: str
    protocol: str
    estimator: str
    params: Mapping[str, Any] = field(default_factory=dict)
    ablations: Mapping[str, Variant | FromFitted] = field(default_factory=dict)
    baselines: Mapping[str, Variant | FromFitted] = field(default_factory=dict)
    ood_dataset: str | None = None
    ratios: tuple[float, ...] = (0.05,)
    classes: tuple[int, ...] | None = None
    max_train: int | None = None
    max_test: int | None = None
    image_size: int | None = None
    n_epochs: int | None = None
    sensitivity_holdout: int | None = None


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, *, overwrite: bool = False) -> None:
    """Make a preset available to ``--preset``.

    Parameters
    ----------
    preset : Preset
        The preset.
    overwrite : bool, default=False
        Replace a preset of the same name.

    Raises
    ------
    ValueError
        If the name is taken and ``overwrite`` is False.

    Examples
    --------
    >>> from ssad.benchmarks import Preset, register_preset
    >>> register_preset(Preset("digits-knn", "kNN on digits", "digits", "one-class",
    ...                        "knn-pixels"), overwrite=True)
    """
    if preset.name in _PRESETS and not overwrite:
        raise ValueError(f"A preset named {preset.name!r} exists; pass overwrite=True.")
    _PRESETS[preset.name] = preset


def available_presets() -> dict[str, str]:
    """Preset names and their descriptions, sorted by name.

    Examples
    --------
    >>> from ssad.benchmarks import available_presets
    >>> "convex-mil-fashion-mnist" in available_presets()
    True
    """
    return {name: _PRESETS[name].description for name in sorted(_PRESETS)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises
    ------
    ValueError
        If there is none.

    Examples
    --------
    >>> from ssad.benchmarks import get_preset
    >>> get_preset("speed").estimator
    'speed-dino'
    """
    if name not in _PRESETS:
        raise ValueError(f"Unknown preset {name!r}; presets: {sorted(_PRESETS)}.")
    return _PRESETS[name]


def _on_frozen(scorer: Any, **params: Any) -> Callable[[Any], Any]:
    """``scorer`` on the untrained features (``frozen_features``) of the method with ``params``."""

    def build(method: Any) -> Pipeline:
        features = (clone(method).set_params(**params) if params else method).frozen_features()
        return Pipeline([("features", features), ("scorer", scorer)])

    return build


def _part(name: str) -> FromFitted:
    """One space of a :class:`~ssad.scoring.SumScorer` (Transformaly), from the same fit."""

    def fn(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        return fitted.scorer_.score_parts(Z_score)[name]

    return FromFitted(fn, f"the {name} space of the fitted detector alone")


def _kmeans_unfiltered(fixed_k: bool) -> FromFitted:
    """K-means on the thesis pipeline's PCA features without the GMM filter."""

    def fn(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        kmeans = fitted[-1].estimator_  # the K-means fitted after filtering
        k = int(kmeans.n_clusters_) if fixed_k else "elbow"
        scorer = KMeansScorer(
            n_clusters=k, max_clusters=kmeans.max_clusters, random_state=kmeans.random_state
        )
        return scorer.fit(Z_fit).score_samples(Z_score)

    how = "the K of the filtered fit" if fixed_k else "K re-picked by the elbow"
    return FromFitted(fn, f"K-means on all training rows (no GMM filter), {how}")


def _memory_filtered(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
    """ConvexMIL's eq. 11 after dropping the least normal training images (eq. 2)."""
    filtered = clone(fitted).set_params(memory_filter="pseudo_normality")._make_scorer()
    return filtered.fit(Z_fit).score_samples(Z_score)


_CONVEX_MIL_ROWS: dict[str, Variant | FromFitted] = {
    "rot+conv": Variant({"lambda_mean": 0.0}, description="no mean-shifted loss"),
    "rot+mean": Variant({"use_convex": False}, description="no convex MIL loss"),
    "memory-filtered": FromFitted(
        _memory_filtered, "eq. 11 against the training images eq. 2 keeps (memory_filter)"
    ),
    "pretrained": Variant(estimator="convex-mil-pretrained"),
}


def _rescored(description: str, **params: Any) -> FromFitted:
    """The fitted detector's embeddings under another of its scorers (``params``)."""

    def fn(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        other = copy.copy(fitted).set_params(**params)  # keeps the fitted attributes
        return other._make_scorer().fit(Z_fit).score_samples(Z_score)

    return FromFitted(fn, description)


def _block(j: int) -> FromFitted:
    """Student block ``j`` alone: minus its discrepancy (per-block diagnostic)."""

    def fn(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        return -Z_score[:, fitted.n_pretrained_features_ + j]

    return FromFitted(fn, f"minus the discrepancy of student block {j + 1} alone")


_N_BLOCKS = make_estimator("transformaly-efficientnet").n_student_blocks  # a row per student
_TRANSFORMALY_ROWS: dict[str, Variant | FromFitted] = {
    "pretrained-space": _part("pretrained"),
    "finetuned-space": _part("finetuned"),
    "knn+finetuned": _rescored(
        "kNN (k=2) pretrained + Gaussian discrepancies, standardised sums", scorer="knn"
    ),
    "knn-cos+finetuned": _rescored(
        "the same with cosine kNN on the pretrained space", scorer="knn", metric="cosine"
    ),
    **{f"block-{j + 1}": _block(j) for j in range(_N_BLOCKS)},
}
_CONVEX_MIL_BASELINES: dict[str, Variant | FromFitted] = {
    "knn-pixels-filtered": Variant(estimator="knn-pixels-filtered"),
    "knn-frozen-pretrained": Variant(
        build=lambda method: _on_frozen(KNNScorer())(make_estimator("convex-mil-pretrained")),
        description="knn-frozen of the pretrained row: kNN (k=2) on its untrained backbone",
    ),
    "knn-frozen-pretrained-unit": Variant(
        build=lambda method: _on_frozen(KNNScorer())(
            make_estimator("convex-mil-pretrained")
        ).set_params(features__normalize=True),
        description="knn-frozen-unit of the pretrained row: its untrained features L2-normalised",
    ),
}
_TRANSFORMALY_BASELINES: dict[str, Variant | FromFitted] = {
    "gaussian-frozen": Variant(
        build=_on_frozen(GaussianScorer()), description="Gaussian on the frozen teacher features"
    ),
}
_TRANSFORMALY_SIZES: dict[str, Any] = {"max_train": 1000, "max_test": 2000, "image_size": 64}
_COSINE_FROZEN: dict[str, Variant | FromFitted] = {
    "cosine-kernel-frozen": Variant(
        build=_on_frozen(CosineKernelScorer(temperature=0.04)),
        description="the paper's cosine kernel (T=0.04) on the untrained backbone's features",
    ),
    "cosine-kernel-frozen-64px": Variant(
        build=_on_frozen(CosineKernelScorer(temperature=0.04), image_size=64),
        description="the same at 64 px input",
    ),
}


def _natural_patches() -> np.ndarray:
    """Grey natural-image patches: the auxiliary negatives of the Fashion-MNIST presets."""
    return make_natural_patches(1000, image_size=28, grey=True, random_state=0)


_AUX = {"X_aux": _natural_patches}
_SELF_DISTILL_ROWS: dict[str, Variant | FromFitted] = {
    "no-negatives": Variant({"negatives": None}, description="plain DINO (lambda=0)"),
    "rot-negatives": Variant({"negatives": "rot"}, description="rotations (the paper's)"),
    "aux-negatives": Variant(
        {"negatives": "rot", "negative_source": "aux"}, fit_params=_AUX, description="aux patches"
    ),
    "in+aux-negatives": Variant(
        {"negatives": "rot", "negative_source": "both"}, fit_params=_AUX, description="both sources"
    ),
    "pixel-shuffle-negatives": Variant({"negatives": "pixel_shuffle"}),
    **{f"lambda-{w:g}": Variant({"negative_weight": w}) for w in (0.5, 2.0)},
    **{
        f"kernel-t{t:g}": FromFitted(None, "same fit", scorer=CosineKernelScorer(temperature=t))
        for t in (0.02, 0.08)
    },
    "max-cosine": FromFitted(
        None, "max cosine similarity, same fit", scorer=KNNScorer(n_neighbors=1, metric="cosine")
    ),
    "mahalanobis": FromFitted(
        None, "Mahalanobis (Gaussian), same fit", scorer=GaussianScorer(variance=None)
    ),
}

for _preset in [
    Preset(
        "transformaly-one-class",
        "Transformaly on Fashion-MNIST one-class (paper Table 1 shape): both spaces, each "
        "space alone, knn-frozen, Gaussian on frozen features, pixel baselines",
        "fashion-mnist",
        "one-class",
        "transformaly-efficientnet",
        ablations=_TRANSFORMALY_ROWS,
        baselines=_TRANSFORMALY_BASELINES,
        **_TRANSFORMALY_SIZES,
    ),
    Preset(
        "transformaly-leave-one-out",
        "Transformaly on Fashion-MNIST leave-one-class-out (paper Table 5 shape)",
        "fashion-mnist",
        "leave-one-out",
        "transformaly-efficientnet",
        ablations=_TRANSFORMALY_ROWS,
        baselines=_TRANSFORMALY_BASELINES,
        **_TRANSFORMALY_SIZES,
    ),
    Preset(
        "thesis-leave-one-out",
        "Gasoyan thesis on Fashion-MNIST leave-one-class-out: tokens -> PCA 100 -> K-means, "
        "with and without the GMM filter at fixed K and re-picked K",
        "fashion-mnist",
        "leave-one-out",
        "thesis-efficientnet",
        ablations={
            "kmeans-fixed-k": _kmeans_unfiltered(fixed_k=True),
            "kmeans-elbow": _kmeans_unfiltered(fixed_k=False),
        },
        max_train=5000,
        max_test=2000,
    ),
    Preset(
        "self-distill-ood",
        "SSL-SDN, Fashion-MNIST in vs MNIST-5k out (paper Table 1 shape): negatives "
        "(none, rotation, natural patches, both, perm4, pixel shuffle), lambda 0.5/1/2, "
        "scores (cosine kernel T 0.02/0.04/0.08, max cosine, Mahalanobis), sensitivity",
        "fashion-mnist",
        "dataset-vs-dataset",
        "self-distill-cpu",
        ood_dataset="mnist-5k",
        ablations=_SELF_DISTILL_ROWS,
        baselines=_COSINE_FROZEN,
        max_train=1000,
        max_test=1000,
        sensitivity_holdout=100,
    ),
    Preset(
        "self-distill-one-class",
        "SSL-SDN on Fashion-MNIST one-class (secondary protocol), with and without negatives",
        "fashion-mnist",
        "one-class",
        "self-distill-cpu",
        ablations={"no-negatives": _SELF_DISTILL_ROWS["no-negatives"]},
        baselines=_COSINE_FROZEN,
        max_train=500,
        max_test=2000,
        sensitivity_holdout=100,
    ),
    *[
        Preset(
            f"convex-mil-{data}",
            f"ConvexMIL on {data}, contaminated one-class at gamma 0.02/0.05/0.10 (paper "
            "Tables 1-3 shape): full, loss ablations, memory filtering, the pretrained variant, "
            "knn-frozen, kNN pixels with and without a filtered memory",
            data,
            "contaminated",
            "convex-mil",
            ablations=_CONVEX_MIL_ROWS,
            baselines=_CONVEX_MIL_BASELINES,
            ratios=(0.02, 0.05, 0.10),
            max_train=300,
            max_test=1000,
        )
        for data in ("mnist-5k", "mnist", "fashion-mnist")  # mnist: --root DIR
    ],
    Preset(
        "patchcore-synthetic",
        "PatchCore-1% (EfficientNet-Lite0) on synthetic local texture defects: image AUROC, "
        "pixel AUROC and PRO; without coreset (brute-force patch kNN); knn-frozen (image-level)",
        "synthetic-local:texture",
        "one-class",
        "patchcore-efficientnet",
        ablations={
            "no-coreset": Variant(
                {"coreset_ratio": 1.0}, description="brute-force patch kNN: every training patch"
            ),
        },
        image_size=128,
    ),
    Preset(
        "speed",
        "Cost of the embedder: DINOFeatures ViT-S/16 (random weights) + kNN against the same "
        "model in a plain timm loop + kNN; compare the fit and score img/s columns",
        "fashion-mnist",
        "one-class",
        "speed-dino",
        baselines={"plain-timm-loop": Variant(estimator="speed-plain-loop")},
        classes=(0,),
        max_train=256,
        max_test=256,
    ),
]:
    register_preset(_preset)
