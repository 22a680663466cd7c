"""Tests of GMMOutlierFilter, FilteredFit and KMeansScorer (Gasoyan thesis, sections 4.4-4.7)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from ssad.scoring import FilteredFit, GMMOutlierFilter, KMeansScorer
from ssad.scoring._kmeans import _elbow_index


@pytest.fixture(autouse=True)
def _single_thread():
    """Run the many tiny K-means / EM fits on one thread.

    On data this small OpenMP and BLAS threads only add overhead, and on a
    loaded 2-core machine their spin-waiting makes each fit up to 100x slower.
    """
    with threadpool_limits(limits=1):
        yield


CHECKED = [
    GMMOutlierFilter(max_components=2),
    KMeansScorer(n_clusters=2),
    KMeansScorer(max_clusters=3),
    # set_random_state only reaches a top-level `random_state`; seed the parts instead
    FilteredFit(
        GMMOutlierFilter(max_components=2, covariance_types="spherical", random_state=0),
        KMeansScorer(n_clusters=2, random_state=0),
    ),
]


@parametrize_with_checks(CHECKED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# -- data ------------------------------------------------------------------------


def _mixture(n_per_component=200, seed=0):
    """Three well-separated spherical Gaussians in 4-D."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0, 0, 0], [12, 0, 0, 0], [0, 12, 0, 0]])
    return np.vstack([m + rng.normal(size=(n_per_component, 4)) for m in means])


def _mixture_with_outliers(seed=0):
    """570 inliers from the 3-component mixture + 30 (5 %) far, scattered outliers."""
    rng = np.random.default_rng(seed)
    X = _mixture(n_per_component=190, seed=seed)
    directions = rng.normal(size=(30, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    outliers = np.array([4.0, 4, 0, 0]) + rng.uniform(40, 80, size=(30, 1)) * directions
    X_all = np.vstack([X, outliers])
    is_outlier = np.r_[np.zeros(len(X), bool), np.ones(30, bool)]
    order = rng.permutation(len(X_all))
    return X_all[order], is_outlier[order]


# -- GMMOutlierFilter ---------------------------------------------------------------


def test_bic_picks_planted_number_of_components():
    X = _mixture(n_per_component=150)
    gmm = GMMOutlierFilter(max_components=5, criterion="bic", random_state=0).fit(X)
    assert gmm.n_components_ == 3
    assert gmm.gmm_.n_components == 3
    assert gmm.covariance_type_ in {"full", "spherical"}
    row = gmm.best_index_
    assert gmm.criteria_["bic"][row] == gmm.criteria_["bic"].min()
    assert gmm.criteria_["n_components"][row] == 3


def test_aic_criterion_is_used():
    X = _mixture(n_per_component=60)
    gmm = GMMOutlierFilter(max_components=4, criterion="aic", random_state=0).fit(X)
    assert gmm.criteria_["aic"][gmm.best_index_] == gmm.criteria_["aic"].min()


def test_criteria_has_one_row_per_grid_point():
    X = _mixture(n_per_component=50)
    types = ("full", "tied", "diag", "spherical")
    gmm = GMMOutlierFilter(max_components=3, covariance_types=types, random_state=0).fit(X)
    c = gmm.criteria_
    assert set(c) == {"n_components", "covariance_type", "bic", "aic", "converged"}
    assert all(len(v) == 3 * 4 for v in c.values())
    pairs = list(zip(c["n_components"].tolist(), c["covariance_type"].tolist()))
    assert pairs == [(k, t) for t in types for k in (1, 2, 3)]
    assert c["bic"].dtype == np.float64 and np.all(np.isfinite(c["bic"]))
    assert c["converged"].dtype == bool


def test_explicit_n_components_grid_and_single_covariance_type():
    X = _mixture(n_per_component=50)
    gmm = GMMOutlierFilter(n_components=[3, 1], covariance_types="diag", random_state=0)
    gmm.fit(X)
    assert gmm.criteria_["n_components"].tolist() == [1, 3]
    assert gmm.covariance_type_ == "diag"


def test_filter_removes_planted_outliers():
    X, is_outlier = _mixture_with_outliers()
    gmm = GMMOutlierFilter(max_components=4, contamination=0.05, random_state=0).fit(X)
    removed = ~gmm.inlier_mask_
    assert np.all(removed[is_outlier]), "every planted outlier must be removed"
    assert np.sum(removed & ~is_outlier) <= 3
    np.testing.assert_array_equal(gmm.inlier_mask_, gmm.predict(X) == 1)
    kept = gmm.filter(X)
    np.testing.assert_array_equal(kept, X[gmm.inlier_mask_])


def test_filter_keeps_the_container_type():
    pd = pytest.importorskip("pandas")
    X, _ = _mixture_with_outliers()
    df = pd.DataFrame(X, columns=list("abcd"))
    gmm = GMMOutlierFilter(max_components=3, contamination=0.05, random_state=0).fit(df)
    kept = gmm.filter(df)
    assert isinstance(kept, pd.DataFrame)
    assert len(kept) == int(gmm.inlier_mask_.sum())


def test_gmm_random_state_reproducible():
    X, _ = _mixture_with_outliers()
    a = GMMOutlierFilter(max_components=3, random_state=3).fit(X)
    b = GMMOutlierFilter(max_components=3, random_state=3).fit(X)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    for key in a.criteria_:
        np.testing.assert_array_equal(a.criteria_[key], b.criteria_[key])
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (global RNG untouched)
    GMMOutlierFilter(max_components=2, random_state=None).fit(X)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_gmm_convergence_warning_is_logged_not_raised(caplog):
    X, _ = _mixture_with_outliers()
    gmm = GMMOutlierFilter(max_components=2, max_iter=1, random_state=0)
    with caplog.at_level(logging.INFO, logger="ssad.scoring"):
        gmm.fit(X)  # filterwarnings=error would turn a leaked ConvergenceWarning into a failure
    assert not gmm.criteria_["converged"].all()
    assert any("converge" in r.getMessage() for r in caplog.records)


def test_gmm_grid_clipped_to_distinct_rows():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 9.0]]), 4, axis=0)
    gmm = GMMOutlierFilter(max_components=6, random_state=0).fit(X)
    assert gmm.criteria_["n_components"].max() == 3
    with pytest.raises(ValueError, match="n_components=4"):
        GMMOutlierFilter(n_components=4).fit(X)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"covariance_types": ("full", "round")}, "covariance_types"),
        ({"covariance_types": ()}, "covariance_types"),
        ({"n_components": [2, 0]}, "n_components"),
        ({"criterion": "hqc"}, "criterion"),
    ],
)
def test_gmm_invalid_params(params, match):
    with pytest.raises(ValueError, match=match):
        GMMOutlierFilter(**params).fit(_mixture(n_per_component=10))


