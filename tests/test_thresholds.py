"""Conformal p-values, predict_proba and thresholds set on validation data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

import ssad
from ssad import GaussianScorer, KNNScorer, set_threshold
from ssad.datasets import make_anomaly_images
from ssad.features import PixelFeatures
from ssad.thresholds import conformal_p_values


def test_conformal_p_values_rank_among_the_calibration_scores() -> None:
    calibration = np.array([3.0, 0.0, 2.0, 1.0])
    p = conformal_p_values([-5.0, 0.0, 0.5, 3.0, 9.0], calibration)
    np.testing.assert_allclose(p, [1 / 5, 2 / 5, 2 / 5, 5 / 5, 5 / 5])  # ties count as <=
    # a score equal to a calibration score up to rounding keeps its rank
    assert (
        conformal_p_values([1.0 - 1e-12], calibration)[0]
        == conformal_p_values([1.0], calibration)[0]
    )
    with pytest.raises(ValueError, match="0 scores"):
        conformal_p_values([1.0], [])
    with pytest.raises(ValueError, match="finite"):
        conformal_p_values([np.nan], calibration)


def test_p_values_and_predict_proba_of_a_detector() -> None:
    rng = np.random.default_rng(0)
    X, X_new = rng.normal(size=(99, 3)), rng.normal(size=(20, 3)) * 2
    det = KNNScorer()
    with pytest.raises(NotFittedError):
        det.p_values(X_new)
    det.fit(X)
    assert det.calibration_scores_ is det.train_scores_  # leave-one-out scores
    p, proba = det.p_values(X_new), det.predict_proba(X_new)
    assert p.dtype == np.float64 and p.shape == (20,) and np.all((p > 0) & (p <= 1))
    np.testing.assert_array_equal(proba[:, 0], p)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    order = np.argsort(det.score_samples(X_new))
    assert np.all(np.diff(p[order]) >= 0)  # higher score, higher p-value
    # a pipeline forwards predict_proba to its detector
    pipe = make_pipeline(PCA(2), KNNScorer()).fit(X)
    np.testing.assert_array_equal(
        pipe.predict_proba(X_new)[:, 0], pipe[-1].p_values(pipe[:-1].transform(X_new))
    )


def _splits(seed: int) -> tuple[np.ndarray, ...]:
    X, _ = make_anomaly_images(15000, 0, image_size=8, n_channels=1, random_state=0)
    idx = np.random.default_rng(seed).permutation(len(X))
    return X[idx[:5000]], X[idx[5000:10000]], X[idx[10000:]]


@pytest.mark.parametrize("scorer", [KNNScorer(), GaussianScorer()], ids=["knn", "gaussian"])
def test_p_value_guarantee_on_held_out_normal_images(scorer: object) -> None:
    # P(p <= alpha) <= alpha for new normal images: 5000 test images put the share's
    # standard deviation near 0.003, so [0.02, 0.08] is no matter of luck
    X_train, X_cal, X_test = _splits(seed=0)
    pipe = make_pipeline(PixelFeatures(), scorer).fit(X_train)
    if isinstance(scorer, KNNScorer):  # leave-one-out training scores calibrate as they are
        share = np.mean(pipe.predict_proba(X_test)[:, 0] <= 0.05)
        assert 0.02 <= share <= 0.08, share
    # held-out normal images calibrate any detector
    set_threshold(pipe, X_cal, fpr=0.05)
    p = pipe.predict_proba(X_test)[:, 0]
    assert 0.02 <= np.mean(p <= 0.05) <= 0.08, np.mean(p <= 0.05)
    np.testing.assert_array_equal(pipe.predict(X_test) == -1, p <= 0.05)  # one rule


def test_in_sample_gaussian_scores_are_optimistic() -> None:
    # a full-covariance Gaussian in 64 dimensions from 150 training images: the training
    # images score far higher than new ones, so p-values against them are far too small
    X_train, X_cal, X_test = _splits(seed=1)
    pipe = make_pipeline(PixelFeatures(), GaussianScorer(variance=None)).fit(X_train[:150])
    assert np.mean(pipe.predict_proba(X_test)[:, 0] <= 0.05) > 0.5
    set_threshold(pipe, X_cal, fpr=0.05)  # held-out normal images: honest again
    assert 0.02 <= np.mean(pipe.predict_proba(X_test)[:, 0] <= 0.05) <= 0.08


def test_fpr_threshold_is_the_conformal_order_statistic() -> None:
    rng = np.random.default_rng(1)
    det = KNNScorer().fit(rng.normal(size=(200, 2)))
    X_val = rng.normal(size=(59, 2))
    val_scores = det.score_samples(X_val)
    assert set_threshold(det, X_val, fpr=0.05) is det
    assert det.offset_ == np.sort(val_scores)[2]  # floor(0.05 * 60) = 3rd smallest
    np.testing.assert_array_equal(det.calibration_scores_, val_scores)
    X_new = rng.normal(size=(300, 2)) * 1.5
    np.testing.assert_array_equal(det.predict(X_new) == -1, det.p_values(X_new) <= 0.05)
    # labelled validation images: only the normal ones set the threshold
    y = np.r_[np.zeros(59, bool), np.ones(5, bool)]
    set_threshold(det, np.vstack([X_val, rng.normal(8, 1, (5, 2))]), y, fpr=0.05)
    assert det.offset_ == np.sort(val_scores)[2]
    # a new fit brings back the contamination threshold and the training scores
    det.fit(rng.normal(size=(50, 2)))
    assert det.calibration_scores_ is det.train_scores_


def test_f1_threshold_is_the_best_cut() -> None:
    rng = np.random.default_rng(2)
    det = KNNScorer().fit(rng.normal(size=(200, 2)))
    X_val = np.vstack([rng.normal(size=(80, 2)), rng.normal(2.5, 1, (20, 2))])
    y = np.r_[np.zeros(80), np.ones(20)].astype(int)
    scores = det.score_samples(X_val)
    set_threshold(det, X_val, y)
    best = max(f1_score(y, scores <= s) for s in scores)
    assert f1_score(y, det.predict(X_val) == -1) == pytest.approx(best)
    assert not np.any(np.isclose(scores, det.offset_))  # halfway between two scores
    # separable anomalies: every one flagged, no normal image
    X_far = np.vstack([X_val[:80], rng.normal(30, 1, (20, 2))])
    set_threshold(det, X_far, y.astype(bool))
    np.testing.assert_array_equal(det.predict(X_far) == -1, y == 1)


def test_set_threshold_errors() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 2))
    det = KNNScorer().fit(X)
    with pytest.raises(ValueError, match="needs fpr"):
        set_threshold(det, X)
    with pytest.raises(ValueError, match=r"y_val must mark the anomalies.*y_val == -1"):
        set_threshold(det, X, np.where(np.arange(50) < 40, 1, -1))
    with pytest.raises(ValueError, match="50 labels for 49 images"):
        set_threshold(det, X[:49], np.zeros(50))
    with pytest.raises(ValueError, match=r"fpr=0.01 needs at least 99 normal.*got 50"):
        set_threshold(det, X, fpr=0.01)
    with pytest.raises(ValueError, match="both normal images and anomalies"):
        set_threshold(det, X, np.zeros(50))
    with pytest.raises(ValueError, match="'fpr' parameter of set_threshold"):
        set_threshold(det, X, fpr=1.5)
    with pytest.raises(TypeError, match="offset_.*got PCA"):
        set_threshold(PCA(1).fit(X), X, fpr=0.1)
    with pytest.raises(NotFittedError):
        set_threshold(KNNScorer(), X, fpr=0.1)


def test_set_threshold_on_other_detectors_and_saved_models(tmp_path: object) -> None:
    rng = np.random.default_rng(4)
    X, X_val = rng.normal(size=(100, 2)), rng.normal(size=(39, 2))
    forest = set_threshold(IsolationForest(random_state=0).fit(X), X_val, fpr=0.05)
    assert forest.offset_ == np.sort(forest.score_samples(X_val))[1]  # floor(0.05 * 40) = 2nd
    det = set_threshold(make_pipeline(PCA(2), GaussianScorer()).fit(X), X_val, fpr=0.05)
    path = f"{tmp_path}/det.ssad"
    ssad.save(det, path)
    restored = ssad.load(path)
    assert restored[-1].offset_ == det[-1].offset_
    np.testing.assert_array_equal(restored.predict_proba(X), det.predict_proba(X))
