"""Named estimators for the benchmark runner, and the raw-pixel transformer of the baselines."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import StrOptions

from ssad._images import check_images
from ssad.scoring import GaussianScorer, KNNScorer

__all__ = [
    "EstimatorFactory",
    "PixelFeatures",
    "available_estimators",
    "make_estimator",
    "register_estimator",
]

#: A factory takes ``random_state`` (an int or None) and returns an unfitted estimator.
EstimatorFactory = Callable[..., Any]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class PixelFeatures(TransformerMixin, BaseEstimator):
    """Raw pixels as features: each image flattened to one row of floats in [0, 1].

    The input of the raw-pixel baselines: uint8 images are divided by 255,
    float images (already in [0, 1]) are kept, and each image becomes a row of
    ``H * W * C`` values.  It learns nothing.

    Parameters
    ----------
    dtype : {"float32", "float64"}, default="float32"
        dtype of the output; float32 is what faiss and IsolationForest compute in.

    Attributes
    ----------
    n_features_out_ : int
        Length of a row: the number of pixel values of an image.

    See Also
    --------
    ssad.features.TimmFeatures : Embeddings from a pretrained network instead.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import PixelFeatures
    >>> X = np.full((2, 4, 4), 255, dtype=np.uint8)
    >>> PixelFeatures().fit_transform(X).shape
    (2, 16)
    >>> float(PixelFeatures().fit_transform(X).max())
    1.0
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "dtype": [StrOptions({"float32", "float64"})],
    }

    def __init__(self, *, dtype: str = "float32") -> None:
        self.dtype = dtype

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> PixelFeatures:
        """Record the row length; ``X`` is only validated.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts.
        y : None
            Ignored.

        Returns
        -------
        self : PixelFeatures
            The fitted transformer.
        """
        self.n_features_out_ = int(self._flatten(X).shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Flatten images to rows of pixel values in [0, 1].

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts; all of one size.

        Returns
        -------
        ndarray of shape (n_images, ``n_features_out_``)
            The pixel values.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        out = self._flatten(X)
        if out.shape[1] != self.n_features_out_:
            raise ValueError(
                f"X has {out.shape[1]} pixel values per image, but PixelFeatures was fitted "
                f"on images with {self.n_features_out_}."
            )
        return out

    def _flatten(self, X: Any) -> np.ndarray:
        images = check_images(X)
        if images.kind == "array":
            data = images.data
        elif images.kind == "tensor":
            data = images.data.cpu().numpy()
        else:  # PIL images or files: loaded as (n, 3, H, W) floats in [0, 1]
            data = images.load(slice(None)).numpy()
        flat = np.asarray(data).reshape(len(images), -1)
        if flat.dtype == np.uint8:
            return flat.astype(self.dtype) / np.asarray(255.0, dtype=self.dtype)
        return flat.astype(self.dtype, copy=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


@dataclass(frozen=True)
class _Entry:
    factory: EstimatorFactory
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_estimator(
    name: str,
    factory: EstimatorFactory,
    *,
    description: str = "",
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
    overwrite : bool, default=False
        Replace an estimator already registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is malformed, or taken and ``overwrite`` is False.
    TypeError
        If ``factory`` is not callable.

    See Also
    --------
    make_estimator : Build a registered estimator.

    Examples
    --------
    >>> from ssad.benchmarks import register_estimator, make_estimator
    >>> from ssad.scoring import KNNScorer
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.benchmarks import PixelFeatures
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
    _REGISTRY[name] = _Entry(factory, description)


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

    See Also
    --------
    register_estimator : Add a name.

    Examples
    --------
    >>> from ssad.benchmarks import make_estimator
    >>> make_estimator("knn-pixels", {"knn__n_neighbors": 3})[-1].n_neighbors
    3
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown estimator {name!r}; registered estimators: {sorted(_REGISTRY)}.")
    factory = _REGISTRY[name].factory
    est = factory(random_state=random_state) if _takes_random_state(factory) else factory()
    if params:
        est.set_params(**params)
    return est


# -- the built-in estimators ---------------------------------------------------------------


def _knn_pixels() -> Pipeline:
    return Pipeline([("pixels", PixelFeatures()), ("knn", KNNScorer(n_neighbors=2))])


def _iforest_pixels(random_state: int | None = None) -> Pipeline:
    return Pipeline(
        [("pixels", PixelFeatures()), ("iforest", IsolationForest(random_state=random_state))]
    )


def _gaussian_pixels() -> Pipeline:
    return Pipeline([("pixels", PixelFeatures()), ("gaussian", GaussianScorer())])


def _efficientnet_features() -> Any:
    from ssad.backbones import efficientnet_lite0_checkpoint
    from ssad.features import TimmFeatures

    return TimmFeatures(
        "tf_efficientnet_lite0",
        pretrained=False,
        checkpoint_path=str(efficientnet_lite0_checkpoint()),
        pooling="mean",
    )


def _efficientnet_knn() -> Pipeline:
    return Pipeline([("features", _efficientnet_features()), ("knn", KNNScorer(n_neighbors=2))])


def _efficientnet_gaussian() -> Pipeline:
    return Pipeline([("features", _efficientnet_features()), ("gaussian", GaussianScorer())])


def _dino_knn() -> Pipeline:
    from ssad.features import DINOFeatures

    return Pipeline([("features", DINOFeatures()), ("knn", KNNScorer(n_neighbors=2))])


def _transformaly(random_state: int | None = None) -> Any:
    from ssad.detectors import TransformalyDetector

    return TransformalyDetector(random_state=random_state)


def _transformaly_efficientnet(random_state: int | None = None) -> Any:
    from ssad.backbones import efficientnet_lite0_checkpoint
    from ssad.detectors import TransformalyDetector

    return TransformalyDetector(
        "tf_efficientnet_lite0",
        pretrained=False,
        checkpoint_path=str(efficientnet_lite0_checkpoint()),
        n_student_blocks=3,
        random_state=random_state,
    )


register_estimator("knn-pixels", _knn_pixels, description="kNN (k=2, faiss) on raw pixels")
register_estimator(
    "iforest-pixels", _iforest_pixels, description="scikit-learn IsolationForest on raw pixels"
)
register_estimator(
    "gaussian-pixels",
    _gaussian_pixels,
    description="Gaussian (PCA 90% variance, whitened) on raw pixels",
)
register_estimator(
    "efficientnet-knn",
    _efficientnet_knn,
    description="EfficientNet-Lite0 ImageNet features (mean pooled) + kNN (k=2); offline weights",
)
register_estimator(
    "efficientnet-gaussian",
    _efficientnet_gaussian,
    description="EfficientNet-Lite0 ImageNet features (mean pooled) + Gaussian; offline weights",
)
register_estimator(
    "dino-knn",
    _dino_knn,
    description="DINO ViT-S/16 class token + kNN (k=2); needs the timm weights",
)
register_estimator(
    "transformaly",
    _transformaly,
    description="TransformalyDetector with the paper's ViT-B/16; needs the timm weights",
)
register_estimator(
    "transformaly-efficientnet",
    _transformaly_efficientnet,
    description="TransformalyDetector, EfficientNet-Lite0 teacher, 3 students; offline weights",
)


def _self_distill(random_state: int | None = None) -> Any:
    from ssad.detectors import SelfDistillNegDetector

    return SelfDistillNegDetector(random_state=random_state)


def _convex_mil(random_state: int | None = None) -> Any:
    from ssad.detectors import ConvexMILDetector

    return ConvexMILDetector(random_state=random_state)


register_estimator(
    "self-distill",
    _self_distill,
    description="SelfDistillNegDetector (ViT-S/16 from scratch, rotation negatives)",
)
register_estimator(
    "convex-mil",
    _convex_mil,
    description="ConvexMILDetector (ResNet-18 from scratch)",
)
