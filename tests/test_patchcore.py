"""PatchCoreDetector, the greedy coreset and the anomaly maps of the image detectors."""

import pickle

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils import estimator_checks as sk_checks

import ssad
from ssad import PatchCoreDetector, Transformaly
from ssad.datasets import make_local_defect_images
from ssad.metrics import pixel_roc_auc_score
from ssad.scoring import greedy_coreset
from ssad.utils.estimator_checks import SKLEARN_GENERIC_CHECKS, check_image_detector

TINY = {"backbone": "test_resnet", "pretrained": False, "image_size": 32}


@pytest.fixture(scope="module")
def defects():
    """Objects with small defects: 24 normal training images, 6 normal and 6 defective."""
    X, y, masks = make_local_defect_images(30, 6, kind="object", image_size=32, random_state=0)
    return X[:24], X[24:], y[24:], masks[24:]


# ----------------------------------------------------------------------- coreset


def test_greedy_coreset_covers_better_than_random():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (500, 5)), rng.normal(8, 1, (20, 5))])  # a small far cluster
    idx = greedy_coreset(X, 10, projection_dim=None, random_state=0)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 10
    assert (idx >= 500).any()  # the far cluster is covered

    def radius(centres):
        d = np.linalg.norm(X[:, None] - X[centres][None], axis=2)
        return d.min(axis=1).max()

    random_radius = np.mean([radius(rng.choice(len(X), 10, replace=False)) for _ in range(5)])
    assert radius(idx) < random_radius
    np.testing.assert_array_equal(idx, greedy_coreset(X, 10, projection_dim=None, random_state=0))
    # the first m of a greedy coreset are the greedy coreset of size m
    first = greedy_coreset(X, 4, projection_dim=None, random_state=0)
    np.testing.assert_array_equal(first, idx[:4])
    projected = greedy_coreset(X, 10, projection_dim=2, random_state=0)
    assert (projected >= 500).any()
    np.testing.assert_array_equal(greedy_coreset(X[:3], 5), [0, 1, 2])
    np.testing.assert_array_equal(np.sort(greedy_coreset(np.zeros((6, 2)), 6)), np.arange(6))
    assert len(set(greedy_coreset(np.zeros((6, 2)), 4, random_state=0).tolist())) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 0}, "'n_samples' parameter"),
        ({"n_samples": 2, "projection_dim": 0}, "'projection_dim' parameter"),
        ({"n_samples": 2.5}, "'n_samples' parameter"),
    ],
)
def test_greedy_coreset_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        greedy_coreset(np.ones((4, 2)), **kwargs)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        greedy_coreset(np.ones(4), 2)


# --------------------------------------------------------------------- PatchCore


def test_paper_defaults():
    det = PatchCoreDetector()
    assert det.backbone == "wide_resnet50_2.tv_in1k" and det.pretrained
    assert (det.layers, det.neighborhood_size, det.n_features) == ((2, 3), 3, 1024)
    assert (det.coreset_ratio, det.projection_dim, det.n_reweight_neighbors) == (0.1, 128, None)
    assert ssad.PatchCoreDetector is ssad.detectors.PatchCoreDetector


@pytest.mark.parametrize("check", SKLEARN_GENERIC_CHECKS)
def test_sklearn_generic_checks(check):
    getattr(sk_checks, check)("PatchCoreDetector", PatchCoreDetector(**TINY))


def test_contract():
    check_image_detector(PatchCoreDetector(**TINY, random_state=0), sklearn_checks=False)


def test_contract_vit_streamed_and_reweighted():
    det = PatchCoreDetector(
        "test_vit",
        pretrained=False,
        image_size=32,
        layers=(1, 2),
        pool_size=40,  # 4 patches per image: the coreset is reduced chunk by chunk
        coreset_size=8,
        n_reweight_neighbors=3,
        random_state=0,
    )
    check_image_detector(det, sklearn_checks=False)


