"""Greedy k-center coresets: a small subset of rows that covers all of them."""

from __future__ import annotations

import contextlib
import logging
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

__all__ = ["greedy_coreset"]

logger = logging.getLogger(__name__)


def greedy_coreset(
    X: Any,
    n_samples: int,
    *,
    projection_dim: int | None = 128,
    random_state: int | np.random.RandomState | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Indices of a greedy k-center coreset of the rows of ``X``.

    Starting from one row drawn at random, the row farthest from every row
    chosen so far is added, ``n_samples - 1`` times (Sener and Savarese's
    greedy k-center, PatchCore's Algorithm 1).  The chosen rows cover the
    others: the largest distance from a row to its nearest chosen row is at
    most twice the smallest possible for ``n_samples`` centres.  Distances are
    Euclidean and, as in PatchCore, computed after a random Gaussian
    projection to ``projection_dim`` dimensions (Johnson-Lindenstrauss), which
    keeps them approximately and makes every step cheaper.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
        The rows (cast to float32).
    n_samples : int
        Size of the coreset, at least 1; all rows are returned when it is not
        smaller than ``n_rows``.
    projection_dim : int or None, default=128
        Dimension of the random projection (PatchCore: 128); ``None``, or a
        value not smaller than ``n_features``, searches the rows as they are.
    random_state : int, RandomState instance or None, default=None
        Draws the first row and the projection.  Global generators are never
        seeded.
    device : str or torch.device, default="cpu"
        Where the search runs (a GPU makes large coresets fast).  On a CPU
        the search runs in one thread (see Notes).

    Returns
    -------
    ndarray of shape (min(n_samples, n_rows),), dtype int64
        Row indices in the order they were chosen: the first ``m`` of them
        are the greedy coreset of size ``m``.  No row appears twice.

    Raises
    ------
    ValueError
        If ``X`` is not a non-empty 2-D array of finite numbers, or
        ``n_samples`` or ``projection_dim`` is not a positive int.

    Notes
    -----
    Each of the ``n_samples`` steps is one pass over the projected rows (a
    vector-matrix product and an elementwise minimum).  On a CPU such a short
    pass gains little from several threads, and their synchronisation can
    cost much more when the cores are shared: the thread pools of BLAS and
    OpenMP are limited to one thread during the search
    (:func:`threadpoolctl.threadpool_limits`), as scikit-learn does in
    similar loops.  The time grows with ``n_samples x n_rows``; a training
    set can be reduced in chunks (merge-and-reduce, as
    :class:`~ssad.PatchCoreDetector` does with ``pool_size``) so that the
    rows searched stay few and in cache.

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural
       Networks: A Core-Set Approach", ICLR 2018.
    .. [2] K. Roth, L. Pemula, J. Zepeda, B. Schölkopf, T. Brox and P. Gehler,
       "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import greedy_coreset
    >>> X = np.r_[np.zeros((50, 2)), np.ones((50, 2)), [[10.0, 10.0]]]
    >>> idx = greedy_coreset(X, 3, random_state=0)
    >>> sorted(X[idx].sum(axis=1).tolist())
    [0.0, 2.0, 20.0]
    """
    for name, value, low in (("n_samples", n_samples, 1), ("projection_dim", projection_dim, 1)):
        if name == "projection_dim" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(
                f"The '{name}' parameter of greedy_coreset must be an int >= {low}"
                f"{' or None' if name == 'projection_dim' else ''}. Got {value!r} instead."
            )
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or not np.isfinite(X).all():
        raise ValueError(
            "X must be a non-empty 2-D array (n_rows, n_features) of finite numbers; got "
            f"shape {X.shape}."
        )
    n_rows, n_features = X.shape
    if n_samples >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    rng = check_random_state(random_state)
    Z = torch.from_numpy(np.ascontiguousarray(X)).to(device)
    if projection_dim is not None and projection_dim < n_features:
        projection = rng.normal(size=(n_features, projection_dim)) / np.sqrt(projection_dim)
        Z = Z @ torch.from_numpy(projection.astype(np.float32)).to(device)
    squared = (Z * Z).sum(dim=1)
    # rows as columns: one step is then a vector-matrix product that streams the data
    # once in memory order (three times faster than a matrix-vector product on CPUs)
    ZT = Z.t().contiguous()
    del Z
    chosen = np.empty(n_samples, dtype=np.int64)
    chosen[0] = rng.randint(n_rows)
    # nearest[i]: squared distance from row i to its nearest chosen row; -inf once chosen
    nearest = torch.full((n_rows,), float("inf"), device=ZT.device)
    # on a CPU each step is one short pass over the data, and thread pools spend more time
    # waiting for each other than they save (five times slower on a busy 2-core machine)
    with threadpool_limits(limits=1) if ZT.device.type == "cpu" else contextlib.nullcontext():
        for step in range(n_samples):
            if step > 0:
                chosen[step] = int(torch.argmax(nearest))
            j = int(chosen[step])
            distance = (ZT[:, j] @ ZT).mul_(-2.0).add_(squared).add_(squared[j])
            torch.minimum(nearest, distance, out=nearest)
            nearest[j] = float("-inf")
    logger.debug("Greedy coreset: %d of %d rows.", n_samples, n_rows)
    return chosen
