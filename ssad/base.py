"""The outlier-detector contract, in one place.

Every detector in ssad, the 2-D scorers on embeddings as well as the deep image
detectors, derives from :class:`BaseDetector`.  Subclasses implement two methods:

``_fit(X, **fit_params) -> training scores``
    learn the model from the validated input and return the training scores
    that set the threshold: the scores ``score_samples`` gives for that same
    input (or ``None``, in which case the base class calls ``_score_samples``
    on it), or leave-one-out scores where a detector documents so;
``_score_samples(X) -> scores``
    higher = more normal.

``fit``, ``score_samples``, ``decision_function``, ``predict``,
``fit_predict``, ``p_values`` and ``predict_proba`` are written here once and
never re-implemented per class.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ssad import _distributed
from ssad.thresholds import conformal_p_values

__all__ = ["DEVICE_CONSTRAINT", "BaseDetector", "resolve_device"]

#: Share of training images flagged as outliers when ``contamination="auto"``.
AUTO_CONTAMINATION = 0.1

#: ``_parameter_constraints`` entry of a ``device`` parameter (checked by :func:`resolve_device`).
DEVICE_CONSTRAINT: list[Any] = [str, torch.device]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn a ``device`` parameter into a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device
        ``"auto"`` picks CUDA when it is available and the CPU otherwise;
        under ``torchrun`` it picks the GPU ``cuda:LOCAL_RANK``, one per process.

    Returns
    -------
    torch.device
        The device to use.

    Raises
    ------
    ValueError
        If the string is not a device name torch knows, or names a device
        type that cannot run a model (``"meta"``, whose tensors hold no data,
        and every type other than cpu, cuda and mps).
    RuntimeError
        If a CUDA or MPS device is requested but is not available.
    """
    if isinstance(device, str) and device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if _distributed.launched_world_size() > 1:  # torchrun: one GPU per process
            return torch.device("cuda", _distributed.local_rank() % torch.cuda.device_count())
        return torch.device("cuda")
    expected = "The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{expected}. Got {device!r} instead.") from exc
    # torch.device also parses "meta", "xla", "hpu", ...: only these run an ssad model
    if dev.type not in ("cpu", "cuda", "mps"):
        why = " ('meta' tensors hold no data)" if dev.type == "meta" else ""
        raise ValueError(f"{expected}, a device that runs a model. Got {device!r} instead{why}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} was requested but CUDA is not available on this machine; "
                "use device='auto' or device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) are visible."
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but MPS is not available on this machine; "
            "use device='auto' or device='cpu'."
        )
    return dev


