"""SelfDistillNegDetector: contract, negatives, auxiliary images, scores, persistence."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.utils import estimator_checks as sk_checks

from ssad.detectors.self_distill import SelfDistillNegDetector
from ssad.model_selection import select_by_sensitivity, sensitivity_score
from ssad.utils.estimator_checks import SKLEARN_GENERIC_CHECKS, check_image_detector

TINY = {
    "backbone": "test_vit",
    "pretrained": False,
    "image_size": 32,
    "out_dim": 32,
    "hidden_dim": 32,
    "bottleneck_dim": 16,
    "n_local_crops": 2,
    "n_epochs": 1,
    "batch_size": 8,
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core CPU: one intra-op thread is many times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


def test_paper_defaults():
    det = SelfDistillNegDetector()
    assert (det.backbone, det.pretrained) == ("vit_small_patch16_224", False)
    assert (det.out_dim, det.hidden_dim, det.bottleneck_dim) == (4096, 2048, 256)
    assert (det.n_local_crops, det.global_crop_scale, det.local_crop_scale) == (
        8,
        (0.4, 1.0),
        (0.05, 0.4),
    )
    assert (det.negatives, det.negative_source, det.negative_weight) == ("rot", "in", 1.0)
    assert (det.student_temperature, det.teacher_temperature, det.teacher_temperature_end) == (
        0.1,
        0.055,
        0.01,
    )
    assert (det.center_momentum, det.teacher_momentum) == (0.9, 0.996)
    assert (det.scorer, det.kernel_temperature) == ("cosine_kernel", 0.04)
    assert (det.weight_decay, det.weight_decay_end, det.clip_grad_norm) == (0.04, 0.4, 3.0)


@pytest.mark.parametrize("check", SKLEARN_GENERIC_CHECKS)
def test_sklearn_generic_checks(check):
    getattr(sk_checks, check)("SelfDistillNegDetector", SelfDistillNegDetector(**TINY))


def test_contract():
    # 32x32 images, test_vit, K=32, one epoch: fit, contamination, determinism, pickle
    check_image_detector(SelfDistillNegDetector(**TINY, random_state=0), sklearn_checks=False)


@pytest.mark.parametrize("negatives", [None, "rot360", "perm4", "perm16", "pixel_shuffle"])
def test_each_negative_trains(images, negatives):
    det = SelfDistillNegDetector(**TINY, negatives=negatives, random_state=0).fit(images)
    assert len(det.loss_curve_) == 1 and np.isfinite(det.loss_curve_[0])
    assert det.n_steps_ == 2  # 16 images, batches of 8, last incomplete batch dropped
    assert np.all(np.isfinite(det.score_samples(images[:4])))


def test_negative_loss_is_added(images):
    plain = SelfDistillNegDetector(**TINY, negatives=None, random_state=0).fit(images)
    rot = SelfDistillNegDetector(**TINY, negatives="rot", random_state=0).fit(images)
    # the uniform cross-entropy is at least log K
    assert rot.loss_curve_[0] > plain.loss_curve_[0] + 0.9 * np.log(TINY["out_dim"])


@pytest.mark.parametrize("scorer", ["max_cosine", "mahalanobis"])
def test_other_scorers(images, scorer):
    det = SelfDistillNegDetector(**TINY, scorer=scorer, random_state=0).fit(images)
    s = det.score_samples(images)
    if scorer == "max_cosine":  # a training image is its own nearest neighbour
        np.testing.assert_allclose(s, 0.0, atol=1e-5)
        assert type(det.scorer_).__name__ == "KNNScorer"
    else:
        assert type(det.scorer_).__name__ == "GaussianScorer"
    Z = det.transform(images[:3])
    assert Z.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-6)


def test_auxiliary_negatives(images):
    rng = np.random.default_rng(1)
    X_aux = rng.integers(0, 256, (5, 24, 24), dtype=np.uint8)  # other size, grey: resized
    with pytest.raises(ValueError, match=r"pass them as fit\(X, X_aux=...\)"):
        SelfDistillNegDetector(**TINY, negative_source="aux").fit(images)
    for source in ("aux", "both"):
        det = SelfDistillNegDetector(**TINY, negative_source=source, random_state=0)
        assert det.fit(images, X_aux=X_aux) is det
        assert "X_aux" not in vars(det)  # fit parameters are not stored on the estimator
    with pytest.raises(ValueError, match="X_aux was passed but would not be used"):
        SelfDistillNegDetector(**TINY, random_state=0).fit(images, X_aux=X_aux)
    with pytest.raises(TypeError, match=r"unexpected fit parameter\(s\) \['X_extra'\]"):
        SelfDistillNegDetector(**TINY).fit(images, X_extra=X_aux)


def test_random_state_and_pickle(images):
    a = SelfDistillNegDetector(**TINY, random_state=0).fit(images)
    b = SelfDistillNegDetector(**TINY, random_state=1).fit(images)
    assert not np.allclose(a.score_samples(images), b.score_samples(images))
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_allclose(restored.score_samples(images), a.score_samples(images))
    assert not any(p.requires_grad for p in restored.teacher_.parameters())


def test_crop_sizes_and_schedules(images):
    det = SelfDistillNegDetector(**TINY, random_state=0).fit(images)
    assert (det.global_crop_size_, det.local_crop_size_) == ((32, 32), (16, 16))
    small_patch = SelfDistillNegDetector(
        **{**TINY, "backbone_kwargs": {"patch_size": 4}}, random_state=0
    ).fit(images[:8])
    assert small_patch.local_crop_size_ == (12, 12)  # 32 * 96 / 224 on the 4-pixel grid
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        SelfDistillNegDetector(**TINY, global_crop_size=24).fit(images)
    linear = SelfDistillNegDetector(n_epochs=5)._teacher_temps()
    np.testing.assert_allclose(linear, np.linspace(0.055, 0.01, 5))
    dino = SelfDistillNegDetector(
        n_epochs=5,
        teacher_temperature=0.04,
        teacher_temperature_end=0.07,
        teacher_temperature_schedule="dino",
        teacher_temperature_warmup_epochs=3,
    )._teacher_temps()
    np.testing.assert_allclose(dino, [0.04, 0.055, 0.07, 0.07, 0.07])
    with pytest.raises(ValueError, match="global_crop_scale"):
        SelfDistillNegDetector(**TINY, global_crop_scale=(0.5, 0.1)).fit(images)
    with pytest.raises(ValueError, match="weight_decay=0 cannot be scheduled"):
        SelfDistillNegDetector(**TINY, weight_decay=0.0).fit(images)


def test_cnn_backbone(images):
    det = SelfDistillNegDetector(
        **{**TINY, "backbone": "test_resnet"}, negatives="perm4", random_state=0
    ).fit(images)
    assert det.local_crop_size_ == (14, 14)  # no patch grid
    assert det.score_samples(images[:2]).shape == (2,)


def test_sensitivity_score_with_detector():
    rng = np.random.default_rng(0)
    X_train = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    X_test_in = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    det = SelfDistillNegDetector(**TINY, random_state=0)
    s = sensitivity_score(det, X_train, X_test_in, n_holdout=4, random_state=0)
    assert 0.0 <= s <= 1.0
    sel = select_by_sensitivity(
        det, "negatives", [None, "rot"], X_train, X_test_in, n_holdout=4, random_state=0
    )
    assert sel.best_value in (None, "rot") and len(sel.table) == 2
    assert sel.table[1]["sensitivity"] == pytest.approx(s)  # same held-out images, same model


def test_teacher_momentum_one_is_refused(images):
    """At momentum 1 the EMA teacher, which scores, would never leave its start."""
    with pytest.raises(ValueError, match="'teacher_momentum' parameter"):
        SelfDistillNegDetector(**TINY, teacher_momentum=1.0).fit(images)
