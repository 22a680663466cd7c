"""Gaussian scorer: optional PCA whitening, then a full-covariance Gaussian log-likelihood."""

from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
from scipy import linalg
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ssad.base import BaseDetector

__all__ = ["GaussianScorer"]

logger = logging.getLogger(__name__)


class GaussianScorer(BaseDetector):
    """Outlier scores from a single Gaussian: the log-density of each sample.

    The training embeddings are (optionally) reduced and whitened with PCA,
    keeping the smallest number of components that explains more than
    ``variance`` of the variance; a Gaussian with full covariance is then
    fitted by maximum likelihood in that space.  ``score_samples`` is the
    Gaussian log-density of each sample, so points in the dense part of the
    training distribution are normal and points far from it are outliers.

    Parameters
    ----------
    variance : float in (0, 1] or None, default=0.9
        Share of the training variance kept by the PCA.  ``1.0`` keeps every
        component of non-zero variance (the rank of the centred training data);
        ``None`` skips the PCA and fits the Gaussian to the raw features.
    whiten : bool, default=True
        Whiten the PCA components (unit variance), as Transformaly does.
        Ignored when ``variance=None``.
    reg_covar : float >= 0, default=1e-6
        Regularisation of the covariance, relative to the scale of the data:
        ``reg_covar`` times the mean variance (``trace / n_components`` of the
        covariance) is added to its diagonal, so that it stays positive
        definite for constant features or fewer samples than features, and the
        scores rank the samples the same way whatever the unit of the
        features.  On whitened PCA components the mean variance is about 1,
        which gives the absolute ``1e-6`` of
        :class:`sklearn.mixture.GaussianMixture`'s default.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; sets ``offset_``
        (``"auto"`` = 0.1).

    Attributes
    ----------
    pca_ : sklearn.decomposition.PCA or None
        The fitted PCA, or ``None`` when ``variance=None``.
    location_ : ndarray of shape (n_components,)
        Mean of the Gaussian in the (reduced) space; ``n_components`` is
        ``pca_.n_components_``, or ``n_features_in_`` without PCA.
    covariance_ : ndarray of shape (n_components, n_components)
        Maximum-likelihood covariance of the Gaussian, ``reg_covar_`` included.
    reg_covar_ : float
        The value added to the diagonal of the covariance: ``reg_covar``
        times the mean variance of the training data in the Gaussian's space
        (times 1 when that variance is 0, e.g. for a single training sample).
    precision_cholesky_ : ndarray of shape (n_components, n_components)
        Upper-triangular factor ``U`` of the precision matrix,
        ``inv(covariance_) = U @ U.T`` (as in
        :class:`sklearn.mixture.GaussianMixture`).
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
    sklearn.covariance.EllipticEnvelope : Robust Gaussian on the raw features.
    sklearn.mixture.GaussianMixture : Mixture of Gaussians; Transformaly fits one
        component of it.
    ssad.scoring.KNNScorer : Non-parametric alternative on the same embeddings.

    Notes
    -----
    ``score_samples(X) = -0.5 * mahalanobis(X) + c`` with the normalising
    constant ``c = -0.5 * (k log(2 pi) + log det covariance_)``, where ``k`` is
    the dimension of the reduced space; the ranking of the samples is the
    ranking of their Mahalanobis distances.  The density is that of the
    reduced space: it ignores the Jacobian of the PCA, which is the same for
    every sample.

    This is the scorer of Transformaly [1]_: PCA whitening that keeps 90 % of
    the variance, then the log-likelihood under one Gaussian (the reference
    code fits ``GaussianMixture(n_components=1)`` with its default
    ``reg_covar=1e-6``; the covariance here is the same maximum-likelihood
    estimate).  Deviation from the reference code: it keeps one component
    fewer than needed to exceed the variance threshold (an off-by-one in its
    loop); here the number of components follows scikit-learn's rule for a
    float ``n_components``, the smallest number whose explained variance
    exceeds ``variance``.

    The regularisation is relative (``reg_covar_ = reg_covar * trace(C) / k``
    for the maximum-likelihood covariance ``C``): with a fixed amount, as in
    :class:`sklearn.mixture.GaussianMixture`, the ranking of ``variance=None``
    would depend on the unit of the features (features multiplied by 1e-4
    have variances far below 1e-6, and the score degrades to a Euclidean
    distance).  Multiplying the features by a constant now moves every score
    by the same constant and keeps the ranking.

    With PCA, the training data must vary (at least two distinct samples);
    otherwise ``fit`` raises a ``ValueError``.  Use ``variance=None`` for
    degenerate training sets.

    References
    ----------
    .. [1] M. J. Cohen and S. Avidan, "Transformaly - Two (Feature Spaces) Are
       Better Than One", CVPR Workshops, 2022;
       code: https://github.com/MatanCohen1/Transformaly

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import GaussianScorer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 10))
    >>> scorer = GaussianScorer(variance=0.9).fit(X)
    >>> int(scorer.pca_.n_components_)
    4
    >>> scorer.predict(np.vstack([X[:2], X[:1] + 100.0]))
    array([ 1,  1, -1])
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "variance": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "whiten": ["boolean"],
        "reg_covar": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        variance: float | None = 0.9,
        whiten: bool = True,
        reg_covar: float = 1e-6,
        contamination: str | float = "auto",
    ) -> None:
        super().__init__(contamination=contamination)
        self.variance = variance
        self.whiten = whiten
        self.reg_covar = reg_covar

    def _fit(self, X: np.ndarray) -> np.ndarray:
        self.pca_ = None if self.variance is None else self._fit_pca(X, self.variance)
        Z = self._reduce(X)
        n_components = Z.shape[1]
        self.location_ = Z.mean(axis=0)
        centred = Z - self.location_
        self.covariance_ = centred.T @ centred / Z.shape[0]
        # relative to the data's scale, so that the ranking does not depend on the unit
        mean_variance = float(np.trace(self.covariance_)) / n_components
        self.reg_covar_ = self.reg_covar * (mean_variance if mean_variance > 0 else 1.0)
        self.covariance_.flat[:: n_components + 1] += self.reg_covar_
        try:
            cov_cholesky = linalg.cholesky(self.covariance_, lower=True)
        except linalg.LinAlgError as exc:
            raise ValueError(
                "The covariance of the training data is not positive definite even after "
                f"adding reg_covar * mean variance = {self.reg_covar_:g} to its diagonal "
                f"(reg_covar={self.reg_covar}); increase reg_covar."
            ) from exc
        self.precision_cholesky_ = linalg.solve_triangular(
            cov_cholesky, np.eye(n_components), lower=True
        ).T
        logger.debug("Fitted a Gaussian in %d dimensions.", n_components)
        return self._log_density(Z)

    def _fit_pca(self, X: np.ndarray, variance: float) -> PCA:
        n_samples = X.shape[0]
        if n_samples < 2 or not np.any(np.ptp(X, axis=0) > 0):
            raise ValueError(
                "GaussianScorer with PCA needs training samples that vary, but got "
                f"n_samples={n_samples} with zero total variance; use variance=None."
            )
        if variance < 1:
            n_components: float | int = float(variance)
        else:
            n_components = int(np.linalg.matrix_rank(X - X.mean(axis=0)))
        pca = PCA(n_components=n_components, whiten=self.whiten, svd_solver="full").fit(X)
        logger.info(
            "PCA keeps %d of %d components (%.3f of the variance).",
            pca.n_components_,
            X.shape[1],
            float(np.sum(pca.explained_variance_ratio_)),
        )
        return pca

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        Z = X if self.pca_ is None else self.pca_.transform(X)
        return np.asarray(Z, dtype=np.float64)

    def _mahalanobis(self, Z: np.ndarray) -> np.ndarray:
        y = (Z - self.location_) @ self.precision_cholesky_
        return np.einsum("ij,ij->i", y, y)

    def _log_density(self, Z: np.ndarray) -> np.ndarray:
        n_components = Z.shape[1]
        log_det_precision = 2.0 * np.sum(np.log(np.diag(self.precision_cholesky_)))
        constant = 0.5 * (log_det_precision - n_components * np.log(2.0 * np.pi))
        return constant - 0.5 * self._mahalanobis(Z)

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self._log_density(self._reduce(X))

    def mahalanobis(self, X: Any) -> np.ndarray:
        """Squared Mahalanobis distance of each sample to the fitted Gaussian.

        The distance is measured in the (reduced) space of the Gaussian, so
        ``score_samples(X) = -0.5 * mahalanobis(X) + c`` with a constant ``c``
        (see Notes of the class).

        Parameters
        ----------
        X : array-like of shape (n_samples, ``n_features_in_``)
            Samples to measure.

        Returns
        -------
        distances : ndarray of shape (n_samples,), dtype float64
            Squared Mahalanobis distances.
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return self._mahalanobis(self._reduce(X))