def test_fit_features_and_maps(defects):
    X_train, X_test, y_test, masks = defects
    det = PatchCoreDetector(**TINY, coreset_ratio=0.25, random_state=0).fit(X_train)
    assert det.grid_shape_ == (4, 4)  # layer2 of a 32-pixel input: stride 8
    assert det.n_features_ == 48 + 192 == det.memory_bank_.shape[1]
    assert det.n_patches_fit_ == 24 * 16 and det.memory_bank_.shape[0] == 24 * 4
    assert det.memory_bank_.dtype == np.float32
    assert det.transform(X_test[:2]).shape == (2, 16 * 240)
    maps = det.anomaly_map(X_test)
    assert maps.shape == (12, 32, 32) and maps.dtype == np.float32 and np.isfinite(maps).all()
    # the image score is minus the largest patch distance: the unsmoothed grid's maximum
    grids = det._grid_maps(det._validate_input(X_test, reset=False))
    np.testing.assert_allclose(-det.score_samples(X_test), grids.max(axis=(1, 2)), rtol=1e-5)
    raw = det.anomaly_map(X_test, sigma=None)
    assert raw.max() <= grids.max() + 1e-5 and raw.std() > maps.std()  # smoothing
    # random weights and an 8 x 8 grid already point at the defects
    finer = PatchCoreDetector(**{**TINY, "image_size": 64}, coreset_ratio=0.25, random_state=0)
    finer.fit(X_train)
    assert pixel_roc_auc_score(masks, finer.anomaly_map(X_test)) > 0.75
    assert roc_auc_score(y_test, -finer.score_samples(X_test)) >= 0.5
    # n_features pools each stage's channels to an equal share
    narrow = PatchCoreDetector(**TINY, n_features=64, random_state=0).fit(X_train[:4])
    assert narrow.n_features_ == 32 + 32
    # every patch kept: brute force, the training images score 0
    full = PatchCoreDetector(**TINY, coreset_ratio=1.0).fit(X_train[:4])
    assert full.memory_bank_.shape[0] == 4 * 16 and (full.train_scores_ == 0).all()


def test_memory_bank_bounded_by_coreset_size(defects):
    X_train = defects[0]
    many = np.concatenate([X_train] * 4)
    kwargs = {**TINY, "coreset_size": 20, "pool_size": 64, "random_state": 0}
    small = PatchCoreDetector(**kwargs).fit(X_train)
    large = PatchCoreDetector(**kwargs).fit(many)
    assert small.memory_bank_.shape == large.memory_bank_.shape == (20, 240)
    np.testing.assert_allclose(large.train_scores_, large.score_samples(many), rtol=1e-5)


@pytest.mark.parametrize("calibration_size", [3, 30, 200])
def test_calibration_size_scores_a_sample_without_embedding_it_again(
    defects, calibration_size, monkeypatch
):
    many = np.concatenate([defects[0]] * 4)  # 96 images, 16 patches each: 6 chunks of 16
    kwargs = {**TINY, "coreset_size": 20, "pool_size": 300, "random_state": 0}
    embedded = []
    embed = PatchCoreDetector._embed

    def counting(self, images, desc, fn=None):
        embedded.append(len(images))
        return embed(self, images, desc, fn)

    monkeypatch.setattr(PatchCoreDetector, "_embed", counting)
    det = PatchCoreDetector(**kwargs, calibration_size=calibration_size).fit(many)
    n_fit = sum(embedded)
    m = min(calibration_size, len(many))
    idx = det.calibration_indices_
    assert det.train_scores_.shape == idx.shape == (m,) and len(set(idx.tolist())) == m
    np.testing.assert_allclose(det.train_scores_, det.score_samples(many[idx]), rtol=1e-5)
    assert det.offset_ == pytest.approx(np.percentile(det.train_scores_, 10))
    # the last chunk (16 images) is at hand: only calibration images beyond it are embedded again
    assert n_fit == len(many) + max(0, m - 16)
    assert det.memory_bank_.shape == (20, 240)


def test_persistence(defects, tmp_path):
    X_train, X_test = defects[0], defects[1]
    det = PatchCoreDetector(**TINY, n_reweight_neighbors=2, random_state=0).fit(X_train)
    scores, maps = det.score_samples(X_test), det.anomaly_map(X_test)
    for restored in (pickle.loads(pickle.dumps(det)), _save_load(det, tmp_path / "pc.ssad")):
        np.testing.assert_allclose(restored.score_samples(X_test), scores, rtol=1e-5)
        np.testing.assert_allclose(restored.anomaly_map(X_test), maps, rtol=1e-5, atol=1e-6)


def _save_load(det, path):
    ssad.save(det, path)
    return ssad.load(path)


def test_parameter_errors(defects):
    X_train = defects[0]
    with pytest.raises(ValueError, match="'neighborhood_size' parameter .* odd"):
        PatchCoreDetector(**TINY, neighborhood_size=2).fit(X_train)
    with pytest.raises(ValueError, match="'layers' parameter"):
        PatchCoreDetector(**TINY, layers=()).fit(X_train)
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCoreDetector(**TINY, coreset_ratio=0.0).fit(X_train)


# ------------------------------------------------------------------ anomaly maps


def test_anomaly_map_exists_only_with_a_spatial_representation(defects):
    assert hasattr(PatchCoreDetector(), "anomaly_map")
    assert hasattr(Transformaly(), "anomaly_map")
    assert not hasattr(Transformaly(feature_space="pretrained"), "anomaly_map")
    assert not hasattr(ssad.SelfDistillNegDetector(), "anomaly_map")
    assert not hasattr(ssad.ConvexMILDetector(), "anomaly_map")