class BaseDetector(OutlierMixin, BaseEstimator):
    """Base class of every ssad outlier detector.

    It fixes the scikit-learn outlier contract:

    - ``score_samples(X)`` returns float64 of shape ``(n_samples,)``; higher
      means more normal;
    - ``decision_function(X) = score_samples(X) - offset_``; negative means
      outlier;
    - ``predict(X)`` returns ``+1`` for inliers and ``-1`` for outliers;
    - ``offset_`` is the ``contamination`` quantile of ``score_samples`` on the
      training data;
    - ``p_values(X)`` are conformal p-values (higher = more normal), and
      ``predict_proba(X)`` gives ``[p, 1 - p]`` per sample, columns
      ``[normal, anomaly]``.

    Subclasses implement ``_fit`` and ``_score_samples`` and may override
    ``_validate_input`` (the default accepts 2-D numeric arrays, as every
    scikit-learn estimator does; image detectors accept images instead).

    Parameters
    ----------
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; it sets ``offset_``.
        ``"auto"`` uses 0.1, so that 10 % of the training samples fall below
        the threshold (the default of :class:`sklearn.covariance.EllipticEnvelope`).

    Attributes
    ----------
    offset_ : float
        Threshold on ``score_samples``: samples that score below it are
        predicted as outliers.
    train_scores_ : ndarray of shape (n_train,), dtype float64
        Scores of the training samples that set ``offset_``: ``score_samples``
        of the training data, except where a detector documents otherwise
        (:class:`~ssad.KNNScorer` scores each training sample against the
        others; :class:`~ssad.PatchCoreDetector` with ``calibration_size``
        scores a random sample of them).
    calibration_scores_ : ndarray of shape (n_calibration,), dtype float64
        The scores :meth:`p_values` ranks new scores among: ``train_scores_``
        after ``fit``; the scores of normal validation images after
        :func:`ssad.set_threshold`.

    See Also
    --------
    ssad.set_threshold : Set ``offset_`` from a target false-positive rate or
        the best F1 on validation images.

    Notes
    -----
    For AUROC with the anomalies as positive class, use
    ``roc_auc_score(y_is_anomaly, -detector.score_samples(X))``.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "contamination": [StrOptions({"auto"}), Interval(numbers.Real, 0, 0.5, closed="right")],
    }

    def __init__(self, *, contamination: str | float = "auto") -> None:
        self.contamination = contamination

    # -- hooks for subclasses -------------------------------------------------
    def _validate_input(self, X: Any, *, reset: bool) -> Any:
        """Validate ``X``; the default accepts finite 2-D float arrays."""
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])

    def _fit(self, *args: Any, **kwargs: Any) -> np.ndarray | None:  # pragma: no cover
        # (X, **fit_params) -> training scores; the 2-D scorers take no fit parameters
        raise NotImplementedError

    def _score_samples(self, X: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the contract ---------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> BaseDetector:
        """Fit the detector on (mostly) normal training data.

        Parameters
        ----------
        X : array-like
            Training data; see the class documentation for accepted forms.
        y : None
            Ignored; present for API consistency.
        **fit_params : dict
            Extra training data a detector documents (e.g. ``X_aux`` of
            :class:`~ssad.SelfDistillNegDetector`); none for the 2-D scorers.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X = self._validate_input(X, reset=True)
        scores = self._fit(X, **fit_params)
        if scores is None:
            scores = self._score_samples(X)
        scores = self._check_scores(scores, self._n_train_scores(len(X)))
        self.train_scores_ = scores
        self.calibration_scores_ = scores
        contamination = (
            AUTO_CONTAMINATION if self.contamination == "auto" else float(self.contamination)
        )
        self.offset_ = float(np.percentile(scores, 100.0 * contamination))
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality score of each sample; higher means more normal.

        Parameters
        ----------
        X : array-like
            Samples to score.

        Returns
        -------
        scores : ndarray of shape (n_samples,), dtype float64
            The normality scores.
        """
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return self._check_scores(self._score_samples(X), len(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """Shifted score: ``score_samples(X) - offset_``; negative = outlier.

        Parameters
        ----------
        X : array-like
            Samples to score.

        Returns
        -------
        decision : ndarray of shape (n_samples,), dtype float64
            Negative values mark predicted outliers.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """Predict inliers (+1) and outliers (-1).

        Parameters
        ----------
        X : array-like
            Samples to classify.

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype int
            ``+1`` for inliers, ``-1`` for outliers.
        """
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[decision < 0] = -1
        return labels

    def p_values(self, X: Any) -> np.ndarray:
        """Conformal p-value of each sample; higher means more normal.

        The rank of each score among ``calibration_scores_``:
        ``p = (1 + #{calibration scores <= score}) / (n_calibration + 1)``
        (:func:`ssad.thresholds.conformal_p_values`).  A p-value near 0 means
        that few normal samples score as low; flagging the samples with
        ``p <= alpha`` flags a share of about ``alpha`` of normal samples (at
        most ``alpha`` when the calibration scores are honest, see Notes).

        Parameters
        ----------
        X : array-like
            Samples to score.

        Returns
        -------
        p_values : ndarray of shape (n_samples,), dtype float64
            Values in ``(0, 1]``.

        See Also
        --------
        predict_proba : The same, as ``[normal, anomaly]`` columns.
        ssad.set_threshold : Calibrate on normal validation images.

        Notes
        -----
        The guarantee ``P(p <= alpha) <= alpha`` for a new normal sample holds
        when the calibration scores are exchangeable with the scores of new
        normal data: scores of normal samples the model was not fitted on.
        After ``fit`` the calibration scores are ``train_scores_``:

        - leave-one-out scores (:class:`~ssad.KNNScorer`, alone or after
          frozen features) score each training sample as if it were new, so
          the guarantee holds (slightly conservatively: a new sample is
          compared with all ``n`` training samples, a training sample with
          the other ``n - 1``);
        - in-sample scores (:class:`~ssad.GaussianScorer` and the other
          scorers), and the scores of detectors that train a network on the
          training images (even with a leave-one-out kNN last), are
          optimistic: the model has seen those samples, so they score higher
          than new normal samples, and new normal samples get p-values that
          are too small (more false alarms than ``alpha``).  The gap grows
          with the model's capacity relative to the number of training
          samples.

        For an honest calibration with any detector, score normal images it
        was not fitted on with ``ssad.set_threshold(det, X_normal_val,
        fpr=...)``, which makes them the calibration scores.

        Examples
        --------
        >>> import numpy as np
        >>> from ssad import KNNScorer
        >>> X = np.random.default_rng(0).normal(size=(99, 2))
        >>> det = KNNScorer().fit(X)
        >>> det.p_values([[0.0, 0.0], [5.0, 5.0]])
        array([0.57, 0.01])
        """
        check_is_fitted(self)
        return conformal_p_values(self.score_samples(X), self.calibration_scores_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability-like scores of the two classes, columns ``[normal, anomaly]``.

        ``[p, 1 - p]`` with ``p = p_values(X)``, the layout of PyOD's
        ``predict_proba``: column 1 is high for samples that few normal
        samples resemble.

        Parameters
        ----------
        X : array-like
            Samples to score.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2), dtype float64
            Column 0: the conformal p-value (normal); column 1: ``1 - p``
            (anomaly).  Rows sum to 1.

        See Also
        --------
        p_values : The p-values and their guarantee.

        Notes
        -----
        These are not posterior probabilities of being an anomaly, which
        would need the share and the distribution of anomalies: column 1 is
        the confidence that a sample is unlike the normal calibration data.
        ``predict_proba(X)[:, 1] >= 1 - alpha`` flags a share of at most about
        ``alpha`` of normal samples (see :meth:`p_values`).  For a pipeline
        ending in a detector, ``pipeline.predict_proba(X)[:, 0]`` are the
        p-values.

        Examples
        --------
        >>> import numpy as np
        >>> from ssad import KNNScorer
        >>> X = np.random.default_rng(0).normal(size=(99, 2))
        >>> KNNScorer().fit(X).predict_proba([[5.0, 5.0]])
        array([[0.01, 0.99]])
        """
        p = self.p_values(X)
        return np.column_stack([p, 1.0 - p])

    # -- helpers --------------------------------------------------------------
    def _n_train_scores(self, n_train: int) -> int:
        """How many training scores ``_fit`` returns: one per training sample by default."""
        return n_train

    @staticmethod
    def _check_scores(scores: Any, n: int) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != n:
            raise RuntimeError(f"Detector returned {scores.shape[0]} scores for {n} samples.")
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(
                f"{int(np.sum(~np.isfinite(scores)))} of {n} scores are not finite; "
                "the input or the fitted model holds NaN or infinite values."
            )
        return scores
