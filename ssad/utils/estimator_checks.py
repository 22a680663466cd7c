"""The image-level estimator contract suite, public so other packages can test their detectors.

scikit-learn's ``parametrize_with_checks`` skips almost every check for
estimators whose input is not a 2-D array; :func:`check_image_detector` runs
the shape-agnostic scikit-learn checks one by one and then checks the outlier
contract on images.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks as sk_checks

from ssad.thresholds import conformal_p_values

__all__ = ["SKLEARN_GENERIC_CHECKS", "check_image_detector"]

#: scikit-learn checks that do not depend on the input being a 2-D array.
SKLEARN_GENERIC_CHECKS = (
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_do_not_raise_errors_in_init_or_set_params",
)


def _final(estimator: Any) -> Any:
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def _set_final_params(estimator: Any, **params: Any) -> Any:
    if isinstance(estimator, Pipeline):
        name = estimator.steps[-1][0]
        params = {f"{name}__{k}": v for k, v in params.items()}
    return estimator.set_params(**params)


def _default_images(random_state: int) -> np.ndarray:
    rng = np.random.default_rng(random_state)
    n, size = 24, 32
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):  # smooth blobs at random places on noise
        cy, cx = rng.uniform(8, 24, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 6) ** 2))
        noise = rng.normal(0, 0.05, (size, size, 3))
        images[i] = np.clip(255 * (0.8 * blob[..., None] + 0.1 + noise), 0, 255).astype(np.uint8)
    return images


def check_image_detector(
    estimator: Any,
    X: Any = None,
    *,
    random_state: int = 0,
    sklearn_checks: bool = True,
    contamination: float = 0.25,
) -> None:
    """Check that an image detector follows the ssad outlier contract.

    Runs, and raises ``AssertionError`` at the first failure:

    1. the shape-agnostic scikit-learn checks (:data:`SKLEARN_GENERIC_CHECKS`),
       unless ``sklearn_checks=False``;
    2. ``score_samples`` before ``fit`` raises :class:`~sklearn.exceptions.NotFittedError`;
    3. ``fit`` returns the estimator itself;
    4. ``score_samples`` gives finite float64 of shape ``(n,)``;
    5. ``decision_function(X) == score_samples(X) - offset_``;
    6. ``predict`` returns +1/-1 and agrees with ``decision_function >= 0``;
    7. with ``contamination`` set, ``offset_`` is that quantile of
       ``train_scores_`` (so that share of training images falls below it, up
       to ties), and ``predict`` on the training images agrees where
       ``train_scores_`` are the training images' ``score_samples``;
    8. ``predict_proba`` gives ``[p, 1 - p]`` with ``p`` the conformal
       p-values of the scores against ``calibration_scores_``;
    9. the same ``random_state`` gives the same scores, when the estimator has
       a ``random_state`` parameter;
    10. a pickle round-trip keeps the scores.

    Parameters
    ----------
    estimator : estimator
        An unfitted image detector, or a :class:`~sklearn.pipeline.Pipeline`
        whose last step is a detector.  Use small settings (tiny models, one
        epoch): the estimator is fitted several times.
    X : images, optional
        Training images; default: 24 synthetic RGB uint8 images of 32x32.
    random_state : int, default=0
        Seed for the default images and the estimator's ``random_state``.
    sklearn_checks : bool, default=True
        Also run the scikit-learn checks.
    contamination : float, default=0.25
        Value used for the contamination check.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad import DINOFeatures, GaussianScorer
    >>> from ssad.utils.estimator_checks import check_image_detector
    >>> det = make_pipeline(
    ...     DINOFeatures("test_vit", pretrained=False, image_size=32), GaussianScorer()
    ... )
    >>> check_image_detector(det)
    """
    name = type(estimator).__name__
    if sklearn_checks:
        for check in SKLEARN_GENERIC_CHECKS:
            getattr(sk_checks, check)(name, estimator)

    X = _default_images(random_state) if X is None else X
    n = len(X)
    est = clone(estimator)
    if "random_state" in est.get_params():
        est.set_params(random_state=random_state)
    try:
        est.score_samples(X)
    except NotFittedError:
        pass
    else:  # pragma: no cover - the failure branch
        raise AssertionError(f"{name}.score_samples did not raise NotFittedError before fit.")

    assert est.fit(X) is est, f"{name}.fit must return self."
    scores = est.score_samples(X)
    assert isinstance(scores, np.ndarray), f"score_samples returned {type(scores).__name__}."
    assert scores.dtype == np.float64, f"score_samples dtype is {scores.dtype}, not float64."
    assert scores.shape == (n,), f"score_samples shape is {scores.shape}, expected ({n},)."
    assert np.all(np.isfinite(scores)), "score_samples returned non-finite values."

    offset = _final(est).offset_
    decision = est.decision_function(X)
    np.testing.assert_allclose(decision, scores - offset, rtol=1e-6, atol=1e-9)
    labels = est.predict(X)
    assert set(np.unique(labels)) <= {-1, 1}, f"predict returned {np.unique(labels)}."
    np.testing.assert_array_equal(labels, np.where(decision >= 0, 1, -1))

    est_c = _set_final_params(clone(est), contamination=contamination)
    est_c.fit(X)
    final = _final(est_c)
    train_scores = final.train_scores_
    assert train_scores.shape == (n,), f"train_scores_ shape {train_scores.shape} != ({n},)"
    np.testing.assert_allclose(
        final.offset_, np.percentile(train_scores, 100 * contamination), rtol=1e-9, atol=1e-12
    )
    n_out = int(np.sum(train_scores < final.offset_))
    expected = contamination * n
    if abs(n_out - expected) > 1:
        n_ties = int(np.sum(np.isclose(train_scores, final.offset_, atol=1e-9)))
        assert abs(n_out - expected) <= 1 + n_ties, (
            f"{name} with contamination={contamination} puts {n_out} of {n} training scores "
            f"below offset_; expected about {expected:g}."
        )
    if np.allclose(train_scores, est_c.score_samples(X)):  # not leave-one-out
        assert abs(int(np.sum(est_c.predict(X) == -1)) - n_out) <= 1 + int(
            np.sum(np.isclose(train_scores, final.offset_, atol=1e-9))
        ), f"{name}: predict(X_train) disagrees with train_scores_ and offset_."

    proba = est.predict_proba(X)
    assert proba.shape == (n, 2), f"predict_proba shape is {proba.shape}, expected ({n}, 2)."
    np.testing.assert_allclose(
        proba[:, 0],
        conformal_p_values(scores, _final(est).calibration_scores_),
        err_msg=f"{name}: predict_proba[:, 0] are not the p-values of the scores.",
    )
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)

    if "random_state" in est.get_params():
        again = clone(est).fit(X).score_samples(X)
        np.testing.assert_allclose(
            again, scores, rtol=1e-5, atol=1e-6, err_msg=f"{name}: same random_state, other scores."
        )

    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(
        restored.score_samples(X),
        scores,
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"{name}: scores changed after a pickle round-trip.",
    )
