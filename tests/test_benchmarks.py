"""Protocols, evaluate, the sensitivity score, the registry and the runner of ssad.benchmarks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline

from ssad.benchmarks import (
    EvaluationResult,
    FromFitted,
    Preset,
    Split,
    Variant,
    available_estimators,
    available_presets,
    contaminated_splits,
    dataset_vs_dataset,
    default_baselines,
    evaluate,
    json_safe,
    leave_one_out_splits,
    load_schema,
    make_estimator,
    one_class_splits,
    register_estimator,
    register_preset,
    report_stem,
    run_preset,
    validate_report,
)
from ssad.benchmarks.__main__ import main
from ssad.datasets import make_anomaly_images, make_shape_images
from ssad.detectors import ConvexMILDetector, TransformalyDetector
from ssad.features import PixelFeatures, TimmFeatures
from ssad.model_selection import select_by_sensitivity, sensitivity_score
from ssad.scoring import CosineKernelScorer, GaussianScorer, KNNScorer

NAMES = [f"c{i}" for i in range(4)]


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, 400), rng.integers(0, 4, 100)


@pytest.fixture
def anomaly_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 normal training images; 30 normal + 15 anomalous test images (16x16 grey)."""
    X, y = make_anomaly_images(90, 15, image_size=16, n_channels=1, random_state=0)
    return X[:60], y[:60], X[60:], y[60:]


def knn_pixels() -> Pipeline:
    return Pipeline([("pixels", PixelFeatures()), ("knn", KNNScorer(n_neighbors=2))])


# -- protocols ------------------------------------------------------------------------------


