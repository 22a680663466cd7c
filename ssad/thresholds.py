"""From scores to decisions: conformal p-values and thresholds set on validation data.

A detector's ``score_samples`` ranks images (higher = more normal); to act on
it, a user needs a cut.  ``fit`` puts one at the ``contamination`` quantile of
the training scores.  This module gives the two other usual ways, on images
that were not used for fitting:

- a target false-positive rate on normal validation images
  (``set_threshold(det, X_val, fpr=0.01)``), with the guarantee of conformal
  prediction: a new normal image is flagged with probability at most ``fpr``;
- the best F1 score on labelled validation images
  (``set_threshold(det, X_val, y_val)``).

Both move ``offset_`` only: ``score_samples`` and the ranking never change.
The normal validation images also become the reference of
:meth:`ssad.BaseDetector.p_values` (``calibration_scores_``).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, validate_params
from sklearn.utils.validation import check_is_fitted, column_or_1d

__all__ = ["conformal_p_values", "set_threshold"]

#: Relative difference under which a score and a calibration score count as tied.
_TIE_RTOL = 1e-7


def conformal_p_values(scores: Any, calibration_scores: Any) -> np.ndarray:
    """Conformal p-values of scores, against the scores of normal calibration samples.

    ``p = (1 + #{calibration scores <= score}) / (n_calibration + 1)``: the
    rank of a score among the calibration scores, where scores are higher for
    more normal samples.  A p-value is in ``(0, 1]``; small means unusual.
    Scores that agree with a calibration score to 7 significant digits count
    as equal to it, so that rounding (a batch computed another way) does not
    move a p-value.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Scores to turn into p-values (``score_samples``: higher = more normal).
    calibration_scores : array-like of shape (n_calibration,)
        Scores of normal samples the model was not fitted on (or leave-one-out
        training scores).

    Returns
    -------
    p_values : ndarray of shape (n_samples,), dtype float64
        Higher = more normal.

    Raises
    ------
    ValueError
        If ``calibration_scores`` is empty, or either holds NaN or infinite values.

    See Also
    --------
    ssad.BaseDetector.p_values : The p-values of a fitted detector.
    set_threshold : A threshold with a guaranteed false-positive rate.

    Notes
    -----
    If the calibration scores and the score of a new normal sample are
    exchangeable (e.g. all are scores of independent normal images the model
    never saw), then ``P(p <= alpha) <= alpha`` for every ``alpha`` in
    ``(0, 1)`` [1]_: flagging the samples with ``p <= alpha`` flags at most a
    share ``alpha`` of normal samples, on average over calibration sets.  The
    guarantee says nothing about anomalies: how small their p-values are
    depends on how well the scores separate them.

    References
    ----------
    .. [1] S. Bates, E. Candès, L. Lei, Y. Romano and M. Sesia, "Testing for
       outliers with conformal p-values", The Annals of Statistics, 2023.

    Examples
    --------
    >>> from ssad.thresholds import conformal_p_values
    >>> conformal_p_values([-5.0, 0.5, 9.0], calibration_scores=[0.0, 1.0, 2.0, 3.0])
    array([0.2, 0.4, 1. ])
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    reference = np.sort(np.asarray(calibration_scores, dtype=np.float64).reshape(-1))
    if reference.size == 0:
        raise ValueError("calibration_scores holds 0 scores; at least 1 is required.")
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(reference))):
        raise ValueError("scores and calibration_scores must be finite; got NaN or infinity.")
    # #{reference <= score}, where scores that agree to ~7 digits count as ties: a sample
    # scored again in another batch (e.g. a training sample) keeps its p-value, and ties
    # only make p-values larger (more conservative)
    below = np.searchsorted(reference, scores + _TIE_RTOL * np.abs(scores), side="right")
    return (1.0 + below) / (reference.size + 1.0)


def _final_step(estimator: Any) -> Any:
    """The detector that holds ``offset_``: the last step of a pipeline, else the estimator."""
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    check_is_fitted(final)
    if not hasattr(final, "offset_"):
        raise TypeError(
            "set_threshold needs an outlier detector with an 'offset_' threshold "
            "(decision_function = score_samples - offset_), or a pipeline ending in one; "
            f"got {type(final).__name__}."
        )
    return final


def _is_anomaly(y_val: Any, n: int, name: str = "y_val", of: str = "images in X_val") -> np.ndarray:
    """``y_val`` as a boolean anomaly mask of length ``n``, refusing anything but 0/1 labels."""
    y = column_or_1d(y_val)
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels for {n} {of}.")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        hint = ""
        if -1 in values:
            hint = f" For predict-style labels (+1 normal, -1 anomaly) pass {name} == -1."
        raise ValueError(
            f"{name} must mark the anomalies: True or 1 for an anomaly, False or 0 for a normal "
            f"image. Got the values {sorted(values)}.{hint}"
        )
    return y.astype(bool)


