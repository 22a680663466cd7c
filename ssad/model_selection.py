"""Choosing hyperparameters without anomalies: the sensitivity score (SSL-SDN, section 3.4).

=================================  ============================================
:func:`sensitivity_score`          held-out training vs test images (no anomalies)
:func:`select_by_sensitivity`      pick a hyperparameter by the sensitivity score
:class:`SensitivitySelection`      what :func:`select_by_sensitivity` returns
=================================  ============================================

The benchmark runner computes the same score on every split when asked
(``--sensitivity-holdout``); it seeds the held-out draw with its ``--seed``
directly, where :func:`sensitivity_score` derives a seed from
``random_state``, so the two draw other images for the same number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state

__all__ = ["SensitivitySelection", "select_by_sensitivity", "sensitivity_score"]

logger = logging.getLogger(__name__)


def _embedder(fitted: Any) -> Callable[[Any], np.ndarray] | None:
    """The embedding function of a fitted estimator (pipeline head or ``transform``)."""
    if isinstance(fitted, Pipeline):
        return fitted[:-1].transform if len(fitted.steps) > 1 else None
    return getattr(fitted, "transform", None)


def _scorer_of(fitted: Any) -> Any:
    """The scorer on the embeddings of a fitted estimator (pipeline's last step or ``scorer_``)."""
    if isinstance(fitted, Pipeline):
        return fitted[-1] if len(fitted.steps) > 1 else None
    return getattr(fitted, "scorer_", None)


def _check_holdout(n_holdout: int, n: int) -> None:
    """Refuse a number of held-out images outside ``[1, n - 1]``."""
    if not 1 <= n_holdout < n:
        raise ValueError(
            f"The 'n_holdout' parameter of sensitivity_score must be an int in the range "
            f"[1, {n - 1}] (fewer than the {n} training images). Got {n_holdout!r} instead."
        )


def _held_out_auroc(
    Z_fit: np.ndarray, Z_in: np.ndarray, scorer: Any, n_holdout: int, seed: int
) -> float:
    """The sensitivity score from training and in-distribution test embeddings."""
    n = Z_fit.shape[0]
    _check_holdout(n_holdout, n)
    perm = np.random.default_rng(seed).permutation(n)
    held, kept = perm[:n_holdout], perm[n_holdout:]
    reference = clone(scorer).fit(Z_fit[kept])
    s_held = np.asarray(reference.score_samples(Z_fit[held]), dtype=np.float64)
    s_in = np.asarray(reference.score_samples(Z_in), dtype=np.float64)
    labels = np.r_[np.zeros(len(s_held)), np.ones(len(s_in))]
    return float(roc_auc_score(labels, -np.r_[s_held, s_in]))


def sensitivity_score(
    estimator: Any,
    X_train: Any,
    X_test_in: Any,
    n_holdout: int,
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Sensitivity score (SSL-SDN, Rafiee et al., section 3.4): a check that needs no anomaly.

    A clone of the estimator is fitted on **all** training images.
    ``n_holdout`` of them (B in the paper), drawn at random, are then left
    out of the final scorer's reference set only: the scorer is refitted on
    the embeddings of the other training images.  The score is the AUROC of
    telling the held-out training images (label 0) from the in-distribution
    test images (label 1): ``roc_auc_score(labels, -scores)``.

    Parameters
    ----------
    estimator : estimator
        A pipeline ending in a scorer, or an ssad detector (``transform`` and
        ``scorer_``): anything whose fitted form splits into embeddings and
        a scorer on them.
    X_train : images
        The training images (normal data).
    X_test_in : images
        In-distribution test images.
    n_holdout : int
        Number of training images held out of the reference set, in
        ``[1, n_train - 1]``.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images.

    Returns
    -------
    float
        The AUROC.  A model whose representation memorises its training
        images places the held-out ones (seen in training) closer to the
        reference set than unseen test images: the score is then well above
        0.5.  The paper selects hyperparameters by maximising it.

    Raises
    ------
    ValueError
        If ``n_holdout`` is out of range, or the fitted estimator does not
        split into embeddings and a scorer.

    Notes
    -----
    The AUROC of two samples of sizes ``B`` and ``n`` from one distribution
    has a standard deviation of about ``sqrt((B + n + 1) / (12 B n))``; use a
    ``n_holdout`` of a few hundred so that differences are not noise.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.model_selection import sensitivity_score
    >>> from ssad.datasets import make_anomaly_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, _ = make_anomaly_images(300, 0, image_size=16, random_state=0)
    >>> s = sensitivity_score(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                       X[:200], X[200:], n_holdout=100, random_state=0)
    >>> 0.35 < s < 0.65
    True
    """
    if isinstance(n_holdout, bool) or not isinstance(n_holdout, (int, np.integer)):
        raise ValueError(f"The 'n_holdout' parameter must be an int. Got {n_holdout!r} instead.")
    if isinstance(X_train, Sized) and not isinstance(X_train, (str, bytes)):
        _check_holdout(int(n_holdout), len(X_train))  # before the fit, not after it
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    fitted = clone(estimator).fit(X_train)
    transform, scorer = _embedder(fitted), _scorer_of(fitted)
    if transform is None or scorer is None:
        raise ValueError(
            f"sensitivity_score needs an estimator that splits into embeddings and a scorer "
            f"(a pipeline ending in a scorer, or a detector with transform and scorer_); "
            f"got {type(estimator).__name__}."
        )
    Z_fit, Z_in = np.asarray(transform(X_train)), np.asarray(transform(X_test_in))
    return _held_out_auroc(Z_fit, Z_in, scorer, int(n_holdout), seed)


@dataclass
class SensitivitySelection:
    """What :func:`select_by_sensitivity` returns.

    Parameters
    ----------
    best_value : object
        The value with the highest sensitivity score (the first on ties).
    best_sensitivity : float
        Its sensitivity score.
    table : list of dict
        ``{"value": ..., "sensitivity": ...}`` for every value, in order.

    Examples
    --------
    >>> from ssad.model_selection import SensitivitySelection
    >>> SensitivitySelection(3, 0.71, [{"value": 3, "sensitivity": 0.71}]).best_value
    3
    """

    best_value: Any
    best_sensitivity: float
    table: list[dict[str, Any]]


def select_by_sensitivity(
    estimator: Any,
    param_name: str,
    values: Sequence[Any],
    X_train: Any,
    X_test_in: Any,
    n_holdout: int,
    random_state: int | np.random.RandomState | None = None,
) -> SensitivitySelection:
    """Choose a hyperparameter without anomaly labels: the highest sensitivity score.

    For each value, ``estimator.set_params(**{param_name: value})`` and
    :func:`sensitivity_score`, with the same held-out images for every value.
    The paper (Rafiee et al., section 3.4) keeps the hyperparameters whose
    score is highest.

    Parameters
    ----------
    estimator : estimator
        As in :func:`sensitivity_score`, with ``set_params``.
    param_name : str
        The parameter to vary (``step__param`` for pipelines).
    values : sequence
        Candidate values, at least one.
    X_train, X_test_in : images
        Training and in-distribution test images.
    n_holdout : int
        Number of held-out training images.
    random_state : int, RandomState instance or None, default=None
        Draws the held-out images (once, for all values).

    Returns
    -------
    SensitivitySelection
        The chosen value, its score and the table of all scores.

    Raises
    ------
    ValueError
        If ``values`` is empty or ``param_name`` is not a parameter.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.model_selection import select_by_sensitivity
    >>> from ssad.datasets import make_anomaly_images
    >>> from ssad.features import PixelFeatures
    >>> from ssad.scoring import KNNScorer
    >>> X, _ = make_anomaly_images(200, 0, image_size=16, random_state=0)
    >>> sel = select_by_sensitivity(make_pipeline(PixelFeatures(), KNNScorer()),
    ...                             "knnscorer__n_neighbors", [1, 5], X[:150], X[150:],
    ...                             n_holdout=50, random_state=0)
    >>> sel.best_value in (1, 5), len(sel.table)
    (True, 2)
    """
    values = list(values)
    if not values:
        raise ValueError("values must hold at least one candidate value.")
    seed = (  # an int goes through as it is: the same draw as sensitivity_score(..., seed)
        int(random_state)
        if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
        else int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    )
    table = []
    for value in values:
        candidate = clone(estimator).set_params(**{param_name: value})
        score = sensitivity_score(candidate, X_train, X_test_in, n_holdout, seed)
        logger.info("%s=%r: sensitivity %.4f", param_name, value, score)
        table.append({"value": value, "sensitivity": score})
    best = max(table, key=lambda row: row["sensitivity"])
    return SensitivitySelection(best["value"], float(best["sensitivity"]), table)