# -- KMeansScorer -------------------------------------------------------------------


@pytest.mark.parametrize("n_features", [2, 20])
def test_elbow_picks_planted_k(n_features):
    X, _ = make_blobs(
        n_samples=400, centers=4, n_features=n_features, cluster_std=0.6, random_state=1
    )
    scorer = KMeansScorer(max_clusters=10, random_state=0).fit(X)
    assert scorer.n_clusters_ == 4
    assert scorer.cluster_centers_.shape == (4, n_features)
    assert scorer.inertia_curve_.shape == (10,)
    assert np.all(np.diff(scorer.inertia_curve_) <= 1e-6 * scorer.inertia_curve_[0])


def test_kmeans_score_is_minus_distance_to_nearest_centroid():
    X, _ = make_blobs(n_samples=200, centers=3, cluster_std=0.5, random_state=0)
    scorer = KMeansScorer(n_clusters=3, random_state=0).fit(X)
    Z = np.array([[0.0, 0.0], [30.0, -30.0]])
    dist = np.linalg.norm(Z[:, None, :] - scorer.cluster_centers_[None], axis=2).min(axis=1)
    np.testing.assert_allclose(scorer.score_samples(Z), -dist)
    assert scorer.n_clusters_ == 3
    assert not hasattr(scorer, "inertia_curve_")


def test_elbow_index_rule():
    assert _elbow_index([1000.0, 400.0, 150.0, 20.0, 18.0, 16.5, 15.0]) == 3
    assert _elbow_index([5.0]) == 0
    assert _elbow_index([5.0, 1.0]) == 0
    assert _elbow_index([2.0, 2.0, 2.0]) == 0  # flat: no elbow
    assert _elbow_index([8.0, 4.0, 2.0, 1.0]) == 0  # straight in log scale: no elbow
    assert _elbow_index([9.0, 3.0, 0.0, 0.0]) == 2  # K=3 fits exactly


@pytest.mark.parametrize("n_samples", [1, 2, 3])
def test_kmeans_tiny_inputs(n_samples):
    X = np.arange(2.0 * n_samples).reshape(n_samples, 2)
    scorer = KMeansScorer(max_clusters=10, random_state=0).fit(X)
    assert 1 <= scorer.n_clusters_ <= n_samples
    assert scorer.score_samples(X).shape == (n_samples,)
    if n_samples < 2:
        with pytest.raises(ValueError, match="n_samples=1"):
            KMeansScorer(n_clusters=2).fit(X)


def test_kmeans_duplicates_clip_k(caplog):
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 5, axis=0)
    with caplog.at_level(logging.WARNING, logger="ssad.scoring"):
        scorer = KMeansScorer(n_clusters=4, random_state=0).fit(X)
    assert scorer.n_clusters_ == 2
    assert "distinct" in caplog.text
    elbow = KMeansScorer(max_clusters=10, random_state=0).fit(X)
    assert elbow.inertia_curve_.shape == (1,)  # K=2 would fit the two rows exactly