def test_one_class_splits(labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_train, y_test = labels
    splits = list(one_class_splits(y_train, y_test, target_names=NAMES))
    assert [s.name for s in splits] == [f"class {c}: c{c}" for c in range(4)]
    for c, s in enumerate(splits):
        assert isinstance(s, Split)
        assert np.all(y_train[s.train_idx] == c)
        assert s.n_train == np.sum(y_train == c)
        np.testing.assert_array_equal(s.test_idx, np.arange(len(y_test)))
        np.testing.assert_array_equal(s.is_anomaly, y_test != c)
        assert s.is_anomaly.dtype == bool
        assert s.normal_classes == (c,) and s.n_train_anomalies == 0
        assert s.n_anomalies == np.sum(y_test != c)


def test_one_class_splits_classes_and_errors(labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_train, y_test = labels
    assert [s.name for s in one_class_splits(y_train, y_test, [2, 0])] == ["class 2", "class 0"]
    with pytest.raises(ValueError, match=r"classes \[7\] have no training image"):
        list(one_class_splits(y_train, y_test, [7]))
    with pytest.raises(ValueError, match="every test image is normal"):
        list(one_class_splits(y_train, np.zeros(5, dtype=int), [0]))
    with pytest.raises(TypeError, match="integer class labels"):
        list(one_class_splits(y_train.astype(float), y_test))


def test_leave_one_out_splits(labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_train, y_test = labels
    splits = list(leave_one_out_splits(y_train, y_test, target_names=NAMES))
    assert len(splits) == 4
    for c, s in enumerate(splits):
        assert s.name == f"class {c}: c{c}"
        assert np.all(y_train[s.train_idx] != c)
        assert s.n_train == np.sum(y_train != c)
        np.testing.assert_array_equal(s.is_anomaly, y_test == c)
        assert s.normal_classes == tuple(k for k in range(4) if k != c)


@pytest.mark.parametrize("ratio", [0.02, 0.05, 0.1, 0.3])
def test_contaminated_splits_ratio(labels: tuple[np.ndarray, np.ndarray], ratio: float) -> None:
    y_train, y_test = labels
    for c, s in enumerate(contaminated_splits(y_train, y_test, ratio, random_state=0)):
        own = y_train[s.train_idx] == c
        assert own.sum() == np.sum(y_train == c)  # every image of c is in
        n_other = int((~own).sum())
        assert n_other == s.n_train_anomalies
        assert n_other == round(ratio * own.sum() / (1 - ratio))
        assert abs(n_other / s.n_train - ratio) <= 1.0 / s.n_train  # the share, within rounding
        assert len(np.unique(s.train_idx)) == s.n_train  # drawn without replacement
        np.testing.assert_array_equal(s.is_anomaly, y_test != c)
        np.testing.assert_array_equal(s.train_is_anomaly, ~own)  # kept for the candidate recall


def test_contaminated_splits_reproducible(labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_train, y_test = labels
    a = [s.train_idx for s in contaminated_splits(y_train, y_test, 0.1, random_state=3)]
    b = [s.train_idx for s in contaminated_splits(y_train, y_test, 0.1, random_state=3)]
    c = [s.train_idx for s in contaminated_splits(y_train, y_test, 0.1, random_state=4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # with an int seed, a class's draw does not depend on the other classes run
    (only2,) = contaminated_splits(y_train, y_test, 0.1, classes=[2], random_state=3)
    np.testing.assert_array_equal(only2.train_idx, a[2])
    # ratio 0 is the one-class protocol
    for s0, s1 in zip(contaminated_splits(y_train, y_test, 0.0), one_class_splits(y_train, y_test)):
        np.testing.assert_array_equal(s0.train_idx, s1.train_idx)


def test_contaminated_splits_errors(labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_train, y_test = labels
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(ValueError, match="'ratio' parameter"):
            list(contaminated_splits(y_train, y_test, bad))
    y = np.array([0] * 50 + [1] * 2)
    with pytest.raises(ValueError, match="only 2 exist"):
        list(contaminated_splits(y, y, 0.5, classes=[0]))


def test_dataset_vs_dataset() -> None:
    (s,) = dataset_vs_dataset(5, 3, 4, name="a vs b")
    assert s.name == "a vs b"
    np.testing.assert_array_equal(s.train_idx, np.arange(5))
    np.testing.assert_array_equal(s.test_idx, np.arange(7))
    np.testing.assert_array_equal(s.is_anomaly, [False] * 3 + [True] * 4)
    with pytest.raises(ValueError, match="'n_test_out' parameter"):
        list(dataset_vs_dataset(5, 3, 0))


# -- evaluate -------------------------------------------------------------------------------


def test_evaluate_matches_manual_auroc(anomaly_data: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, X_te, y_te = anomaly_data
    est = knn_pixels()
    res = evaluate(est, one_class_splits(y_tr, y_te), X_tr, X_te, random_state=0, name="knn")
    assert isinstance(res, EvaluationResult)
    assert not hasattr(est[-1], "offset_")  # the estimator given is cloned, never fitted
    (split,) = res.splits
    scores = knn_pixels().fit(X_tr).score_samples(X_te)
    assert split.auroc == pytest.approx(roc_auc_score(y_te == 1, -scores))
    assert split.average_precision == pytest.approx(average_precision_score(y_te == 1, -scores))
    assert split.auroc > 0.9  # textured patches are far from discs in pixel space
    assert res.mean_auroc == split.auroc
    assert split.fit_seconds > 0 and split.score_seconds > 0
    assert split.to_dict()["fit_images_per_s"] == pytest.approx(60 / split.fit_seconds)
    assert split.peak_rss_mb > 0
    assert split.peak_cuda_mb is None
    # baselines: knn-pixels is the estimator, the embeddings are the pixels, no network
    assert [m.name for m in res.models] == ["knn", "iforest-pixels"]
    assert set(res.skipped_baselines) == {"knn-pixels", "knn-embeddings", "knn-frozen"}
    report = res.to_dict()
    validate_report(report)
    json.dumps(report, allow_nan=False)
    assert report["dataset"] is None and report["seed"] == 0
    assert report["estimator"]["params"]["steps"][1][1]["params"]["n_neighbors"] == 2
    assert "| **mean AUROC** |" in res.to_markdown()


def test_evaluate_several_splits_and_baselines() -> None:
    X, y = make_shape_images(150, n_classes=3, image_size=16, random_state=0)
    est = make_pipeline(PixelFeatures(), PCA(8, random_state=0), GaussianScorer(variance=None))
    res = evaluate(est, one_class_splits(y[:100], y[100:]), X[:100], X[100:], random_state=0)
    assert [m.name for m in res.models] == [
        "Pipeline",
        "knn-embeddings",
        "knn-pixels",
        "iforest-pixels",
    ]
    assert all(len(m.splits) == 3 for m in res.models)
    assert res.estimator.mean_auroc == pytest.approx(np.mean([s.auroc for s in res.splits]))
    # knn-embeddings = kNN (k=2) on the fitted pipeline[:-1] of the split
    emb = res.baselines[0]
    for c, s in enumerate(emb.splits):
        head = make_pipeline(PixelFeatures(), PCA(8, random_state=0)).fit(X[:100][y[:100] == c])
        knn = KNNScorer(n_neighbors=2).fit(head.transform(X[:100][y[:100] == c]))
        expected = roc_auc_score(y[100:] != c, -knn.score_samples(head.transform(X[100:])))
        assert s.auroc == pytest.approx(expected)
    # the same splits for every model
    for m in res.models:
        assert [s.name for s in m.splits] == ["class 0", "class 1", "class 2"]
        assert [s.n_train for s in m.splits] == [s.n_train for s in res.splits]
    validate_report(res.to_dict())


class _TransformDetector(BaseEstimator):
    """A non-pipeline detector with a transform (like TransformalyDetector)."""

    def fit(self, X: Any, y: Any = None) -> _TransformDetector:
        self.scorer_ = GaussianScorer(variance=None).fit(self.transform(X))
        return self

    def transform(self, X: Any) -> np.ndarray:
        Z = PixelFeatures().fit_transform(X)
        return np.c_[Z.mean(axis=1), Z.std(axis=1)]

    def score_samples(self, X: Any) -> np.ndarray:
        return self.scorer_.score_samples(self.transform(X))


def test_evaluate_transform_and_baseline_options(anomaly_data: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, X_te, y_te = anomaly_data
    splits = list(one_class_splits(y_tr, y_te))
    res = evaluate(_TransformDetector(), splits, X_tr, X_te, random_state=0)
    assert [m.name for m in res.models][:2] == ["_TransformDetector", "knn-embeddings"]
    Z_tr = _TransformDetector().transform(X_tr)
    knn = KNNScorer(n_neighbors=2).fit(Z_tr)
    expected = roc_auc_score(y_te == 1, -knn.score_samples(_TransformDetector().transform(X_te)))
    assert res.baselines[0].splits[0].auroc == pytest.approx(expected)
    # no baselines; an explicit mapping
    assert evaluate(knn_pixels(), splits, X_tr, X_te, baselines=None).baselines == []
    res = evaluate(
        knn_pixels(),
        splits,
        X_tr,
        X_te,
        baselines={"k5": make_estimator("knn-pixels", {"knn__n_neighbors": 5})},
    )
    assert [m.name for m in res.baselines] == ["k5"]
    with pytest.raises(ValueError, match="'baselines' parameter"):
        evaluate(knn_pixels(), splits, X_tr, X_te, baselines="all")
    with pytest.raises(ValueError, match="no split"):
        evaluate(knn_pixels(), [], X_tr, X_te)


def test_evaluate_skips_only_identical_baselines(anomaly_data: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, X_te, y_te = anomaly_data
    splits = list(one_class_splits(y_tr, y_te))
    same = evaluate(
        make_estimator("iforest-pixels", random_state=0), splits, X_tr, X_te, random_state=0
    )
    assert "iforest-pixels" in same.skipped_baselines
    other = evaluate(
        make_estimator("iforest-pixels", random_state=1), splits, X_tr, X_te, random_state=0
    )
    assert "iforest-pixels" not in other.skipped_baselines
    assert [m.name for m in other.baselines] == ["knn-pixels", "iforest-pixels"]


# -- sensitivity score ----------------------------------------------------------------------


class _NeverFitted(BaseEstimator):
    def fit(self, X: Any, y: Any = None) -> _NeverFitted:
        raise AssertionError("fitted before its arguments were checked")


class _Memoriser(BaseEstimator):
    """Embeds an image it was fitted on near 0 and any other image near 10: it memorises."""

    def fit(self, X: Any, y: Any = None) -> _Memoriser:
        self.seen_ = {x.tobytes() for x in X}
        return self

    def transform(self, X: Any) -> np.ndarray:
        rng = np.random.default_rng(0)
        far = np.array([0.0 if x.tobytes() in self.seen_ else 10.0 for x in X])
        return np.c_[far, np.zeros(len(X))] + rng.normal(0, 0.1, (len(X), 2))


def test_sensitivity_score_moved_but_importable_from_benchmarks() -> None:
    import ssad.benchmarks

    assert ssad.benchmarks.sensitivity_score is sensitivity_score
    assert ssad.benchmarks.select_by_sensitivity is select_by_sensitivity


def test_sensitivity_score_iid_near_half() -> None:
    X, _ = make_anomaly_images(500, 0, image_size=16, n_channels=1, random_state=0)
    est = knn_pixels()
    s = sensitivity_score(est, X[:350], X[350:], n_holdout=150, random_state=0)
    assert abs(s - 0.5) < 0.1  # kNN on pixels does not memorise: held-out = unseen
    assert s == sensitivity_score(est, X[:350], X[350:], n_holdout=150, random_state=0)
    # sign: test images less normal than the held-out training images -> above 0.5
    X_far, _ = make_anomaly_images(1, 100, image_size=16, n_channels=1, random_state=1)
    assert sensitivity_score(est, X[:350], X_far[1:], n_holdout=150, random_state=0) > 0.9
    for bad in (0, 350, 1.5):
        with pytest.raises(ValueError, match="'n_holdout' parameter"):
            sensitivity_score(est, X[:350], X[350:], n_holdout=bad)
    with pytest.raises(ValueError, match="'n_holdout' parameter"):  # before any fit
        sensitivity_score(_NeverFitted(), X[:350], X[350:], n_holdout=350)


def test_sensitivity_score_detects_memorisation() -> None:
    # the representation is fitted on all training images; only the scorer's reference set
    # leaves the held-out ones out, so a memorising model separates them from test images
    X, _ = make_anomaly_images(400, 0, image_size=16, n_channels=1, random_state=0)
    memoriser = make_pipeline(_Memoriser(), KNNScorer())
    assert sensitivity_score(memoriser, X[:300], X[300:], n_holdout=100, random_state=0) > 0.9
    with pytest.raises(ValueError, match="splits into embeddings and a scorer"):
        sensitivity_score(_Memoriser(), X[:300], X[300:], n_holdout=100)


def test_select_by_sensitivity_maximises() -> None:
    X, _ = make_anomaly_images(300, 0, image_size=16, n_channels=1, random_state=0)
    est = make_pipeline(_Memoriser(), KNNScorer())
    sel = select_by_sensitivity(
        est, "knnscorer__n_neighbors", [1, 3, 10], X[:200], X[200:], n_holdout=80, random_state=0
    )
    assert [row["value"] for row in sel.table] == [1, 3, 10]
    scores = [row["sensitivity"] for row in sel.table]
    assert sel.best_value == [1, 3, 10][int(np.argmax(scores))]
    assert sel.best_sensitivity == max(scores)
    assert sel.table[0]["sensitivity"] == sensitivity_score(
        clone(est).set_params(knnscorer__n_neighbors=1), X[:200], X[200:], 80, random_state=0
    )
    with pytest.raises(ValueError, match="at least one"):
        select_by_sensitivity(knn_pixels(), "knn__n_neighbors", [], X, X, n_holdout=5)


def test_evaluate_sensitivity_column_and_correlation(anomaly_data: tuple[np.ndarray, ...]) -> None:
    X_tr, y_tr, X_te, y_te = anomaly_data
    res = evaluate(
        knn_pixels(),
        one_class_splits(y_tr, y_te),
        X_tr,
        X_te,
        ablations={
            "k1": make_estimator("knn-pixels", {"knn__n_neighbors": 1}),
            "k3-same-fit": FromFitted(None, "kNN k=3", scorer=KNNScorer(n_neighbors=3)),
            "wide-kernel": FromFitted(None, "T=10", scorer=CosineKernelScorer(temperature=10.0)),
        },
        baselines={"memoriser": make_pipeline(_Memoriser(), KNNScorer())},
        sensitivity_holdout=20,
        random_state=0,
    )
    sens = {m.name: m.splits[0].sensitivity for m in res.models}
    assert sens["k3-same-fit"] is not None  # a scorer row is scored for sensitivity too
    expected = make_estimator("knn-pixels", {"knn__n_neighbors": 3}).fit(X_tr)
    np.testing.assert_allclose(res.baselines[1].splits[0].scores, expected.score_samples(X_te))
    assert "Chosen by the highest sensitivity" in res.to_markdown()
    assert sens["memoriser"] > 0.9 and abs(sens["Pipeline"] - 0.5) < 0.25
    report = res.to_dict()
    validate_report(report)
    # over the method's variants only: the memoriser baseline is neither counted nor chosen
    variants = [m for m in res.models if m.role != "baseline"]
    assert [m.name for m in variants] == ["Pipeline", "k1", "k3-same-fit", "wide-kernel"]
    pairs = [(m.splits[0].sensitivity, m.mean_auroc) for m in variants]
    assert report["sensitivity_auroc_spearman"] == pytest.approx(spearmanr(*zip(*pairs)).statistic)
    chosen = max(variants, key=lambda m: m.splits[0].sensitivity)
    assert f"Chosen by the highest sensitivity (no anomaly labels): {chosen.name} " in (
        res.to_markdown()
    )
    assert "Spearman of sensitivity and AUROC over the variants" in res.to_markdown()


def test_knn_frozen_row_for_an_image_detector() -> None:
    X, y = make_shape_images(60, n_classes=2, image_size=32, random_state=0)
    det = TransformalyDetector(
        "test_vit", pretrained=False, image_size=32, n_student_blocks=1, n_epochs=1, random_state=0
    )
    base, skipped = default_baselines(det)
    assert skipped == {}
    assert list(base) == [
        "knn-frozen",
        "knn-frozen-unit",
        "knn-embeddings",
        "knn-pixels",
        "iforest-pixels",
    ]
    frozen = base["knn-frozen"][0]
    assert (frozen.backbone, frozen.image_size, frozen.random_state) == ("test_vit", 32, 0)
    part = FromFitted(lambda est, zf, zs: est.scorer_.score_parts(zs)["pretrained"], "z_p")
    res = evaluate(
        det,
        one_class_splits(y[:40], y[40:], [0]),
        X[:40],
        X[40:],
        ablations={"pretrained-space": part},
        random_state=0,
    )
    assert [m.name for m in res.models] == [
        "TransformalyDetector",
        "pretrained-space",
        "knn-frozen",
        "knn-frozen-unit",
        "knn-embeddings",
        "knn-pixels",
        "iforest-pixels",
    ]
    assert res.baselines[0].from_fitted and res.baselines[0].role == "ablation"
    # z_p alone is the first block of the embeddings: its Gaussian gives the ablation's scores
    validate_report(res.to_dict())
    assert "† scored from the estimator's fit" in res.to_markdown()
    # the training record of the fitted detector is kept per split; FromFitted rows have none
    record = res.to_dict()["estimator"]["splits"][0]["training"]
    assert record["n_epochs"] == 1 and record["best_epoch"] == 0
    assert len(record["loss_curve"]) == len(record["validation_curve"]) == 1
    assert res.to_dict()["baselines"][0]["splits"][0]["training"] is None
    assert "| TransformalyDetector | class 0 | 1 | 1 |" in res.to_markdown()


def test_knn_frozen_unit_row_beside_knn_frozen() -> None:
    # ConvexMIL scores L2-normalised embeddings: its untrained features get a row in that
    # space too (Euclidean kNN on the raw features can rank far from it); so does every
    # estimator with network features, unless they are normalised already
    det = ConvexMILDetector(
        "test_resnet", pretrained=False, image_size=32, n_epochs=1, random_state=0
    )
    base, _ = default_baselines(det)
    assert list(base)[:2] == ["knn-frozen", "knn-frozen-unit"]
    raw, unit = base["knn-frozen"][0], base["knn-frozen-unit"][0]
    assert (raw.normalize, unit.normalize) == (False, True)
    assert unit.get_params() == {**raw.get_params(), "normalize": True}
    X, _ = make_shape_images(12, n_classes=2, image_size=32, random_state=0)
    Z = unit.fit_transform(X)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    trans = TransformalyDetector("test_vit", pretrained=False, image_size=32)
    assert "knn-frozen-unit" in default_baselines(trans)[0]
    knn_on_unit = Pipeline([("f", TimmFeatures("test_vit", normalize=True)), ("k", KNNScorer())])
    base, skipped = default_baselines(knn_on_unit)
    assert "knn-frozen-unit" in skipped and "knn-frozen" in skipped


# -- registry, helpers ----------------------------------------------------------------------


def test_registry() -> None:
    names = available_estimators()
    for name in (
        "knn-pixels",
        "iforest-pixels",
        "gaussian-pixels",
        "efficientnet-knn",
        "efficientnet-gaussian",
        "dino-knn",
        "transformaly",
    ):
        assert name in names
    assert make_estimator("iforest-pixels", random_state=7)[-1].random_state == 7
    assert make_estimator("knn-pixels", {"knn__n_neighbors": 4})[-1].n_neighbors == 4
    with pytest.raises(ValueError, match="Unknown estimator"):
        make_estimator("nope")
    with pytest.raises(ValueError, match="Invalid parameter"):
        make_estimator("knn-pixels", {"bogus": 1})
    register_estimator(
        "test-gauss", lambda: make_pipeline(PixelFeatures(), GaussianScorer()), overwrite=True
    )
    assert isinstance(make_estimator("test-gauss")[-1], GaussianScorer)
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("test-gauss", knn_pixels)
    with pytest.raises(ValueError, match="lower-case"):
        register_estimator("Bad Name", knn_pixels)


def test_offline_teachers_are_the_packaged_lite_models(monkeypatch, tmp_path) -> None:
    import ssad.backbones

    asked = []

    def fake_checkpoint(variant: int = 0, path: object = None) -> Path:
        asked.append(variant)
        return tmp_path / f"lite{variant}.safetensors"

    monkeypatch.setattr(ssad.backbones, "efficientnet_lite_checkpoint", fake_checkpoint)
    for name, variant in (("efficientnet-knn", 0), ("efficientnet-lite2-knn", 2)):
        features = make_estimator(name)[0]
        assert features.backbone == f"tf_efficientnet_lite{variant}"
        assert features.checkpoint_path == str(tmp_path / f"lite{variant}.safetensors")
    teacher = make_estimator("transformaly-efficientnet-lite2")
    assert teacher.backbone == "tf_efficientnet_lite2" and teacher.image_size == 64
    assert teacher.get_params() == {
        **make_estimator("transformaly-efficientnet").get_params(),
        "backbone": "tf_efficientnet_lite2",
        "checkpoint_path": str(tmp_path / "lite2.safetensors"),
    }
    assert asked == [0, 2, 2, 0]


def test_pixel_features() -> None:
    X = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Z = PixelFeatures().fit_transform(X)
    assert Z.shape == (2, 9) and Z.dtype == np.float32
    np.testing.assert_allclose(Z, X.reshape(2, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(PixelFeatures().fit_transform(X / 255.0), Z, rtol=1e-6)
    with pytest.raises(ValueError, match="pixel values per image"):
        PixelFeatures().fit(X).transform(np.zeros((1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="'dtype' parameter of PixelFeatures"):
        PixelFeatures(dtype="int8").fit(X)
    assert PixelFeatures(dtype="float64").fit_transform(X).dtype == np.float64


def test_json_safe() -> None:
    out = json_safe(
        {
            "a": (1, np.float32(0.5)),
            "p": Path("/x"),
            "n": float("nan"),
            "e": make_pipeline(KNNScorer()),
        }
    )
    assert out["a"] == [1, 0.5] and out["p"] == "/x" and out["n"] == "nan"
    assert out["e"]["class"] == "sklearn.pipeline.Pipeline"
    json.dumps(out, allow_nan=False)


def test_validator_finds_errors() -> None:
    assert load_schema()["$defs"]["split"]["additionalProperties"] is False
    with pytest.raises(ValueError, match="does not match schema.json.*'estimator' is a required"):
        validate_report({"schema_version": "2.0", "seed": "x"})


# -- the runner -----------------------------------------------------------------------------


def _report(out: Path) -> tuple[dict[str, Any], str]:
    (json_path,) = out.glob("*.json")
    (md_path,) = out.glob("*.md")
    return json.loads(json_path.read_text()), md_path.read_text()


def test_runner_digits_one_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--dataset",
        "digits",
        "--classes",
        "0",
        "1",
        "--estimator",
        "knn-pixels",
        "--seed",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    report, md = _report(tmp_path)
    validate_report(report)
    assert report["dataset"]["name"] == "digits"
    assert report["dataset"]["n_train"] == 1437 and report["dataset"]["n_test"] == 360
    assert report["protocol"] == {"name": "one-class", "classes": [0, 1], "ratio": None}
    assert report["seed"] == 1 and report["command"] == argv
    assert report["stem"] == "digits_one-class_knn-pixels_c0-1_seed1"
    assert [s["name"] for s in report["estimator"]["splits"]] == ["class 0: 0", "class 1: 1"]
    assert [b["name"] for b in report["baselines"]] == ["iforest-pixels"]
    assert report["baselines"][0]["params"]["steps"][1][1]["params"]["random_state"] == 1
    assert report["estimator"]["mean_auroc"] > 0.95
    assert report["environment"]["packages"]["ssad"] is not None
    assert "| class 0: 0 |" in md and "| **mean AUROC** |" in md
    assert "| class 0: 0 |" in capsys.readouterr().out  # the table is printed


def test_runner_json_validates_with_jsonschema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    main(["--dataset", "digits", "--classes", "3", "--out", str(tmp_path), "--quiet"])
    report, _ = _report(tmp_path)
    jsonschema.Draft202012Validator.check_schema(load_schema())
    jsonschema.validate(report, load_schema())


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("leave-one-out", []), ("contaminated", ["--ratio", "0.1"])],
)
def test_runner_other_protocols(tmp_path: Path, protocol: str, extra: list[str]) -> None:
    argv = [
        "--dataset",
        "digits",
        "--protocol",
        protocol,
        "--classes",
        "4",
        "--max-train",
        "600",
        "--max-test",
        "200",
        "--quiet",
        "--out",
        str(tmp_path),
        *extra,
    ]
    assert main(argv) == 0
    report, _ = _report(tmp_path)
    validate_report(report)
    (split,) = report["estimator"]["splits"]
    assert report["dataset"]["max_train"] == 600
    assert split["n_test"] == 200
    assert split["n_train"] <= 600  # --max-train caps each split, after the class split
    if protocol == "leave-one-out":
        assert split["n_train"] == 600
    if protocol == "contaminated":
        assert report["protocol"]["ratio"] == 0.1
        n_own = split["n_train"] - split["n_train_anomalies"]
        assert split["n_train_anomalies"] == round(0.1 * n_own / 0.9)
    else:
        assert split["n_anomalies"] < split["n_test"] / 4  # one class of ten is anomalous


def test_runner_dataset_vs_dataset(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "ood"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    out = tmp_path / "out"
    argv = [
        "--dataset",
        "digits",
        "--protocol",
        "dataset-vs-dataset",
        "--ood-dataset",
        "folder",
        "--ood-root",
        str(root),
        "--classes",
        "0",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report, _ = _report(out)
    validate_report(report)
    (split,) = report["estimator"]["splits"]
    assert split["name"] == "digits vs folder"
    assert split["n_anomalies"] == 4  # the 20 % test split of 20 folder images
    assert report["dataset"]["ood"]["image_shape"] == [12, 12, 3]
    assert report["dataset"]["ood"]["converted_to"] == [8, 8]
    assert split["n_train"] == report["dataset"]["n_train"]
    assert split["auroc"] > 0.9  # random RGB noise is far from digits


def test_runner_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "knn-pixels" in listed and "transformaly-one-class" in listed
    for argv in (
        ["--dataset", "digits", "--estimator", "nope"],
        ["--dataset", "nope"],
        ["--dataset", "mnist"],
        ["--dataset", "digits", "--protocol", "dataset-vs-dataset"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--out", str(tmp_path)])
        assert exc.value.code == 2
    assert "--root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # --ratios would be ignored without a preset
        main(["--dataset", "digits", "--protocol", "contaminated", "--ratios", "0.2"])
    assert exc.value.code == 2 and "--ratios goes with --preset" in capsys.readouterr().err
    for flags in (["--ratio", "0.1"], ["--protocol", "one-class"], ["--ood-dataset", "digits"]):
        with pytest.raises(SystemExit) as exc:  # a preset fixes them: they would be ignored
            main(["--preset", "speed", *flags, "--out", str(tmp_path)])
        assert exc.value.code == 2 and f"{flags[0]}: a preset fixes it" in capsys.readouterr().err


def test_max_train_keeps_the_contamination_mask_aligned() -> None:
    from ssad.benchmarks._runner import _cap_training

    y = np.repeat(np.arange(4), 50)
    (split,) = contaminated_splits(y, y, 0.2, classes=[1], random_state=0)
    _cap_training([split], y, 30, seed=0)
    assert split.n_train == 30 and split.train_is_anomaly.shape == (30,)
    np.testing.assert_array_equal(split.train_is_anomaly, y[split.train_idx] != 1)
    assert split.n_train_anomalies == split.train_is_anomaly.sum() == 6
    # contaminating classes too small to stratify (one image each): the share is kept anyway
    y = np.concatenate([np.zeros(400, int), np.repeat(np.arange(1, 10), [2] * 4 + [1] * 5)])
    for seed in range(5):
        (split,) = contaminated_splits(y, y, 0.02, classes=[0], random_state=seed)
        assert split.n_train_anomalies == 8
        _cap_training([split], y, 300, seed=seed)
        assert split.n_train == 300 and split.n_train_anomalies == 6


class _GuessesItsAnomalies(BaseEstimator):
    """Scores by the first pixel; flags the training images whose first pixel is 255."""

    def fit(self, X: np.ndarray, y: None = None) -> _GuessesItsAnomalies:
        self.abnormal_candidates_ = X[:, 0, 0] == 255
        self.loss_curve_ = [2.0, 1.0]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return -X[:, 0, 0].astype(float)


def test_what_the_abnormal_candidates_caught_is_measured() -> None:
    y = np.repeat([0, 1], 30)
    X = np.zeros((60, 4, 4), np.uint8)
    X[30:, 0, 0] = 255  # class 1, the contamination of class 0's split, is marked
    X[30:40, 0, 0] = 0  # ... except 10 of its images, which the detector misses
    (split,) = contaminated_splits(y, y, 0.25, classes=[0], random_state=0)
    n_marked = int((X[split.train_idx, 0, 0] == 255).sum())
    res = evaluate(_GuessesItsAnomalies(), [split], X, X, baselines=None, random_state=0)
    record = res.to_dict()["estimator"]["splits"][0]["training"]
    assert record["candidate_recall"] == pytest.approx(n_marked / split.n_train_anomalies)
    assert record["candidate_share"] == pytest.approx(n_marked / split.n_train)
    text = res.to_markdown()
    assert "anomalies caught by its abnormal candidates % (chance)" in text
    recall, share = 100 * record["candidate_recall"], 100 * record["candidate_share"]
    assert f"| 2, 1 | - | {recall:.0f} ({share:.0f}) |" in text
    validate_report(res.to_dict())


class _HasATeacher(_GuessesItsAnomalies):
    def fit(self, X: np.ndarray, y: None = None) -> _HasATeacher:
        super().fit(X)
        self.teacher_entropy_curve_ = [5.0, 1.25]
        self.teacher_mean_entropy_curve_ = [6.5, 4.0]
        return self


def test_the_teacher_entropy_curves_are_reported() -> None:
    y = np.repeat([0, 1], 30)
    X = np.zeros((60, 4, 4), np.uint8)
    (split,) = one_class_splits(y, y, classes=[0])
    res = evaluate(
        _HasATeacher(), [split], X, X, ablations={"plain": _GuessesItsAnomalies()}, baselines=None
    )
    record = res.to_dict()["estimator"]["splits"][0]["training"]
    assert record["teacher_mean_entropy_curve"] == [6.5, 4.0]  # every fitted *_curve_ is kept
    text = res.to_markdown()
    assert "teacher entropy, nats: first, last (of the mean output) |" in text
    assert "| 2, 1 | - | 5, 1.25 (6.5, 4) |" in text
    assert "| 2, 1 | - | - |" in text  # the row without a teacher
    validate_report(res.to_dict())


def test_max_train_caps_each_split_stratified(tmp_path: Path) -> None:
    argv = ["--dataset", "digits", "--protocol", "contaminated", "--ratio", "0.2", "--classes"]
    assert main([*argv, "2", "--max-train", "50", "--quiet", "--out", str(tmp_path)]) == 0
    report, _ = _report(tmp_path)
    (split,) = report["estimator"]["splits"]
    assert split["n_train"] == 50 and split["n_train_anomalies"] == 10  # the ratio is kept


def test_reports_never_overwrite_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--dataset", "digits", "--quiet", "--out", str(tmp_path)]
    assert main([*base, "--classes", "0"]) == 0
    assert main([*base, "--classes", "1"]) == 0  # other classes: another file
    assert main([*base, "--classes", "1", "--params", '{"knn__n_neighbors": 3}']) == 0
    assert len(list(tmp_path.glob("*.json"))) == 3
    # an existing report is refused before any work is done
    import ssad.benchmarks._runner as runner

    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: pytest.fail("work was started"))
    with pytest.raises(SystemExit) as exc:
        main([*base, "--classes", "0"])
    assert exc.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert report_stem("p", seed=0, overrides={"n_epochs": 2}) != report_stem(
        "p", seed=0, overrides={"n_epochs": 3}
    )


def test_preset_with_ablations_and_overrides(tmp_path: Path) -> None:
    def first_pixel(fitted: Any, Z_fit: np.ndarray, Z_score: np.ndarray) -> np.ndarray:
        return -np.abs(Z_score[:, 0] - Z_fit[:, 0].mean())

    register_preset(
        Preset(
            "test-digits",
            "kNN on digits with an ablation",
            "digits",
            "contaminated",
            "gaussian-pixels",
            params={"gaussian__variance": 0.8},
            ablations={
                "variance-0.5": Variant({"gaussian__variance": 0.5}),
                "first-pixel": FromFitted(first_pixel, "distance of pixel 0 to its mean"),
            },
            baselines={"knn-pixels-k5": Variant({"knn__n_neighbors": 5}, estimator="knn-pixels")},
            ratios=(0.05, 0.1),
            classes=(0, 1),
        ),
        overwrite=True,
    )
    assert "test-digits" in available_presets()
    argv = ["--preset", "test-digits", "--classes", "3", "--max-train", "80", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    reports = sorted(tmp_path.glob("*.json"))
    assert [p.stem.split("_")[1] for p in reports] == ["r0.05", "r0.1"]  # one per ratio
    report = json.loads(reports[0].read_text())
    validate_report(report)
    names = [report["estimator"]["name"]] + [b["name"] for b in report["baselines"]]
    assert names == [
        "gaussian-pixels",
        "variance-0.5",
        "first-pixel",
        "knn-pixels",
        "iforest-pixels",
        "knn-pixels-k5",
    ]
    assert report["preset"] == "test-digits" and report["protocol"]["classes"] == [3]
    assert report["estimator"]["params"]["steps"][1][1]["params"]["variance"] == 0.8
    assert report["baselines"][0]["params"]["steps"][1][1]["params"]["variance"] == 0.5
    assert report["baselines"][1]["from_fitted"] is True
    assert report["estimator"]["splits"][0]["n_train"] <= 80
    with pytest.raises(ValueError, match="no parameter 'n_epochs'"):
        next(run_preset("test-digits", n_epochs=2, verbose=0))
    # --estimator runs the preset with another method: same rows, the preset's params, new files
    unwhitened = Pipeline([("pixels", PixelFeatures()), ("gaussian", GaussianScorer(whiten=False))])
    register_estimator("test-gaussian-unwhitened", lambda: clone(unwhitened), overwrite=True)
    assert main([*argv, "--estimator", "test-gaussian-unwhitened", "--out", str(tmp_path)]) == 0
    (other,) = sorted(set(tmp_path.glob("*r0.05*.json")) - set(reports))
    swapped = json.loads(other.read_text())
    assert swapped["preset"] == "test-digits"
    assert swapped["estimator"]["name"] == "test-gaussian-unwhitened"
    gaussian = swapped["estimator"]["params"]["steps"][1][1]["params"]
    assert gaussian["whiten"] is False and gaussian["variance"] == 0.8
    assert [b["name"] for b in swapped["baselines"]] == names[1:]
    register_estimator("test-detector", GaussianScorer, overwrite=True)  # not a Pipeline
    with pytest.raises(ValueError, match="needs a Pipeline as its method; 'test-detector' is"):
        next(run_preset("test-digits", estimator="test-detector", verbose=0))


def test_registered_companions_and_fit_params(tmp_path: Path) -> None:
    from ssad.benchmarks import WithFitParams, estimator_companions

    assert estimator_companions("convex-mil") == {
        "rotation-only": {"use_convex": False, "lambda_mean": 0.0}
    }
    # the 96 px variant is the pretrained one with three documented changes, and
    # runs the same rotation-only ablation beside it
    assert estimator_companions("convex-mil-pretrained-96") == estimator_companions("convex-mil")
    changes = {"image_size": 96, "mean_shift_negatives": "rotations"}
    changes["memory_filter"] = "pseudo_normality"
    base = make_estimator("convex-mil-pretrained", changes).get_params(deep=False)
    variant = make_estimator("convex-mil-pretrained-96").get_params(deep=False)
    assert {k: v for k, v in variant.items() if repr(v) != repr(base[k])} == {}
    register_estimator(
        "test-knn-companion",
        knn_pixels,
        companions={"k1": {"knn__n_neighbors": 1}},
        overwrite=True,
    )
    argv = ["--dataset", "digits", "--classes", "0", "--estimator", "test-knn-companion"]
    assert main([*argv, "--quiet", "--out", str(tmp_path)]) == 0
    report, _ = _report(tmp_path)
    k1 = next(b for b in report["baselines"] if b["name"] == "k1")
    assert k1["params"]["steps"][1][1]["params"]["n_neighbors"] == 1

    class _NeedsExtra(BaseEstimator):
        def fit(self, X: Any, y: Any = None, X_extra: Any = None) -> _NeedsExtra:
            assert X_extra is not None
            self.mean_ = np.asarray(X_extra, dtype=float).mean()
            return self

        def score_samples(self, X: Any) -> np.ndarray:
            return -np.abs(np.asarray(X, dtype=float).reshape(len(X), -1).mean(1) - self.mean_)

    X, y = make_shape_images(40, n_classes=2, image_size=8, random_state=0)
    res = evaluate(
        knn_pixels(),
        one_class_splits(y[:30], y[30:]),
        X[:30],
        X[30:],
        baselines={"extra": WithFitParams(_NeedsExtra(), {"X_extra": X[:5]})},
    )
    assert res.baselines[0].params["fit_params"] == {"X_extra": "ndarray"}


# -- localisation: masks, anomaly maps, pixel metrics --------------------------------------


def _patchcore_tiny(random_state: int | None = None) -> Any:
    from ssad import PatchCoreDetector

    return PatchCoreDetector(
        "test_resnet", pretrained=False, image_size=32, random_state=random_state
    )


def test_evaluate_pixel_metrics_for_rows_with_maps() -> None:
    from ssad.datasets import make_local_defect_images

    X, y, masks = make_local_defect_images(30, 8, kind="object", image_size=32, random_state=0)
    splits = list(one_class_splits(y[:20], y[20:]))
    res = evaluate(
        _patchcore_tiny(0),
        splits,
        X[:20],
        X[20:],
        baselines={"knn-pixels": knn_pixels()},
        masks=masks[20:],
    )
    pc, knn = res.estimator.to_dict(), res.baselines[0].to_dict()
    assert 0.0 <= pc["mean_pixel_auroc"] <= 1.0 and 0.0 <= pc["mean_pro"] <= 1.0
    assert pc["splits"][0]["pixel_auroc"] == pc["mean_pixel_auroc"]
    assert knn["mean_pixel_auroc"] is None and knn["splits"][0]["pro"] is None
    assert "| pixel AUROC | PRO |" in res.to_markdown()
    validate_report(res.to_dict())
    # no masks: no pixel columns
    plain = evaluate(_patchcore_tiny(0), splits, X[:20], X[20:], baselines=None)
    assert plain.estimator.to_dict()["mean_pro"] is None and "PRO" not in plain.to_markdown()


def _write_mvtec(root: Path) -> None:
    from PIL import Image

    from ssad.datasets import make_local_defect_images

    X, y, masks = make_local_defect_images(14, 4, kind="texture", image_size=32, random_state=1)
    files = [("train/good", i) for i in range(10)] + [("test/good", i) for i in range(10, 14)]
    files += [("test/scratch", i) for i in range(14, 18)]
    for folder, i in files:
        path = root / "widget" / folder / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(X[i]).save(path)
        if y[i]:
            mask = root / "widget" / "ground_truth" / "scratch" / f"{i:03d}_mask.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[i] * 255).save(mask)


def test_runner_mvtec_pixel_metrics_and_map_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from threadpoolctl import threadpool_limits

    _write_mvtec(tmp_path / "data")
    register_estimator("patchcore-tiny", _patchcore_tiny, overwrite=True)
    argv = ["--dataset", "mvtec:widget", "--root", str(tmp_path / "data"), "--quiet", "--plots"]
    with threadpool_limits(1):  # t-SNE threads spin on a busy machine
        assert main([*argv, "--estimator", "patchcore-tiny", "--out", str(tmp_path / "out")]) == 0
    (report,) = tmp_path.joinpath("out").glob("*.json")
    data = json.loads(report.read_text())
    assert data["dataset"]["n_test"] == 8
    est = data["estimator"]
    assert est["splits"][0]["pixel_auroc"] is not None and est["mean_pro"] is not None
    assert all(b["mean_pixel_auroc"] is None for b in data["baselines"])
    assert "PRO" in report.with_suffix(".md").read_text()
    (maps,) = tmp_path.joinpath("out").glob("*_anomaly_maps.png")
    assert maps.read_bytes()[:4] == b"\x89PNG"


def test_the_convex_mil_presets_cover_full_mnist() -> None:
    from ssad.benchmarks import get_preset

    full, subset = get_preset("convex-mil-mnist"), get_preset("convex-mil-mnist-5k")
    assert full.dataset == "mnist" and full.ratios == (0.02, 0.05, 0.10)
    assert full.ablations == subset.ablations and full.baselines == subset.baselines
    with pytest.raises(ValueError, match="root"):
        next(run_preset("convex-mil-mnist", classes=[0], max_train=4, max_test=4, verbose=0))


@pytest.mark.parametrize(
    "name", ["convex-mil-mnist-5k", "convex-mil-mnist", "convex-mil-fashion-mnist"]
)
def test_the_convex_mil_presets_have_every_row_of_the_table(name: str) -> None:
    # the paper's ablations, the filtered memory, the pretrained start and the baselines
    from ssad.benchmarks import default_baselines, estimator_companions, get_preset

    preset = get_preset(name)
    assert preset.protocol == "contaminated" and preset.ratios == (0.02, 0.05, 0.10)
    method = make_estimator(preset.estimator)
    rows = {
        *preset.ablations,
        *preset.baselines,
        *estimator_companions(preset.estimator),
        *default_baselines(method)[0],
    }
    assert rows >= {
        "rotation-only",
        "rot+conv",
        "rot+mean",
        "memory-filtered",
        "pretrained",
        "knn-frozen",
        "knn-frozen-unit",
        "knn-pixels",
        "knn-pixels-filtered",
        "knn-frozen-pretrained",
        "knn-frozen-pretrained-unit",
    }
    # the ablations switch off one loss term each of the registered full method
    assert preset.ablations["rot+conv"].params == {"lambda_mean": 0.0}
    assert preset.ablations["rot+mean"].params == {"use_convex": False}
    assert method.use_convex and method.lambda_mean > 0 and method.lambda_rot > 0


def test_the_transformaly_presets_have_one_block_row_per_student() -> None:
    from ssad.benchmarks import get_preset

    n = make_estimator("transformaly-efficientnet").n_student_blocks
    for name in ("transformaly-one-class", "transformaly-leave-one-out"):
        rows = [r for r in get_preset(name).ablations if r.startswith("block-")]
        assert rows == [f"block-{j + 1}" for j in range(n)]


def test_synthetic_local_and_the_patchcore_preset(tmp_path: Path) -> None:
    preset = available_presets()
    assert "patchcore-synthetic" in preset and "patchcore-efficientnet" in available_estimators()
    from ssad.benchmarks import get_preset, run_benchmark

    p = get_preset("patchcore-synthetic")
    assert (p.dataset, p.estimator) == ("synthetic-local:texture", "patchcore-efficientnet")
    assert p.ablations["no-coreset"].params == {"coreset_ratio": 1.0}
    assert "1% coreset" in available_estimators()["patchcore-efficientnet"]
    register_estimator("patchcore-tiny", _patchcore_tiny, overwrite=True)
    result, _, data = run_benchmark(
        "synthetic-local:object",
        estimator="patchcore-tiny",
        read_size=32,
        max_train=12,
        max_test=10,
        baselines={},
        verbose=0,
    )
    assert data.masks_test.shape == (10, 32, 32)
    assert result.estimator.splits[0].pixel_auroc is not None


def test_documented_commands_name_registered_presets_and_estimators():
    # every `--preset NAME` / `--estimator NAME` in the README and the docs must run
    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").rglob("*.rst"))]
    named = {"preset": set(), "estimator": set()}
    for path in files:
        for kind, name in re.findall(
            r"--(preset|estimator)[ =]([a-z0-9][\w.+-]*)", path.read_text()
        ):
            named[kind].add((name, path.name))
    assert named["preset"] and named["estimator"]
    unknown = [f"--preset {n} ({f})" for n, f in named["preset"] if n not in available_presets()]
    unknown += [
        f"--estimator {n} ({f})" for n, f in named["estimator"] if n not in available_estimators()
    ]
    assert not unknown, unknown


def test_memory_filters_example_writes_reports_with_filter_recall(tmp_path):
    import runpy

    path = Path(__file__).resolve().parents[1] / "examples" / "memory_filters.py"
    main = runpy.run_path(str(path))["main"]
    argv = ["--dataset", "digits", "--classes", "0", "1", "--ratio", "0.1"]
    aurocs = main([*argv, "--max-test", "100", "--out", str(tmp_path)])
    filters = ["filter-knn5", "filter-knn-sqrt", "filter-gmm", "filter-iforest"]
    assert set(aurocs) == {"knn-pixels", "iforest-pixels", *filters}
    (json_path,) = tmp_path.glob("digits_contaminated_memory-filters-pixels*.json")
    report = json.loads(json_path.read_text())
    validate_report(report)
    assert report["command"][:2] == ["python", "examples/memory_filters.py"]
    recall = report["filter_recall"]
    assert list(recall) == filters and all(len(v) == 2 for v in recall.values())
    assert all(0.0 <= r <= 1.0 for v in recall.values() for r in v)
    md = json_path.with_suffix(".md").read_text()
    assert "- command: `python examples/memory_filters.py --dataset digits" in md
    assert "| class 0: 0 |" in md and "Contaminating anomalies each filter dropped" in md


def test_convex_mil_terms_example_fits_only_the_terms_asked_for(tmp_path):
    import runpy

    path = Path(__file__).resolve().parents[1] / "examples" / "convex_mil_terms.py"
    main = runpy.run_path(str(path))["main"]
    tiny = {"backbone": "test_resnet", "checkpoint_path": None, "image_size": 16}
    tiny["memory_neighbors"] = 7
    argv = ["--dataset", "digits", "--classes", "0", "--ratio", "0.1", "--max-test", "60"]
    argv += ["--n-epochs", "1", "--terms", "rot-conv", "rot-mean", "--params", json.dumps(tiny)]
    aurocs = main([*argv, "--out", str(tmp_path)])
    assert list(aurocs)[:2] == ["pretrained-rot-conv", "pretrained-rot-mean"]
    assert "rotation-only" not in aurocs and "knn-frozen" in aurocs
    (json_path,) = tmp_path.glob("digits_contaminated_convex-mil-terms-rot-conv-rot-mean*.json")
    report = json.loads(json_path.read_text())
    validate_report(report)
    # the rows' --params are hashed into the stem: other params, another file
    settings = {"max_test": 60, "n_epochs": 1}
    name = "digits_contaminated_convex-mil-terms-rot-conv-rot-mean"
    stem = report_stem(name, seed=0, ratio=0.1, classes=[0], overrides=settings)
    assert json_path.stem == report["stem"] != stem
    assert json_path.stem == report_stem(
        name, seed=0, ratio=0.1, classes=[0], overrides={**settings, "params": tiny}
    )
    params = {m["name"]: m["params"] for m in [report["estimator"], *report["baselines"]]}
    assert params["pretrained-rot-conv"]["lambda_mean"] == 0.0
    assert params["pretrained-rot-mean"]["use_convex"] is False
    assert {p["memory_neighbors"] for p in params.values() if "memory_neighbors" in p} == {7}
    with pytest.raises(SystemExit):
        main(["--terms", "full", "full"])


def test_convex_mil_memory_example_scores_each_fit_against_three_memories(tmp_path):
    import runpy

    path = Path(__file__).resolve().parents[1] / "examples" / "convex_mil_memory.py"
    main = runpy.run_path(str(path))["main"]
    tiny = {"backbone": "test_resnet", "checkpoint_path": None, "image_size": 16, "n_epochs": 1}
    argv = ["--dataset", "digits", "--classes", "0", "1", "--ratio", "0.1", "--max-test", "60"]
    argv += ["--max-train", "40", "--terms", "rot-conv", "rotation-only"]
    out = tmp_path / "memory.json"
    rows = main([*argv, "--params", json.dumps(tiny), "--out", str(out), "--rotation-filter"])
    assert [(r["split"][:7], r["term"]) for r in rows] == [
        ("class 0", "rot-conv"),
        ("class 0", "rotation-only"),
        ("class 1", "rot-conv"),
        ("class 1", "rotation-only"),
    ]
    for row in rows:
        assert row["contaminating"] == 4  # 10 % of the 40 capped training images
        assert row["contaminating_kept"] == 4  # no memory filter: every image is kept
        assert row["own"] == pytest.approx(row["all"])  # the detector's eq. 11 itself
        assert 0.0 <= row["clean"] <= 1.0
        assert row["filter_auroc"] is None  # no filter, no ranking
        caught = row["abnormal_candidates_contaminating"]
        assert 0 <= caught <= min(row["abnormal_candidates"], row["contaminating"])
        # only L_conv splits the batches into candidate sets
        assert (row["abnormal_candidates"] > 0) == (row["term"] == "rot-conv")
        # the rotation filter drops as many as the detector's own: none here
        assert row["rotation"] == pytest.approx(row["all"])
        assert row["rotation_kept"] == 4
        assert 0.0 <= row["rotation_filter_auroc"] <= 1.0
    assert json.loads(out.read_text())["rows"] == rows
    filter_params = json.dumps({**tiny, "memory_filter": "pseudo_normality"})
    argv[-2:] = ["rot-mean", "rotation-only"]  # L_mean without L_conv
    argv += ["--score-neighbors", "1", "3"]
    filtered = main([*argv, "--params", filter_params, "--rotation-filter", "--frozen-filter"])
    assert [r["term"] for r in filtered] == ["rot-mean", "rotation-only"] * 2
    for r in filtered:  # K = 1 is eq. 11, the detector's own score with its own memory
        k1 = (r["own_k1"], r["all_k1"], r["clean_k1"])
        assert k1 == pytest.approx((r["own"], r["all"], r["clean"]))
    assert any(r["all_k3"] != pytest.approx(r["all"]) for r in filtered)
    assert all(r["contaminating_kept"] <= r["contaminating"] for r in filtered)
    assert any(r["own"] != pytest.approx(r["all"]) for r in filtered)
    assert all(0.0 <= r["filter_auroc"] <= 1.0 for r in filtered)
    assert any(r["rotation"] != pytest.approx(r["all"]) for r in filtered)
    assert all(0.0 <= r["frozen_filter_auroc"] <= 1.0 for r in filtered)
    assert all(r["frozen_kept"] <= r["contaminating"] for r in filtered)
    assert any(r["frozen"] != pytest.approx(r["all"]) for r in filtered)
    with pytest.raises(SystemExit, match="needs a memory_filter"):
        main([*argv, "--params", json.dumps(tiny), "--frozen-filter"])


def test_freeze_batchnorm_example_scores_like_the_frozen_backbone(tmp_path):
    import runpy

    path = Path(__file__).resolve().parents[1] / "examples" / "freeze_batchnorm.py"
    main = runpy.run_path(str(path))["main"]
    tiny = {"backbone": "test_resnet", "checkpoint_path": None, "pretrained": False}
    tiny.update(freeze_batchnorm=True, batch_size=8)
    argv = ["--dataset", "digits", "--max-train", "40", "--max-test", "40", "--image-size", "16"]
    argv += ["--n-epochs", "1", "--detectors", "convex-mil-pretrained"]
    aurocs = main([*argv, "--params", json.dumps(tiny), "--out", str(tmp_path)])
    rows = aurocs["convex-mil-pretrained"]
    # a learning rate of 1e-12 leaves the weights, and frozen BatchNorm its statistics
    assert rows["convex-mil-pretrained"] == pytest.approx(rows["frozen-same-scorer"], abs=1e-6)
    assert "batchnorm-trained" in rows and "knn-frozen" in rows
    (json_path,) = tmp_path.glob("digits_one-class_freeze-batchnorm-convex-mil-pretrained*.json")
    report = json.loads(json_path.read_text())
    validate_report(report)
    params = {m["name"]: m["params"] for m in [report["estimator"], *report["baselines"]]}
    assert params["convex-mil-pretrained"]["learning_rate"] == 1e-12
    assert params["batchnorm-trained"]["freeze_batchnorm"] is False


def test_knn_pixels_filtered_is_seeded():
    gmm = make_estimator("knn-pixels-filtered", random_state=3)[-1].filter[-1]
    assert (gmm.random_state, gmm.contamination) == (3, 0.1)


def test_the_transformaly_rescored_rows_equal_a_fit_with_that_scorer() -> None:
    from ssad.benchmarks import get_preset

    X, _ = make_shape_images(24, n_classes=2, image_size=32, random_state=0)
    tiny = {"backbone": "test_vit", "pretrained": False, "image_size": 32, "n_epochs": 1}
    det = TransformalyDetector(**tiny, n_student_blocks=1, random_state=0).fit(X[:16])
    rows = get_preset("transformaly-one-class").ablations
    Z_fit, Z_score = det.transform(X[:16]), det.transform(X[16:])
    for name, params in [("knn+finetuned", {}), ("knn-cos+finetuned", {"metric": "cosine"})]:
        got = rows[name].fn(det, Z_fit, Z_score)
        other = TransformalyDetector(**tiny, n_student_blocks=1, random_state=0, scorer="knn")
        expected = other.set_params(**params).fit(X[:16]).score_samples(X[16:])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert det.scorer == "gaussian"  # the rows leave the fitted detector as it was