@validate_params(
    {
        "estimator": [object],
        "X_val": [object],
        "y_val": ["array-like", None],
        "fpr": [Interval(numbers.Real, 0, 1, closed="neither"), None],
    },
    prefer_skip_nested_validation=True,
)
def set_threshold(
    estimator: Any, X_val: Any, y_val: Any = None, *, fpr: float | None = None
) -> Any:
    """Set a fitted detector's threshold (``offset_``) from validation images.

    Two rules, chosen by the arguments:

    ``set_threshold(det, X_normal, fpr=0.01)``
        *A target false-positive rate.*  ``X_val`` holds normal images only
        (or pass ``y_val`` too: its normal images are used).  ``offset_``
        becomes the conformal threshold: an image is flagged (``predict`` =
        -1) when its p-value against the normal validation scores is at most
        ``fpr`` (up to rounding ties at the threshold), so a new normal image
        is flagged with probability at most ``fpr`` (see Notes).
    ``set_threshold(det, X_val, y_val)``
        *The best F1 score* on labelled validation images (``y_val``: True or
        1 for an anomaly), with the anomalies as the positive class; the
        threshold lies halfway between the last score flagged and the next.

    The normal images of ``X_val`` also become the reference of
    :meth:`~ssad.BaseDetector.p_values` and ``predict_proba``
    (``calibration_scores_``).  ``score_samples`` never changes; a later
    ``fit`` restores the ``contamination`` threshold.

    Parameters
    ----------
    estimator : fitted detector or Pipeline
        An ssad detector, a pipeline ending in one, or any fitted outlier
        detector with ``offset_`` and ``decision_function = score_samples -
        offset_`` (e.g. :class:`~sklearn.ensemble.IsolationForest`).
    X_val : images or array-like
        Validation samples the detector was not fitted on, in any form its
        ``score_samples`` accepts (for images: arrays, paths, a folder...).
    y_val : array-like of shape (n_samples,), default=None
        True (or 1) for an anomaly, False (or 0) for a normal sample.  Without
        it, every sample of ``X_val`` is taken as normal.
    fpr : float in (0, 1), default=None
        Target false-positive rate; needed without ``y_val``.

    Returns
    -------
    estimator : object
        The same estimator, with the new threshold.

    Raises
    ------
    ValueError
        If neither ``y_val`` nor ``fpr`` is given, ``y_val`` holds other
        values than 0/1, there are too few normal images for ``fpr`` (at least
        ``1 / fpr - 1``), or the F1 rule lacks normal images or anomalies.
    TypeError
        If the estimator (or its last step) has no ``offset_``.

    See Also
    --------
    conformal_p_values : The p-values behind the ``fpr`` rule.
    sklearn.metrics.precision_recall_curve : The curve behind the F1 rule.

    Notes
    -----
    With ``n`` normal validation scores sorted increasingly, the ``fpr`` rule
    sets ``offset_`` to the ``k``-th smallest, ``k = floor(fpr * (n + 1))``:
    a score below it has a conformal p-value at most ``fpr``.  The guarantee
    ``P(flagged) <= fpr`` holds on average over validation sets when the
    validation images and new normal images come from the same distribution
    and the detector was not fitted on the validation images.  With a few
    hundred validation images the false-positive rate on new data stays close
    to ``fpr``; with fewer it varies more from one validation set to another.

    The F1 rule needs anomalies at validation time and fits the threshold to
    them: it is only as good as the validation anomalies are representative
    of those to come.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad import KNNScorer, set_threshold
    >>> rng = np.random.default_rng(0)
    >>> det = KNNScorer().fit(rng.normal(size=(200, 2)))
    >>> det = set_threshold(det, rng.normal(size=(99, 2)), fpr=0.05)
    >>> int((det.p_values(rng.normal(size=(99, 2))) <= 0.05).sum()) < 10
    True
    """
    final = _final_step(estimator)
    scores = np.asarray(estimator.score_samples(X_val), dtype=np.float64).reshape(-1)
    if y_val is None:
        if fpr is None:
            raise ValueError(
                "set_threshold needs fpr (a target false-positive rate) when y_val is None: "
                "X_val is then taken as normal images. Pass y_val to maximise F1 instead."
            )
        is_anomaly = np.zeros(scores.shape[0], dtype=bool)
    else:
        is_anomaly = _is_anomaly(y_val, scores.shape[0])
    normal = np.sort(scores[~is_anomaly])
    if fpr is not None:
        k = int(np.floor(fpr * (normal.size + 1)))
        if k < 1:
            need = int(np.ceil(1.0 / fpr - 1.0 - 1e-9))
            raise ValueError(
                f"fpr={fpr:g} needs at least {need} normal validation images (1 / fpr - 1); "
                f"got {normal.size}."
            )
        offset = float(normal[k - 1])
    else:
        offset = _best_f1_offset(scores, is_anomaly)
    final.offset_ = offset
    if normal.size and hasattr(final, "calibration_scores_"):
        final.calibration_scores_ = scores[~is_anomaly]
    return estimator


def _best_f1_offset(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """``offset_`` of the best F1 (anomalies positive), halfway to the next score."""
    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError(
            "Maximising F1 needs both normal images and anomalies in y_val; got "
            f"{int(is_anomaly.sum())} anomalies among {is_anomaly.size} images."
        )
    precision, recall, thresholds = precision_recall_curve(is_anomaly, -scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    # the last (precision, recall) pair has no threshold; a tie goes to the cut flagging most
    cut = -float(thresholds[int(np.argmax(f1[:-1]))])  # flagged: score <= cut
    above = scores[scores > cut]
    return (cut + float(above.min())) / 2.0 if above.size else float(np.nextafter(cut, np.inf))
