"""Gaussian-mixture outlier filter and the meta-estimator that fits on filtered rows."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ssad.base import BaseDetector
from ssad.scoring._kmeans import _MAX_SEED, _convergence_warnings_to_log, _n_distinct_rows

__all__ = ["FilteredFit", "GMMOutlierFilter"]

logger = logging.getLogger(__name__)

_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class GMMOutlierFilter(BaseDetector):
    """Gaussian-mixture outlier detector selected by BIC or AIC, used to clean training sets.

    A :class:`sklearn.mixture.GaussianMixture` is fitted for every pair of
    number of components and covariance type in a grid; the one with the lowest
    information criterion (BIC or AIC) is kept.  A sample's score is its
    log-likelihood under that mixture, and the ``contamination`` share of
    training samples with the lowest likelihood are outliers.  :meth:`filter`
    returns the rows predicted as inliers, and :class:`FilteredFit` fits
    another detector on them.

    Parameters
    ----------
    max_components : int, default=10
        The grid of numbers of components is 1, ..., ``max_components``.
        Ignored when ``n_components`` is given.
    n_components : int, sequence of int or None, default=None
        Explicit numbers of components to try instead of
        ``range(1, max_components + 1)``.
    covariance_types : str or sequence of {"full", "tied", "diag", "spherical"}, \
            default=("full", "spherical")
        Covariance types to try (see :class:`sklearn.mixture.GaussianMixture`).
    criterion : {"bic", "aic"}, default="bic"
        Information criterion that picks the mixture (lower is better).
    reg_covar : float >= 0, default=1e-6
        Added to the diagonal of every covariance matrix.
    n_init : int >= 1, default=1
        EM initialisations per grid point; the best one is kept.
    max_iter : int >= 1, default=100
        EM iterations per initialisation.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Share of training samples flagged as outliers; sets ``offset_``
        (``"auto"`` = 0.1).
    random_state : int, RandomState instance or None, default=None
        Seeds each mixture's initialisation through a local generator; pass an
        int for reproducible results.

    Attributes
    ----------
    gmm_ : sklearn.mixture.GaussianMixture
        The mixture with the lowest criterion.
    n_components_ : int
        Number of components of ``gmm_``.
    covariance_type_ : str
        Covariance type of ``gmm_``.
    criteria_ : dict of ndarray
        One entry per grid point that was fitted, in the order covariance type
        (outer) by number of components (inner), as columns of equal length:
        ``"n_components"`` (int), ``"covariance_type"`` (str), ``"bic"``,
        ``"aic"`` (float) and ``"converged"`` (bool).  ``pandas.DataFrame(
        criteria_)`` turns it into a table; plot ``criteria_["bic"]`` against
        ``criteria_["n_components"]`` per covariance type to see the choice.
        Numbers of components above the number of distinct training rows are
        left out of the grid; a mixture whose fit fails (a component collapsed
        onto too few points) gets infinite criteria and is never chosen.
    best_index_ : int
        Row of ``criteria_`` that holds ``gmm_``.
    n_iter_ : int
        EM iterations of the best initialisation of ``gmm_``.
    converged_ : bool
        Whether ``gmm_`` converged within ``max_iter`` iterations.
    inlier_mask_ : ndarray of shape (n_samples,), dtype bool
        ``True`` for the training samples predicted as inliers (score
        ``>= offset_``).
    offset_ : float
        Threshold on ``score_samples``: training samples below it (a share
        ``contamination`` of them) are predicted as outliers.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during ``fit``; only set when ``X`` has string
        column names.

    See Also
    --------
    FilteredFit : Fit a detector on the training rows this filter keeps.
    ssad.scoring.KMeansScorer : The scorer the thesis fits on the cleaned data.
    sklearn.mixture.GaussianMixture : The mixture model used here.

    Notes
    -----
    This is the GMM stage of Gasoyan (sections 4.4-4.7): on PCA-reduced (100
    dimensions) self-supervised embeddings, Gaussian mixtures with several
    numbers of components and covariance types are compared by AIC and BIC,
    the chosen mixture's log-likelihood flags the least likely training images
    as outliers, and K-means is fitted again on the remaining ones (use
    ``FilteredFit(GMMOutlierFilter(), KMeansScorer())`` for that).

    Deviations from the reference code: it fixes the number of components and
    the covariance type by hand and drops the 6 % least likely samples; here
    both are selected automatically over the grid, and the share dropped is
    ``contamination`` (set ``contamination=0.06`` to match).  Mixtures that do
    not converge within ``max_iter`` are kept in the grid (their criterion is
    still valid for the parameters reached), marked in
    ``criteria_["converged"]`` and logged rather than warned about.

    References
    ----------
    .. [1] H. Gasoyan, "Anomaly detection with self-supervised learning",
       MSc thesis; code: https://github.com/h-gasoyan/Self-supervised-learning-for-anomaly-detection
    .. [2] G. Schwarz, "Estimating the dimension of a model", The Annals of
       Statistics 6(2), 1978 (BIC).
    .. [3] H. Akaike, "A new look at the statistical model identification",
       IEEE Transactions on Automatic Control 19(6), 1974 (AIC).

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import GMMOutlierFilter
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (95, 2)), rng.normal(0, 1, (95, 2)) + 10,
    ...                rng.uniform(-40, 40, (10, 2))])
    >>> gmm = GMMOutlierFilter(max_components=4, contamination=0.05, random_state=0).fit(X)
    >>> np.flatnonzero(~gmm.inlier_mask_)  # the 10 uniform outliers
    array([190, 191, 192, 193, 194, 195, 196, 197, 198, 199])
    >>> gmm.filter(X).shape
    (190, 2)
    >>> len(gmm.criteria_["bic"])  # 4 numbers of components x 2 covariance types
    8
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "max_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_components": [None, Interval(numbers.Integral, 1, None, closed="left"), "array-like"],
        "covariance_types": [StrOptions(set(_COVARIANCE_TYPES)), "array-like"],
        "criterion": [StrOptions({"bic", "aic"})],
        "reg_covar": [Interval(numbers.Real, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        max_components: int = 10,
        *,
        n_components: int | Sequence[int] | None = None,
        covariance_types: str | Sequence[str] = ("full", "spherical"),
        criterion: str = "bic",
        reg_covar: float = 1e-6,
        n_init: int = 1,
        max_iter: int = 100,
        contamination: str | float = "auto",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.max_components = max_components
        self.n_components = n_components
        self.covariance_types = covariance_types
        self.criterion = criterion
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.max_iter = max_iter
        self.contamination = contamination
        self.random_state = random_state

    # -- grid -------------------------------------------------------------------
    def _component_grid(self) -> list[int]:
        if self.n_components is None:
            return list(range(1, self.max_components + 1))
        values = np.atleast_1d(np.asarray(self.n_components)).reshape(-1).tolist()
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise ValueError(
                f"The 'n_components' parameter of {type(self).__name__} must be None, an int "
                f">= 1 or a non-empty sequence of ints >= 1. Got {self.n_components!r} instead."
            )
        return sorted(set(values))

    def _covariance_grid(self) -> list[str]:
        types = (
            [self.covariance_types]
            if isinstance(self.covariance_types, str)
            else list(self.covariance_types)
        )
        if not types or any(t not in _COVARIANCE_TYPES for t in types):
            raise ValueError(
                f"The 'covariance_types' parameter of {type(self).__name__} must be one of "
                f"{_COVARIANCE_TYPES} or a non-empty sequence of them. "
                f"Got {self.covariance_types!r} instead."
            )
        return list(dict.fromkeys(types))  # drop repeats, keep order

    # -- the contract -------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GMMOutlierFilter:
        """Fit the mixtures of the grid, keep the best, and set ``inlier_mask_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : GMMOutlierFilter
            The fitted filter.
        """
        super().fit(X, y)
        self.inlier_mask_ = self.predict(X) == 1
        return self

    def _fit(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)  # EM on float32 embeddings can break down
        n_samples = X.shape[0]
        if n_samples < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples; got n_samples={n_samples}."
            )
        components = self._component_grid()
        cov_types = self._covariance_grid()
        n_distinct = _n_distinct_rows(X, max(components))
        kept = [k for k in components if k <= n_distinct]
        if not kept:
            raise ValueError(
                f"n_samples={n_samples} ({n_distinct} distinct) should be >= "
                f"n_components={min(components)} for {type(self).__name__}."
            )
        if len(kept) < len(components):
            logger.info(
                "Leaving n_components > %d out of the grid: the training data hold only %d "
                "distinct rows.",
                n_distinct,
                n_distinct,
            )

        rng = check_random_state(self.random_state)
        grid = [(k, cov) for cov in cov_types for k in kept]
        seeds = rng.randint(_MAX_SEED, size=len(grid))
        models: list[GaussianMixture | None] = []
        bic, aic, converged = [], [], []
        for (k, cov), seed in zip(grid, seeds):
            gmm = GaussianMixture(
                n_components=k,
                covariance_type=cov,
                reg_covar=self.reg_covar,
                n_init=self.n_init,
                max_iter=self.max_iter,
                random_state=int(seed),
            )
            try:
                with _convergence_warnings_to_log(f"GaussianMixture({k}, {cov!r})"):
                    gmm.fit(X)
            except ValueError as exc:  # a component collapsed onto too few points
                logger.info("GaussianMixture(%d, %r) left out of the grid: %s", k, cov, exc)
                models.append(None)
                bic.append(np.inf)
                aic.append(np.inf)
                converged.append(False)
                continue
            models.append(gmm)
            bic.append(gmm.bic(X))
            aic.append(gmm.aic(X))
            converged.append(bool(gmm.converged_))

        self.criteria_ = {
            "n_components": np.array([k for k, _ in grid], dtype=int),
            "covariance_type": np.array([cov for _, cov in grid], dtype=str),
            "bic": np.array(bic, dtype=np.float64),
            "aic": np.array(aic, dtype=np.float64),
            "converged": np.array(converged, dtype=bool),
        }
        values = self.criteria_[self.criterion]
        if not np.any(np.isfinite(values)):
            raise FloatingPointError(
                f"No mixture of the grid has a finite {self.criterion.upper()}; the input holds "
                "values too large or too close to each other, or every mixture collapsed "
                "(increase reg_covar)."
            )
        self.best_index_ = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
        best = models[self.best_index_]
        assert best is not None  # a mixture that failed has an infinite criterion
        self.gmm_ = best
        self.n_components_ = int(self.gmm_.n_components)
        self.covariance_type_ = str(self.gmm_.covariance_type)
        self.n_iter_ = int(self.gmm_.n_iter_)
        self.converged_ = bool(self.gmm_.converged_)
        if not self.converged_:
            logger.warning(
                "The selected GaussianMixture(n_components=%d, covariance_type=%r) did not "
                "converge in max_iter=%d iterations; consider increasing max_iter.",
                self.n_components_,
                self.covariance_type_,
                self.max_iter,
            )
        logger.debug(
            "%s picked n_components=%d, covariance_type=%r (%s=%.6g).",
            type(self).__name__,
            self.n_components_,
            self.covariance_type_,
            self.criterion,
            values[self.best_index_],
        )
        return self._score_samples(X)

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.gmm_.score_samples(X)

    def filter(self, X: Any) -> Any:
        """Return the rows of ``X`` predicted as inliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to filter.

        Returns
        -------
        X_inliers : array-like of shape (n_inliers, n_features)
            The rows of ``X`` (same container type) whose score is at least
            ``offset_``.
        """
        check_is_fitted(self)
        keep = np.flatnonzero(self.predict(X) == 1)
        return _safe_indexing(X, keep)


class FilteredFit(BaseDetector):
    """Fit a detector on the training rows that an outlier filter keeps.

    ``fit`` fits a clone of ``filter`` on ``X``, drops the rows it predicts as
    outliers, and fits a clone of ``estimator`` on the rest.  Scoring is the
    fitted ``estimator``'s.  ``fit(X, X_filter=F)`` lets the filter judge the
    training samples on other features ``F`` (one row per row of ``X``) than
    those the estimator is fitted on, e.g. the untrained features of a
    network whose training has drawn the outliers towards the normal data.

    This is a meta-estimator rather than a pipeline step because scikit-learn
    transformers cannot drop rows: a :class:`sklearn.pipeline.Pipeline` passes
    every sample through every step, so removing outliers from the training
    set has to happen inside ``fit``.  At prediction time nothing is filtered:
    every sample gets the downstream estimator's score.

    Parameters
    ----------
    filter : outlier detector or None, default=None
        Estimator with ``fit`` and ``predict`` (+1 inlier, -1 outlier) that
        cleans the training set; ``None`` uses :class:`GMMOutlierFilter` with
        its defaults.  An ssad detector drops the training rows whose
        ``train_scores_`` fall below its ``offset_`` (a share
        ``contamination`` of them; leave-one-out for :class:`KNNScorer`).
    estimator : outlier detector
        The downstream detector (``fit`` and ``score_samples``), fitted on the
        kept rows.  Required; it defaults to ``None`` only so that ``filter``
        can come first, and ``fit`` raises if it is missing.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; sets ``offset_`` from
        the downstream scores of the full training set (``"auto"`` = 0.1).

    Attributes
    ----------
    filter_ : estimator
        The fitted clone of ``filter``.
    estimator_ : estimator
        The clone of ``estimator`` fitted on the kept rows.
    n_filtered_ : int
        Number of training rows the filter removed.
    inlier_mask_ : ndarray of shape (n_samples,), dtype bool
        The training rows kept.
    offset_ : float
        Threshold on ``score_samples``, the ``contamination`` quantile of the
        training scores of all training rows (filtered ones included): the
        downstream scores, or for the kept rows the downstream estimator's
        own ``train_scores_`` where it has them (leave-one-out for
        :class:`KNNScorer`).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during ``fit``; only set when ``X`` has string
        column names.

    See Also
    --------
    GMMOutlierFilter : The default filter.
    ssad.scoring.KMeansScorer : The downstream scorer of the thesis.

    Notes
    -----
    ``FilteredFit(GMMOutlierFilter(), KMeansScorer())`` is the last stage of
    Gasoyan (sections 4.4-4.7): a BIC/AIC-selected Gaussian mixture removes
    the least likely training embeddings, and K-means is fitted again on the
    cleaned data; the anomaly score is the distance to the nearest centroid.
    With PCA in front: ``make_pipeline(PCA(100), FilteredFit(GMMOutlierFilter(),
    KMeansScorer()))``.  The reference code fits everything on training and
    test data together; here only training data are used.

    References
    ----------
    .. [1] H. Gasoyan, "Anomaly detection with self-supervised learning",
       MSc thesis; code: https://github.com/h-gasoyan/Self-supervised-learning-for-anomaly-detection

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import FilteredFit, GMMOutlierFilter, KMeansScorer
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (95, 2)), rng.normal(0, 1, (95, 2)) + 10,
    ...                rng.uniform(-40, 40, (10, 2))])
    >>> model = FilteredFit(
    ...     GMMOutlierFilter(max_components=4, contamination=0.05, random_state=0),
    ...     KMeansScorer(max_clusters=5, random_state=0),
    ... ).fit(X)
    >>> model.n_filtered_, model.estimator_.n_clusters_
    (10, 2)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "filter": [HasMethods(["fit", "predict"]), None],
        "estimator": [HasMethods(["fit", "score_samples"]), None],
    }

    def __init__(
        self,
        filter: Any = None,
        estimator: Any = None,
        *,
        contamination: str | float = "auto",
    ) -> None:
        self.filter = filter
        self.estimator = estimator
        self.contamination = contamination

    def fit(self, X: Any, y: Any = None, X_filter: Any = None) -> FilteredFit:
        """Fit the filter, then the estimator on the training rows the filter keeps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data of the estimator (and of the filter, unless
            ``X_filter`` is given).
        y : None
            Ignored; present for API consistency.
        X_filter : array-like of shape (n_samples, n_filter_features), optional
            The features the filter judges the training samples on, one row
            per row of ``X``; default ``X``.

        Returns
        -------
        self : FilteredFit
            The fitted meta-estimator.
        """
        if X_filter is None:
            return super().fit(X)
        return super().fit(X, X_filter=X_filter)

    def _fit(self, X: np.ndarray, X_filter: Any = None) -> np.ndarray:
        if self.estimator is None:
            raise ValueError(
                f"{type(self).__name__} needs a downstream 'estimator' (e.g. KMeansScorer()); "
                "got None."
            )
        if X_filter is None:
            X_filter = X
        else:
            X_filter = check_array(X_filter, dtype=[np.float64, np.float32])
            if X_filter.shape[0] != X.shape[0]:
                raise ValueError(
                    f"X_filter must have one row per training sample: X has {X.shape[0]} rows, "
                    f"X_filter {X_filter.shape[0]}."
                )
        self.filter_ = clone(self.filter if self.filter is not None else GMMOutlierFilter())
        self.filter_.fit(X_filter)
        if hasattr(self.filter_, "train_scores_") and hasattr(self.filter_, "offset_"):
            # an ssad detector: its training outliers are those of its own training scores
            # (leave-one-out for KNNScorer), not of predict(X), where each row is its own
            # nearest neighbour
            keep = self.filter_.train_scores_ >= self.filter_.offset_
        else:
            keep = np.asarray(self.filter_.predict(X_filter)) == 1
        n_kept = int(np.sum(keep))
        if n_kept == 0:
            raise ValueError(
                f"The filter {self.filter_!r} predicted every one of the {X.shape[0]} training "
                "samples as an outlier; nothing is left to fit the estimator on."
            )
        self.n_filtered_ = int(X.shape[0] - n_kept)
        logger.info(
            "%s: the filter removed %d of %d training samples.",
            type(self).__name__,
            self.n_filtered_,
            X.shape[0],
        )
        self.estimator_ = clone(self.estimator).fit(X[keep])
        self.inlier_mask_ = keep
        scores = np.asarray(self._score_samples(X), dtype=np.float64)
        kept_scores = getattr(self.estimator_, "train_scores_", None)
        if kept_scores is not None:  # e.g. leave-one-out scores of a kNN for the kept rows
            scores[keep] = kept_scores
        return scores

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.estimator_.score_samples(X)
