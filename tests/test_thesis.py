"""The thesis recipe: PCA -> K-means, before and after GMM filtering."""

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.metrics import roc_auc_score

from ssad import DINOFeatures, FilteredFit, KMeansScorer
from ssad.detectors import make_thesis_pipeline, thesis_scores


def _data():
    X, _ = make_blobs(n_samples=300, centers=3, n_features=10, cluster_std=0.5, random_state=0)
    rng = np.random.default_rng(0)
    planted = rng.uniform(-30, 30, size=(30, 10))  # contamination of the training set
    X_train = np.vstack([X[:200], planted])
    X_test = np.vstack([X[200:], rng.uniform(-30, 30, size=(20, 10))])
    y_test = np.r_[np.zeros(100), np.ones(20)]
    return X_train, X_test, y_test


def test_pipeline_steps_and_scores():
    X_train, X_test, y_test = _data()
    pipe = make_thesis_pipeline(n_components=5, max_components=3, random_state=0)
    assert [name for name, _ in pipe.steps] == ["pca", "detector"]
    assert isinstance(pipe[-1], FilteredFit)
    assert isinstance(make_thesis_pipeline(filter_outliers=False)[-1], KMeansScorer)
    pipe.fit(X_train)
    assert roc_auc_score(y_test, -pipe.score_samples(X_test)) > 0.95


def test_scores_before_and_after_filtering_in_one_call():
    X_train, X_test, y_test = _data()
    out = thesis_scores(
        X_train,
        X_test,
        n_components=5,
        max_components=3,
        filter_contamination=0.12,
        random_state=0,
    )
    assert out["n_filtered"] == round(0.12 * len(X_train))
    assert all(k >= 1 for k in out["n_clusters"])
    assert out["filter"].inlier_mask_.sum() == len(X_train) - out["n_filtered"]
    for key in ("kmeans", "gmm_filtered_kmeans"):
        assert out[key].shape == (120,) and out[key].dtype == np.float64
    assert roc_auc_score(y_test, -out["gmm_filtered_kmeans"]) > 0.95
    same = make_thesis_pipeline(
        n_components=5, max_components=3, filter_contamination=0.12, random_state=0
    ).fit(X_train)
    np.testing.assert_allclose(same.score_samples(X_test), out["gmm_filtered_kmeans"])


def test_with_an_image_feature_extractor(rgb_images):
    feats = DINOFeatures("test_vit", pretrained=False, image_size=32)
    pipe = make_thesis_pipeline(feats, n_components=4, max_components=2, random_state=0)
    pipe.fit(rgb_images)
    assert pipe.score_samples(rgb_images[:2]).shape == (2,)
    out = thesis_scores(rgb_images, rgb_images[:3], feats, n_components=4, max_components=2)
    assert out["kmeans"].shape == (3,)


def test_the_thesis_example_runs_both_variants(capsys):
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "thesis_pipeline.py"
    main = runpy.run_path(str(path))["main"]
    argv = ["--dataset", "digits", "--backbone", "test_resnet", "--image-size", "16"]
    aurocs = main([*argv, "--n-components", "5", "--n-train", "120", "--n-test", "60"])
    assert set(aurocs) == {"kmeans", "gmm_filtered_kmeans"}
    assert all(0.0 <= a <= 1.0 for a in aurocs.values())
    out = capsys.readouterr().out
    assert "class 0 (0) held out; 120 training images" in out and "dropped)" in out
