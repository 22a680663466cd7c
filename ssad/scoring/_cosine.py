"""Cosine-kernel scorer: mean exponentiated cosine similarity to the training set."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval

from ssad.base import BaseDetector

from ._knn import _unit_rows

__all__ = ["CosineKernelScorer"]


class CosineKernelScorer(BaseDetector):
    """Outlier scores from a cosine kernel density over all training samples.

    A sample ``z`` scores the (log of the) mean over the training features
    ``z_i`` of ``exp((cos(z, z_i) - shift) / temperature)``: a soft
    nearest-neighbour score in which every training sample contributes, the
    closest ones most.  Samples similar to many training samples are normal.

    Parameters
    ----------
    temperature : float > 0, default=0.04
        Kernel temperature ``T``; small values make the score approach the
        similarity to the nearest training sample.  0.04 is the value of the
        paper.
    shift : float, default=0.0
        Constant subtracted from the cosine similarity before dividing by the
        temperature.  The paper uses 0 (eq. 6); the reference code uses 0.1.
        It multiplies the kernel by ``exp(-shift / T)`` and so only moves all
        scores by the constant ``-shift / T`` when ``log=True``: the ranking,
        and ``predict``, do not depend on it.
    log : bool, default=True
        Return the logarithm of the mean kernel (finite for any temperature).
        ``False`` returns the mean kernel itself, the paper's score, which
        overflows when ``(1 - shift) / T`` exceeds about 709.
    batch_size : int, default=1024
        Number of samples, and of training samples, processed at once: at most
        a ``batch_size x batch_size`` block of similarities is held in memory.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; sets ``offset_``
        (``"auto"`` = 0.1).

    Attributes
    ----------
    n_samples_fit_ : int
        Number of training samples.
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
    ssad.scoring.KNNScorer : Hard version: cosine distance to the k nearest
        training samples.

    Notes
    -----
    With ``log=True`` (default)::

        score(z) = logsumexp_i((cos(z, z_i) - shift) / T) - log(n_samples_fit_)

    the logarithm of the score of Rafiee et al. [1]_ (eq. 6), a monotone
    transform, so AUROC and every ranking are unchanged.  It is computed with
    a running log-sum-exp over blocks of test and training samples, so it is
    finite even for tiny temperatures and never holds an
    ``n_samples x n_samples_fit_`` matrix.  Features are L2-normalised inside
    (all-zero rows have similarity 0 to everything); the similarities are
    computed in float64, the normalised training features are stored in
    their input precision (float32 or float64).

    A training sample is compared with every training sample, itself
    included, so the training scores, and ``offset_``, are exactly
    ``score_samples(X_train)``.

    The reference code (``OOD_classifier``) also allows keeping only the top-k
    similarities; with its default, every training sample is used, as here.

    References
    ----------
    .. [1] N. Rafiee, R. Gholamipoor, N. Adaloglou, S. Jaxy, J. Ramakers and
       M. Kollmann, "Self-Supervised Anomaly Detection by Self-Distillation and
       Negative Sampling", ICANN, 2022;
       code: https://github.com/nimaous/SSLSDN-Anomaly-Detection

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import CosineKernelScorer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(loc=[5.0, 0.0, 0.0], size=(100, 3))
    >>> scorer = CosineKernelScorer(temperature=0.1).fit(X)
    >>> scores = scorer.score_samples([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    >>> bool(scores[0] > scores[1])
    True
    >>> scorer.predict([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "shift": [Interval(numbers.Real, None, None, closed="neither")],
        "log": ["boolean"],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        temperature: float = 0.04,
        shift: float = 0.0,
        log: bool = True,
        batch_size: int = 1024,
        contamination: str | float = "auto",
    ) -> None:
        super().__init__(contamination=contamination)
        self.temperature = temperature
        self.shift = shift
        self.log = log
        self.batch_size = batch_size

    def _fit(self, X: np.ndarray) -> None:
        self._fit_X = _unit_rows(X).astype(X.dtype, copy=False)
        self.n_samples_fit_ = X.shape[0]
        return None

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        queries = _unit_rows(np.asarray(X, dtype=np.float64))
        train = self._fit_X
        log_kernel = np.full(queries.shape[0], -np.inf)
        for rows in gen_batches(queries.shape[0], self.batch_size):
            for cols in gen_batches(train.shape[0], self.batch_size):
                block = queries[rows] @ train[cols].astype(np.float64).T
                block -= self.shift
                block /= self.temperature
                # log-sum-exp of the block's rows, in place (block sums are >= 1)
                top = block.max(axis=1)
                np.exp(block - top[:, None], out=block)
                block_lse = top + np.log(block.sum(axis=1))
                log_kernel[rows] = np.logaddexp(log_kernel[rows], block_lse)
        log_kernel -= np.log(self.n_samples_fit_)
        if self.log:
            return log_kernel
        if np.max(log_kernel, initial=-np.inf) > np.log(np.finfo(np.float64).max):
            raise FloatingPointError(
                f"The mean kernel overflows float64 for temperature={self.temperature} and "
                f"shift={self.shift}; use log=True or a larger temperature."
            )
        return np.exp(log_kernel)
