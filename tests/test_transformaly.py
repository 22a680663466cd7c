"""TransformalyDetector: contract, student wiring, options, persistence."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
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
    assert [name for name, _, _ in det.scorer_.scorers_] == ["finetuned"]
    assert len(det.students_) == 3 and det.n_pretrained_features_ == 0
    assert det.loss_curve_[-1] < det.loss_curve_[0]  # the students learn
    assert roc_auc_score(y_test, -det.score_samples(X_test)) > 0.8


def test_validation_split_and_best_epoch():
    X, _ = make_anomaly_images(n_normal=30, n_anomalous=0, image_size=32, random_state=1)
    det = Transformaly(**TINY, n_epochs=3, batch_size=8, random_state=0).fit(X)
    assert len(det.loss_curve_) == len(det.validation_curve_) == 3
    assert det.best_epoch_ == int(np.argmin(det.validation_curve_)) and det.n_epochs_ == 3
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
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    pickle.loads(pickle.dumps(det))  # rebuilding the modules leaves the global RNG alone
    assert torch.equal(torch.rand(3), expected)


def test_students_that_copy_their_teacher_are_reported(rgb_images, caplog):
    det = Transformaly(**TINY, n_epochs=1, student_init="copy", dropout=0.0, random_state=0)
    with caplog.at_level("WARNING", logger="ssad.detectors.transformaly"):
        det.fit(rgb_images)
    assert "z_f is constant" in caplog.text


def test_patience_needs_a_validation_split(rgb_images):
    det = Transformaly(**TINY, validation_fraction=None, n_iter_no_change=2)
    with pytest.raises(ValueError, match="n_iter_no_change=2 .* needs validation_fraction"):
        det.fit(rgb_images)


def test_too_many_student_blocks(rgb_images):
    with pytest.raises(ValueError, match="n_student_blocks=7 but 'test_vit' has only 6"):
        Transformaly(**{**TINY, "n_student_blocks": 7}).fit(rgb_images)


def test_early_stopping_on_the_validation_loss():
    X, _ = make_anomaly_images(n_normal=30, n_anomalous=0, image_size=32, random_state=1)
    # a learning rate this high makes the validation loss rise after the first epochs
    det = Transformaly(
        **TINY, n_epochs=20, n_iter_no_change=2, learning_rate=0.5, batch_size=8, random_state=0
    ).fit(X)
    assert det.n_epochs_ < 20 and len(det.validation_curve_) == det.n_epochs_
    assert det.n_epochs_ == det.best_epoch_ + 3  # stopped 2 epochs after the best one
    assert det.validation_curve_[det.best_epoch_] == min(det.validation_curve_)


def test_students_have_dropout_teacher_does_not(rgb_images):
    det = Transformaly(**TINY, n_epochs=1, dropout=0.3, random_state=0).fit(rgb_images)
    ps = {m.p for m in det.students_.modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.3}
    assert {m.p for m in det.teacher_.modules() if isinstance(m, torch.nn.Dropout)} <= {0.0}
    restored = pickle.loads(pickle.dumps(det))  # rebuilt students keep the rate
    assert {m.p for m in restored.students_.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}


@pytest.mark.parametrize(("scorer", "standardized"), [("gaussian", False), ("knn", True)])
def test_scorer_applies_to_the_pretrained_space(rgb_images, scorer, standardized):
    det = Transformaly(**TINY, n_epochs=1, scorer=scorer, n_neighbors=3, random_state=0)
    det.fit(rgb_images)
    parts = dict((name, est) for name, est, _ in det.scorer_.scorers_)
    assert type(parts["finetuned"]).__name__ == "GaussianScorer"
    if scorer == "knn":
        assert parts["pretrained"].n_neighbors == 3
    assert det.scorer_.standardize is standardized
    Z = det.transform(rgb_images)
    by_part = det.scorer_.score_parts(Z)
    expected = sum(
        (by_part[n] - m) / s
        for n, m, s in zip(
            ["pretrained", "finetuned"], det.scorer_.part_means_, det.scorer_.part_scales_
        )
    )
    np.testing.assert_allclose(det.score_samples(rgb_images), expected, rtol=1e-6)


def test_gmm_with_the_papers_numbers_of_components(rgb_images):
    X = np.concatenate([rgb_images] * 3)
    det = Transformaly(**TINY, n_epochs=1, scorer="gmm", n_components=2, random_state=0).fit(X)
    pretrained = det.scorer_.scorers_[0][1]
    assert pretrained[-1].n_components_ == 2


def test_concurrent_scoring_is_thread_safe(rgb_images):
    det = Transformaly(**TINY, n_epochs=1, batch_size=4, random_state=0).fit(rgb_images)
    inputs = [rgb_images[i % 3 :: 3] for i in range(12)]
    expected = [det.score_samples(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(det.score_samples, inputs))
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_too_few_images_named_up_front(rgb_images):
    with pytest.raises(ValueError, match="needs at least 4 training images.*got 2"):
        Transformaly(**TINY, scorer="knn", n_epochs=1).fit(rgb_images[:2])


def test_a_one_component_mixture_is_added_as_a_gaussian(rgb_images):
    X = np.concatenate([rgb_images] * 3)
    one = Transformaly(**TINY, n_epochs=1, scorer="gmm", n_components=1, random_state=0).fit(X)
    two = Transformaly(**TINY, n_epochs=1, scorer="gmm", n_components=2, random_state=0).fit(X)
    assert not one.scorer_.standardize and two.scorer_.standardize


def test_cosine_knn_scores_the_pretrained_space_by_angle(rgb_images):
    from sklearn.neighbors import NearestNeighbors

    det = Transformaly(
        **TINY, feature_space="pretrained", scorer="knn", metric="cosine", random_state=0
    ).fit(rgb_images)
    Z = det.transform(rgb_images[:5])
    Z_fit = det.transform(rgb_images)
    dist, _ = NearestNeighbors(n_neighbors=2, metric="cosine").fit(Z_fit).kneighbors(Z * 3.0)
    np.testing.assert_allclose(det.score_samples(rgb_images[:5]), -dist.sum(1), atol=1e-5)
    l2 = Transformaly(**TINY, feature_space="pretrained", scorer="knn", random_state=0)
    assert l2.fit(rgb_images).scorer_.scorers_[0][1].metric == "l2"
