"""The Gasoyan thesis pipeline: features -> PCA -> K-means score, before and after GMM filtering."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline

from ssad.scoring import FilteredFit, GMMOutlierFilter, KMeansScorer

__all__ = ["make_thesis_pipeline", "thesis_scores"]


def _pca(n_components: int, random_state: Any) -> PCA:
    return PCA(n_components=n_components, random_state=random_state)


def _kmeans(max_clusters: int, random_state: Any) -> KMeansScorer:
    return KMeansScorer(n_clusters="elbow", max_clusters=max_clusters, random_state=random_state)


def _filter(max_components: int, filter_contamination: Any, random_state: Any) -> GMMOutlierFilter:
    return GMMOutlierFilter(
        max_components=max_components,
        contamination=filter_contamination,
        random_state=random_state,
    )


def make_thesis_pipeline(
    features: Any = None,
    *,
    n_components: int = 100,
    filter_outliers: bool = True,
    max_clusters: int = 10,
    max_components: int = 10,
    filter_contamination: str | float = "auto",
    random_state: Any = None,
) -> Pipeline:
    """The detection pipeline of the Gasoyan thesis (sections 4.4-4.7) as one estimator.

    ``[features ->] PCA(n_components) -> K-means score``; with
    ``filter_outliers=True`` the K-means step is fitted only on the training
    rows a :class:`~ssad.GMMOutlierFilter` (grid over components and
    covariance types, chosen by BIC) keeps.

    Parameters
    ----------
    features : transformer, default=None
        Image feature extractor; the thesis flattens every output token of
        its best model, ``DINOFeatures(pooling="tokens")`` (or
        ``MAEFeatures(pooling="tokens")``).  ``None`` for inputs that are
        embeddings already.
    n_components : int, default=100
        PCA dimension (the thesis uses 100).
    filter_outliers : bool, default=True
        Fit K-means after GMM filtering of the training set.
    max_clusters : int, default=10
        Largest K of the elbow search of :class:`~ssad.KMeansScorer`.
    max_components : int, default=10
        Largest number of mixture components of the filter's grid.
    filter_contamination : "auto" or float, default="auto"
        Share of training rows the filter removes (``"auto"`` = 0.1).
    random_state : int, RandomState or None, default=None
        Seeds PCA, K-means and the mixtures.

    Returns
    -------
    sklearn.pipeline.Pipeline
        An unfitted pipeline whose last step is a detector.

    See Also
    --------
    thesis_scores : both variants from one feature extraction.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.detectors import make_thesis_pipeline
    >>> X = np.random.default_rng(0).normal(size=(200, 20))
    >>> pipe = make_thesis_pipeline(n_components=5, max_components=2, random_state=0).fit(X)
    >>> pipe.score_samples(X[:3]).shape
    (3,)
    """
    detector: Any = _kmeans(max_clusters, random_state)
    if filter_outliers:
        detector = FilteredFit(
            _filter(max_components, filter_contamination, random_state), detector
        )
    steps: list[tuple[str, Any]] = [] if features is None else [("features", features)]
    steps += [("pca", _pca(n_components, random_state)), ("detector", detector)]
    return Pipeline(steps)


def thesis_scores(
    X_train: Any,
    X_test: Any,
    features: Any = None,
    *,
    n_components: int = 100,
    max_clusters: int = 10,
    max_components: int = 10,
    filter_contamination: str | float = "auto",
    random_state: Any = None,
) -> dict[str, Any]:
    """Scores of the thesis pipeline before and after GMM filtering, in one call.

    The features and the PCA are computed once and shared by both variants,
    so the comparison of the thesis' table 1 costs one feature extraction.

    Parameters
    ----------
    X_train, X_test : images or array-like
        Training and test inputs (images when ``features`` is given).
    features : transformer, default=None
        Image feature extractor; ``None`` when the inputs are embeddings.
    n_components, max_clusters, max_components, filter_contamination, random_state
        As in :func:`make_thesis_pipeline`.

    Returns
    -------
    dict
        ``"kmeans"`` and ``"gmm_filtered_kmeans"``: float64 test scores
        (higher = more normal); ``"n_filtered"``: training rows removed;
        ``"n_clusters"``: K before and after filtering; ``"filter"``: the
        fitted :class:`~ssad.GMMOutlierFilter`.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.detectors import thesis_scores
    >>> rng = np.random.default_rng(0)
    >>> out = thesis_scores(rng.normal(size=(200, 20)), rng.normal(size=(10, 20)),
    ...                     n_components=5, max_components=2, random_state=0)
    >>> out["kmeans"].shape, out["gmm_filtered_kmeans"].shape
    ((10,), (10,))
    """
    if features is not None:
        features = clone(features).fit(X_train)
        Z_train, Z_test = features.transform(X_train), features.transform(X_test)
    else:
        Z_train, Z_test = np.asarray(X_train), np.asarray(X_test)
    pca = _pca(n_components, random_state).fit(Z_train)
    P_train, P_test = pca.transform(Z_train), pca.transform(Z_test)
    plain = _kmeans(max_clusters, random_state).fit(P_train)
    filtered = FilteredFit(
        _filter(max_components, filter_contamination, random_state),
        _kmeans(max_clusters, random_state),
    ).fit(P_train)
    return {
        "kmeans": plain.score_samples(P_test),
        "gmm_filtered_kmeans": filtered.score_samples(P_test),
        "n_filtered": int(filtered.n_filtered_),
        "n_clusters": (int(plain.n_clusters_), int(filtered.estimator_.n_clusters_)),
        "filter": filtered.filter_,
    }
