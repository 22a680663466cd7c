"""TransformalyDetector: contract, student wiring, options, persistence."""

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils import estimator_checks as sk_checks

from ssad import Transformaly, TransformalyDetector
from ssad.datasets import make_anomaly_images
from ssad.utils.estimator_checks import SKLEARN_GENERIC_CHECKS, check_image_detector

TINY = {"backbone": "test_vit", "pretrained": False, "image_size": 32, "n_student_blocks": 2}


def test_alias_and_paper_defaults():
    assert Transformaly is TransformalyDetector
    det = Transformaly()
    assert det.backbone == "vit_base_patch16_384.orig_in21k_ft_in1k"
    assert (det.n_student_blocks, det.n_epochs, det.batch_size) == (10, 30, 32)
    assert (det.learning_rate, det.variance, det.validation_fraction) == (1e-4, 0.9, 0.1)


@pytest.mark.parametrize("check", SKLEARN_GENERIC_CHECKS)
def test_sklearn_generic_checks(check):
    getattr(sk_checks, check)("TransformalyDetector", Transformaly(**TINY))


def test_contract_vit():
    check_image_detector(Transformaly(**TINY, n_epochs=1, random_state=0), sklearn_checks=False)


@pytest.mark.parametrize(
    ("feature_space", "scorer"),
    [("both", "knn"), ("pretrained", "gaussian"), ("finetuned", "gmm")],
)
def test_contract_variants(feature_space, scorer):
    det = Transformaly(
        **TINY, n_epochs=1, random_state=0, feature_space=feature_space, scorer=scorer
    )
    check_image_detector(det, sklearn_checks=False)


def test_contract_cnn_teacher():
    det = Transformaly(
        "test_resnet",
        pretrained=False,
        image_size=32,
        n_student_blocks=2,
        n_epochs=1,
        random_state=0,
    )
    check_image_detector(det, sklearn_checks=False)


def test_finetuned_space_alone_separates_anomalies():
    X, y = make_anomaly_images(n_normal=80, n_anomalous=20, image_size=32, random_state=0)
    X_train, X_test = X[y == 0][:60], np.concatenate([X[y == 0][60:], X[y == 1]])
    y_test = np.r_[np.zeros(20), np.ones(20)]
    det = Transformaly(
        **{**TINY, "n_student_blocks": 3},
        feature_space="finetuned",
        n_epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        random_state=0,
    ).fit(X_train)
    assert det.pretrained_scorer_ is None and len(det.students_) == 3
    assert det.loss_curve_[-1] < det.loss_curve_[0]  # the students learn
    assert roc_auc_score(y_test, -det.score_samples(X_test)) > 0.8


def test_validation_split_and_best_epoch():
    X, _ = make_anomaly_images(n_normal=30, n_anomalous=0, image_size=32, random_state=1)
    det = Transformaly(**TINY, n_epochs=3, batch_size=8, random_state=0).fit(X)
    assert len(det.loss_curve_) == len(det.validation_curve_) == 3
    assert det.best_epoch_ == int(np.argmin(det.validation_curve_))
    no_val = Transformaly(**TINY, n_epochs=2, validation_fraction=None, random_state=0).fit(X)
    assert no_val.validation_curve_ == [] and no_val.best_epoch_ == 1
    pre = Transformaly(**TINY, feature_space="pretrained").fit(X)
    assert pre.students_ is None and pre.loss_curve_ == [] and pre.best_epoch_ == -1


def test_transform_concatenates_spaces(rgb_images):
    det = Transformaly(**TINY, n_epochs=1, random_state=0).fit(rgb_images)
    Z = det.transform(rgb_images[:3])
    assert Z.shape == (3, 64 + 2)
    assert np.all(Z[:, -2:] >= 0)  # squared discrepancies


def test_pickle_keeps_scores_and_students(rgb_images):
    det = Transformaly(**TINY, n_epochs=1, random_state=0).fit(rgb_images)
    restored = pickle.loads(pickle.dumps(det))
    np.testing.assert_allclose(restored.score_samples(rgb_images), det.score_samples(rgb_images))
    assert not any(p.requires_grad for p in restored.teacher_.parameters())


def test_too_many_student_blocks(rgb_images):
    with pytest.raises(ValueError, match="n_student_blocks=7 but 'test_vit' has only 6"):
        Transformaly(**{**TINY, "n_student_blocks": 7}).fit(rgb_images)
