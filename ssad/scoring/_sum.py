"""Sum of scorers, each on its own columns: several feature spaces combined into one score."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ssad.base import BaseDetector

__all__ = ["SumScorer"]


class SumScorer(BaseDetector):
    """Adds the scores of several scorers, each fitted on its own block of columns.

    The 2-D counterpart of :class:`sklearn.compose.ColumnTransformer` for
    outlier scores: with ``scorers=[(name, scorer, columns), ...]`` each
    scorer is cloned and fitted on ``X[:, columns]``, and

    ``score_samples(X) = sum_i w_i * (s_i(X[:, columns_i]) - m_i)``

    where ``m_i = 0, w_i = 1`` without standardisation (the sum of
    log-likelihoods of independent spaces, e.g. Transformaly's two Gaussians)
    and, with ``standardize=True``, ``m_i`` and ``1 / w_i`` are the mean and
    standard deviation of the part's training scores, so parts of different
    scales (kNN distances, log-densities) count alike.

    Parameters
    ----------
    scorers : list of (str, estimator, columns)
        Names, unfitted scorers (anything with ``fit`` and ``score_samples``;
        ssad scorers also give leave-one-out ``train_scores_``), and the
        columns each one sees: a slice, or a sequence of int indices.
    standardize : bool, default=False
        Put every part on the scale of its training scores (see above).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``; see :class:`~ssad.base.BaseDetector`.

    Attributes
    ----------
    scorers_ : list of (str, estimator, columns)
        The fitted scorers.
    part_means_, part_scales_ : ndarray of shape (n_parts,)
        ``m_i`` and ``1 / w_i`` (0 and 1 without standardisation).
    n_features_in_ : int
        Number of columns seen during ``fit``.
    offset_ : float
        Threshold on ``score_samples``.

    See Also
    --------
    ssad.TransformalyDetector : Sums a pretrained and a fine-tuned space.

    Notes
    -----
    The training scores of each part are its scorer's ``train_scores_`` when
    it has them (leave-one-out for :class:`~ssad.scoring.KNNScorer`), else its
    ``score_samples`` on the training columns.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import GaussianScorer, KNNScorer, SumScorer
    >>> X = np.random.default_rng(0).normal(size=(100, 4))
    >>> scorer = SumScorer([("a", GaussianScorer(variance=None), slice(0, 2)),
    ...                     ("b", KNNScorer(), slice(2, 4))], standardize=True).fit(X)
    >>> sorted(scorer.score_parts(X[:3]))
    ['a', 'b']
    >>> scorer.score_samples(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "scorers": [list],
        "standardize": ["boolean"],
    }

    def __init__(
        self,
        scorers: list[tuple[str, Any, Any]],
        *,
        standardize: bool = False,
        contamination: str | float = "auto",
    ) -> None:
        super().__init__(contamination=contamination)
        self.scorers = scorers
        self.standardize = standardize

    def _fit(self, X: np.ndarray) -> np.ndarray:
        if not self.scorers or any(len(item) != 3 for item in self.scorers):
            raise ValueError(
                "The 'scorers' parameter of SumScorer must be a non-empty list of "
                f"(name, scorer, columns) triples. Got {self.scorers!r} instead."
            )
        names = [item[0] for item in self.scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"The parts of SumScorer need distinct names; got {names!r}.")
        self.scorers_ = []
        means, scales, total = [], [], np.zeros(X.shape[0])
        for name, scorer, columns in self.scorers:
            if X[:1, columns].shape[1] == 0:
                raise ValueError(
                    f"The columns of part {name!r} select no feature of X "
                    f"(n_features={X.shape[1]}); check the (name, scorer, columns) triples."
                )
            fitted = clone(scorer).fit(X[:, columns])
            train = getattr(fitted, "train_scores_", None)
            if train is None:
                train = fitted.score_samples(X[:, columns])
            train = np.asarray(train, dtype=np.float64)
            mean, scale = 0.0, 1.0
            if self.standardize:
                mean, scale = float(train.mean()), float(train.std())
                scale = scale if scale > 0 else 1.0
            self.scorers_.append((name, fitted, columns))
            means.append(mean)
            scales.append(scale)
            total += (train - mean) / scale
        self.part_means_ = np.asarray(means)
        self.part_scales_ = np.asarray(scales)
        return total

    def _parts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(scorer.score_samples(X[:, columns]), dtype=np.float64)
            for name, scorer, columns in self.scorers_
        }

    def score_parts(self, X: Any) -> dict[str, np.ndarray]:
        """The raw score of each part (before standardisation).

        Parameters
        ----------
        X : array-like of shape (n_samples, ``n_features_in_``)
            Samples to score.

        Returns
        -------
        dict of str to ndarray of shape (n_samples,)
            ``score_samples`` of each fitted scorer on its columns.
        """
        check_is_fitted(self)
        return self._parts(self._validate_input(X, reset=False))

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        parts = self._parts(X)
        total = np.zeros(X.shape[0])
        for (name, _, _), mean, scale in zip(self.scorers_, self.part_means_, self.part_scales_):
            total += (parts[name] - mean) / scale
        return total