def test_anomaly_map_inputs(defects):
    X_train, X_test = defects[0], defects[1]
    det = PatchCoreDetector(**TINY, random_state=0)
    with pytest.raises(NotFittedError):
        det.anomaly_map(X_test)
    det.fit(X_train)
    from PIL import Image

    images = [Image.fromarray(x) for x in X_test[:2]]
    np.testing.assert_allclose(det.anomaly_map(images), det.anomaly_map(X_test[:2]), atol=1e-4)
    big = np.repeat(np.repeat(X_test[:1], 2, axis=1), 2, axis=2)  # 64 x 64: maps follow the input
    assert det.anomaly_map(big).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="one size"):
        det.anomaly_map([Image.fromarray(X_test[0]), Image.fromarray(big[0])])
    with pytest.raises(ValueError, match="'sigma' parameter"):
        det.anomaly_map(X_test, sigma=-1.0)
    for sigma in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite float >= 0"):
            det.anomaly_map(X_test, sigma=sigma)


@pytest.mark.parametrize("backbone", ["test_vit", "test_resnet"])
def test_transformaly_map(backbone, defects):
    X_train, X_test = defects[0], defects[1]
    det = Transformaly(
        backbone, pretrained=False, image_size=32, n_student_blocks=2, n_epochs=1, random_state=0
    ).fit(X_train)
    maps = det.anomaly_map(X_test)
    assert maps.shape == (12, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all()
    # relative to each block's training mean: about 1 on average on normal images
    assert 0.2 < float(det.anomaly_map(X_train).mean()) < 5.0


@pytest.mark.parametrize(
    "module", ["ssad.detectors.patchcore", "ssad.scoring._coreset", "ssad.features._embed"]
)
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_localisation_example_runs(tmp_path):
    import runpy
    from pathlib import Path

    pytest.importorskip("matplotlib").use("Agg")
    path = Path(__file__).resolve().parents[1] / "examples" / "localisation.py"
    main = runpy.run_path(str(path))["main"]
    argv = ["--backbone", "test_resnet", "--n-train", "12", "--n-test", "8", "--image-size", "32"]
    results = main([*argv, "--kind", "object", "--out", str(tmp_path / "maps.png")])
    assert set(results) == {"image AUROC", "pixel AUROC", "PRO"}
    assert (tmp_path / "maps.png").is_file()


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_the_memory_bank_is_searched_through_an_approximate_index(defects, index):
    X_train, X_test = defects[0], defects[1]
    params = {**TINY, "coreset_ratio": 1.0, "random_state": 0}
    exact = PatchCoreDetector(**params).fit(X_train)
    approx = PatchCoreDetector(**params, index=index, n_probe=64).fit(X_train)
    assert exact._bank_search().index_ == "flat" and approx._bank_search().index_ == index
    np.testing.assert_array_equal(approx.memory_bank_, exact.memory_bank_)
    # an approximate search finds a bank patch at least as far as the nearest one
    scores, expected = approx.score_samples(X_test), exact.score_samples(X_test)
    assert (scores <= expected + 1e-6).all()
    assert np.isclose(scores, expected, rtol=1e-5).mean() >= 0.5
    maps = approx.anomaly_map(X_test)
    assert maps.shape == exact.anomaly_map(X_test).shape
    # a reloaded detector builds the same index (its IVF sample has a fixed seed)
    restored = pickle.loads(pickle.dumps(approx))
    np.testing.assert_array_equal(restored.score_samples(X_test), scores)


def test_num_workers_decodes_files_in_workers(defects, tmp_path):
    from PIL import Image

    paths = []
    for i, image in enumerate(defects[0][:8]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    serial = PatchCoreDetector(**TINY, random_state=0).fit(paths)
    workers = PatchCoreDetector(**TINY, num_workers=2, random_state=0).fit(paths)
    np.testing.assert_array_equal(workers.memory_bank_, serial.memory_bank_)
    np.testing.assert_array_equal(workers.score_samples(paths), serial.score_samples(paths))


def test_reweighting_needs_two_neighbours(defects):
    """b = 1 leaves only m* itself in eq. 7's sum: the weight, and every score, would be 0."""
    X_train = defects[0]
    with pytest.raises(ValueError, match="'n_reweight_neighbors' parameter"):
        PatchCoreDetector(**TINY, n_reweight_neighbors=1).fit(X_train)
    one_patch = PatchCoreDetector(**TINY, coreset_size=1, n_reweight_neighbors=3, random_state=0)
    plain = PatchCoreDetector(**TINY, coreset_size=1, random_state=0)
    np.testing.assert_allclose(
        one_patch.fit(X_train).score_samples(defects[1]),
        plain.fit(X_train).score_samples(defects[1]),
    )