def test_kmeans_random_state_reproducible():
    X, _ = make_blobs(n_samples=150, centers=3, cluster_std=2.0, random_state=0)
    a = KMeansScorer(max_clusters=6, random_state=7).fit(X)
    b = KMeansScorer(max_clusters=6, random_state=7).fit(X)
    np.testing.assert_array_equal(a.inertia_curve_, b.inertia_curve_)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


def test_kmeans_in_pipeline_with_pca():
    X, _ = make_blobs(n_samples=200, centers=3, n_features=30, random_state=0)
    pipe = make_pipeline(PCA(5, random_state=0), KMeansScorer(random_state=0)).fit(X)
    assert pipe.score_samples(X).shape == (200,)
    assert set(np.unique(pipe.predict(X))) == {-1, 1}


# -- FilteredFit --------------------------------------------------------------------


def test_filtered_fit_trains_estimator_on_inliers_only():
    X, is_outlier = _mixture_with_outliers()
    gmm = GMMOutlierFilter(max_components=4, contamination=0.05, random_state=0)
    km = KMeansScorer(max_clusters=6, random_state=0)
    model = FilteredFit(gmm, km).fit(X)

    keep = model.filter_.predict(X) == 1
    assert model.n_filtered_ == int(np.sum(~keep)) == 30
    assert not np.any(keep[is_outlier])
    reference = clone(km).fit(X[keep])
    np.testing.assert_array_equal(model.estimator_.cluster_centers_, reference.cluster_centers_)
    assert model.estimator_.n_clusters_ == 3
    np.testing.assert_array_equal(model.score_samples(X), reference.score_samples(X))
    # offset_ comes from the downstream scores of the full training set
    np.testing.assert_array_equal(model.fit_predict(X), model.fit(X).predict(X))
    assert np.mean(model.predict(X) == -1) == pytest.approx(0.1, abs=0.01)
    # the params are left untouched (clones are fitted)
    assert not hasattr(gmm, "gmm_") and not hasattr(km, "kmeans_")


def test_filtered_fit_filter_can_judge_other_features():
    X, is_outlier = _mixture_with_outliers()
    shuffled = np.random.default_rng(0).permutation(X)  # rows unrelated to X's
    gmm = GMMOutlierFilter(max_components=4, contamination=0.05, random_state=0)
    km = KMeansScorer(max_clusters=6, random_state=0)
    model = FilteredFit(gmm, km).fit(shuffled, X_filter=X)
    # the filter sees X and drops its outliers; the estimator sees the other rows
    reference = FilteredFit(gmm, km).fit(X)
    np.testing.assert_array_equal(model.inlier_mask_, reference.inlier_mask_)
    assert not np.any(model.inlier_mask_[is_outlier])
    direct = clone(km).fit(shuffled[model.inlier_mask_])
    np.testing.assert_array_equal(model.score_samples(X), direct.score_samples(X))
    with pytest.raises(ValueError, match="one row per training sample: X has 600 rows"):
        FilteredFit(gmm, km).fit(X, X_filter=X[:10])


def test_filtered_fit_default_filter_is_gmm():
    X = _mixture(n_per_component=20)
    model = FilteredFit(estimator=KMeansScorer(n_clusters=3, random_state=0)).fit(X)
    assert isinstance(model.filter_, GMMOutlierFilter)
    assert model.n_filtered_ == int(np.sum(~model.filter_.inlier_mask_))


def test_filtered_fit_requires_estimator():
    with pytest.raises(ValueError, match="estimator"):
        FilteredFit().fit(_mixture(n_per_component=10))


def test_filtered_fit_pickles_and_reproduces():
    X, _ = _mixture_with_outliers()
    model = FilteredFit(
        GMMOutlierFilter(max_components=3, random_state=1),
        KMeansScorer(max_clusters=5, random_state=1),
    ).fit(X)
    again = clone(model).fit(X)
    np.testing.assert_array_equal(model.score_samples(X), again.score_samples(X))
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))


def test_gmm_filter_skips_mixtures_that_collapse(monkeypatch):
    from sklearn.mixture import GaussianMixture

    original = GaussianMixture.fit

    def fit(self, X, y=None):
        if self.n_components == 2:
            raise ValueError("Fitting the mixture model failed because some components have ...")
        return original(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", fit)
    X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    flt = GMMOutlierFilter(max_components=3, covariance_types=("full",), random_state=0).fit(X)
    assert np.isinf(flt.criteria_["bic"][1]) and flt.n_components_ != 2


@pytest.mark.parametrize("n_samples", [6, 8, 10])
def test_elbow_never_gives_every_training_row_its_own_centroid(n_samples):
    """K = n fits the rows exactly (inertia 0) and would flag every new sample."""
    X = np.random.default_rng(0).normal(size=(n_samples, 5))
    scorer = KMeansScorer(max_clusters=10, random_state=0).fit(X)
    assert scorer.n_clusters_ < n_samples and scorer.inertia_curve_.shape == (n_samples - 1,)
    fresh = np.random.default_rng(1).normal(size=(500, 5))
    assert (scorer.predict(fresh) == -1).mean() < 0.5
