"""kNN scorer on a faiss index: normality = minus the distance to the nearest training samples."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from sklearn.preprocessing import normalize
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, StrOptions

from ssad.base import BaseDetector

__all__ = ["KNNScorer", "flat_index", "nearest_neighbors"]

logger = logging.getLogger(__name__)

_AGGREGATES: dict[str, Callable[..., np.ndarray]] = {"sum": np.sum, "mean": np.mean, "max": np.max}

#: Largest absolute value a rescaled query may have: squared distances summed over
#: up to ~10^7 features then stay below float32's maximum (3.4e38).
_MAX_SCALED = 1e15


def _power_of_two_scale(X: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Largest power of two <= max(|X|) (along ``axis``); 1 where that max is 0.

    Dividing by a power of two is exact in floating point, so rescaled data keep
    every digit and the distances are multiplied back exactly.
    """
    peak = np.max(np.abs(X), axis=axis, keepdims=axis is not None)
    _, exponent = np.frexp(peak)  # peak = m * 2**exponent with m in [0.5, 1)
    return np.where(peak > 0, np.ldexp(0.5, exponent), 1.0)


def flat_index(X: np.ndarray, metric: str = "l2") -> faiss.Index:
    """An exact faiss index (``IndexFlatL2``; ``IndexFlatIP`` for ``"ip"``) of the rows of X."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    index = faiss.IndexFlatIP(X.shape[1]) if metric == "ip" else faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    return index


def nearest_neighbors(
    index: faiss.Index, X: np.ndarray, n_neighbors: int, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (float64) and indices (int64) of the rows' nearest neighbours
    in a :func:`flat_index`, searched ``batch_size`` rows at a time."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    distances = np.empty((X.shape[0], n_neighbors), dtype=np.float64)
    indices = np.empty((X.shape[0], n_neighbors), dtype=np.int64)
    for batch in gen_batches(X.shape[0], batch_size):
        found, idx = index.search(X[batch], n_neighbors)
        distances[batch] = np.sqrt(np.maximum(found.astype(np.float64), 0.0))
        indices[batch] = idx
    return distances, indices


class KNNScorer(BaseDetector):
    """Outlier scores from the distances to the k nearest training samples.

    The training embeddings are stored in an exact (flat) faiss index; a
    sample scores minus the aggregate (sum, mean or maximum) of its distances
    to its ``n_neighbors`` nearest training samples, so points in dense
    regions of the training set are normal and isolated points are outliers.

    Parameters
    ----------
    n_neighbors : int, default=2
        Number of nearest training samples; must be smaller than the number
        of training samples.
    metric : {"l2", "cosine"}, default="l2"
        ``"l2"``: Euclidean distance.  ``"cosine"``: cosine distance
        ``1 - cos(x, x_i)``, computed as an inner product of L2-normalised
        vectors (all-zero rows stay zero and are at distance 1 from
        everything, as in :func:`sklearn.metrics.pairwise.cosine_distances`).
    aggregate : {"sum", "mean", "max"}, default="sum"
        How the ``n_neighbors`` distances of a sample are combined; ``"max"``
        is the distance to the ``n_neighbors``-th neighbour.
    batch_size : int, default=4096
        Number of samples searched at once; bounds the memory of a search.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; sets ``offset_``
        (``"auto"`` = 0.1).

    Attributes
    ----------
    n_samples_fit_ : int
        Number of training samples in the index.
    scale_ : float
        Power of two the features are divided by before the float32 search
        (``metric="l2"``): the largest one not above the largest absolute
        training value.  1.0 for ``metric="cosine"``.  See Notes.
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
    sklearn.neighbors.NearestNeighbors : The same neighbours, without faiss.
    sklearn.neighbors.LocalOutlierFactor : Density-ratio score on k neighbours.
    ssad.scoring.CosineKernelScorer : Soft version of the cosine kNN score over
        all training samples.

    Notes
    -----
    ``score_samples(X) = -aggregate(distances to the n_neighbors nearest
    training samples)``.  For ``metric="cosine"`` this is the aggregated cosine
    similarity up to a constant: ``sum(cos) - n_neighbors`` for ``"sum"``,
    ``mean(cos) - 1`` for ``"mean"`` and ``min(cos) - 1`` for ``"max"``.

    The search is exact (``faiss.IndexFlatL2`` / ``faiss.IndexFlatIP``) and
    runs in float32, faiss' only precision: the inputs are cast to float32,
    the Euclidean distance is the square root of faiss' squared distance
    (clipped at 0 against round-off), and the scores are returned as float64.

    So that features of any magnitude fit float32's range (squared distances
    of features around 1e20 overflow it, those of features around 1e-30
    vanish), the features are divided by ``scale_``, a power of two fitted on
    the training data, before they are cast, and the distances are multiplied
    back: dividing by a power of two is exact, so the scores are those of the
    unscaled features, up to float32 rounding.  With ``metric="cosine"`` each
    row is divided by its own power of two before it is L2-normalised.
    Samples whose values exceed the training scale by a factor above 1e15
    are refused with a ``ValueError`` (their squared distances would overflow
    float32).

    ``offset_`` comes from *leave-one-out* training scores: each training
    sample is scored against the other training samples (``n_neighbors + 1``
    are searched and the sample itself is dropped), as
    :meth:`sklearn.neighbors.NearestNeighbors.kneighbors` does with
    ``X=None``.  So ``predict`` flags about ``contamination`` of *new* samples
    from the training distribution.  ``score_samples(X_train)`` itself keeps
    each training sample as its own neighbour (at distance 0), which is why
    ``predict(X_train)`` flags fewer than ``contamination`` of the training
    samples, and why scikit-learn's ``check_outliers_train`` and
    ``check_outliers_fit_predict`` are expected to fail for this estimator.
    ``n_neighbors`` must be smaller than the number of training samples.

    The reference code of Mean-Shifted Contrastive Loss [1]_ scores with the
    sum of the *squared* L2 distances between L2-normalised features
    to the 2 nearest neighbours; on unit vectors that is ``2 * (1 - cos)``
    per neighbour, so ``KNNScorer(metric="cosine", aggregate="sum")`` gives
    ``-1/2`` times that score (same ranking).

    The faiss index does not pickle; the training matrix (float32) does, and
    the index is rebuilt from it on first use after unpickling.

    References
    ----------
    .. [1] T. Reiss and Y. Hoshen, "Mean-Shifted Contrastive Loss for Anomaly
       Detection", AAAI, 2023;
       code: https://github.com/talreiss/Mean-Shifted-Anomaly-Detection
    .. [2] J. Johnson, M. Douze and H. Jégou, "Billion-scale similarity search
       with GPUs", IEEE Transactions on Big Data, 2019 (faiss).

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import KNNScorer
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> scorer = KNNScorer(n_neighbors=2).fit(X)
    >>> scorer.score_samples([[0.0, 0.0], [5.0, 5.0]]).round(2)
    array([-0.4 , -9.55])
    >>> scorer.predict([[0.0, 0.0], [5.0, 5.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric": [StrOptions({"l2", "cosine"})],
        "aggregate": [StrOptions(set(_AGGREGATES))],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        n_neighbors: int = 2,
        metric: str = "l2",
        aggregate: str = "sum",
        batch_size: int = 4096,
        contamination: str | float = "auto",
    ) -> None:
        super().__init__(contamination=contamination)
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.aggregate = aggregate
        self.batch_size = batch_size

    def _fit(self, X: np.ndarray) -> np.ndarray:
        n_samples = X.shape[0]
        if self.n_neighbors >= n_samples:
            # scikit-learn's kneighbors wording; the training scores leave each sample out
            raise ValueError(
                "Expected n_neighbors < n_samples_fit (each training sample is scored "
                "against the others), but n_neighbors = "
                f"{self.n_neighbors}, n_samples_fit = {n_samples}, n_samples = {n_samples}"
            )
        self.scale_ = 1.0 if self.metric == "cosine" else float(_power_of_two_scale(X))
        self._fit_X = self._prepare(X)
        self.n_samples_fit_ = n_samples
        self._index = self._build_index()
        logger.debug("Indexed %d training samples (metric=%r).", n_samples, self.metric)
        return self._search_scores(self._fit_X, leave_self_out=True)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """The float32 C-contiguous vectors faiss searches: divided by ``scale_``
        (l2) or L2-normalised (cosine)."""
        if self.metric == "cosine":
            # per-row powers of two first: normalize() squares the values in float64
            X = normalize(X / _power_of_two_scale(X, axis=1))
        else:
            X = X / self.scale_
            peak = float(np.max(np.abs(X))) if X.size else 0.0
            if peak > _MAX_SCALED:
                raise ValueError(
                    f"X has values up to {peak * self.scale_:g} in absolute value, more than "
                    f"{_MAX_SCALED:g} times the scale of the training data "
                    f"(scale_={self.scale_:g}); their distances overflow the float32 search "
                    "of faiss. Rescale the features, or fit on data of the same scale."
                )
        return np.ascontiguousarray(X, dtype=np.float32)

    def _build_index(self) -> faiss.Index:
        return flat_index(self._fit_X, "ip" if self.metric == "cosine" else "l2")

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self._search_scores(self._prepare(X), leave_self_out=False)

    def _search_scores(self, queries: np.ndarray, leave_self_out: bool) -> np.ndarray:
        """Scores of ``queries``; with ``leave_self_out`` (queries = the training set)
        each row's own entry is removed from its neighbours."""
        if self._index is None:  # unpickled: rebuild from the stored training matrix
            self._index = self._build_index()
        aggregate = _AGGREGATES[self.aggregate]
        k = self.n_neighbors + int(leave_self_out)
        scores = np.empty(queries.shape[0], dtype=np.float64)
        for batch in gen_batches(queries.shape[0], self.batch_size):
            found, idx = self._index.search(queries[batch], k)
            found = found.astype(np.float64)
            if leave_self_out:
                rows = np.arange(batch.start, batch.stop)[:, None]
                is_self = idx == rows
                # drop the query's own entry; if ties pushed it out, drop the farthest
                is_self[~is_self.any(axis=1), -1] = True
                is_self &= np.cumsum(is_self, axis=1) == 1
                found = found[~is_self].reshape(len(found), self.n_neighbors)
            if self.metric == "cosine":
                distances = np.clip(1.0 - found, 0.0, 2.0)
            else:
                distances = np.sqrt(np.maximum(found, 0.0)) * self.scale_
            scores[batch] = -aggregate(distances, axis=1)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        # faiss indexes do not pickle: drop the index, _score_samples rebuilds it.
        state: dict[str, Any] = super().__getstate__()
        return {**state, "_index": None} if "_index" in state else state
