"""Tests of the embedding scorers GaussianScorer, KNNScorer and CosineKernelScorer."""

from __future__ import annotations

import doctest
import importlib
import pickle

import faiss
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, spearmanr
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from ssad.scoring import CosineKernelScorer, GaussianScorer, KNNScorer

CHECKED = [
    GaussianScorer(),
    GaussianScorer(variance=None, whiten=False),
    GaussianScorer(variance=1.0),
    KNNScorer(),
    KNNScorer(n_neighbors=1),
    KNNScorer(n_neighbors="sqrt", aggregate="mean"),
    KNNScorer(n_neighbors=3, metric="cosine", aggregate="max", batch_size=5),
    KNNScorer(aggregate="mean", batch_size=1),
    KNNScorer(index="ivf", n_lists=2, n_probe=1, random_state=0),
    KNNScorer(index="ivf", n_lists=2, n_probe=1, compression="sq8", random_state=0),
    KNNScorer(index="hnsw", hnsw_m=4, ef_search=8),
    CosineKernelScorer(batch_size=7),
    CosineKernelScorer(temperature=0.5, shift=0.1, log=False),
]


def _expected_failed_checks(estimator):
    if isinstance(estimator, KNNScorer):
        # offset_ comes from leave-one-out training scores (each sample scored against
        # the others), so that predict() flags `contamination` of *new* normal data;
        # predict(X_train) scores the training samples with themselves as neighbour
        # and flags fewer than `contamination` of them.
        reason = "offset_ is calibrated on leave-one-out training scores"
        return {"check_outliers_fit_predict": reason, "check_outliers_train": reason}
    return {}


@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("module", ["_gaussian", "_knn", "_cosine"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"ssad.scoring.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# -- data ------------------------------------------------------------------------


def _data(n_train=60, n_test=15, n_features=6, seed=0):
    """Correlated Gaussian training and test data."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features))
    return (
        rng.normal(size=(n_train, n_features)) @ mixing,
        rng.normal(size=(n_test, n_features)) @ mixing,
    )


def _inliers_and_far_outliers(seed=0):
    """200 inliers around 10 * e_1 in 8-D and 10 outliers around -10 * e_1.

    The outliers are far away in Euclidean distance and point the opposite way,
    so they are outliers for every metric, the cosine one included.
    """
    rng = np.random.default_rng(seed)
    centre = np.zeros(8)
    centre[0] = 10.0
    X_train = centre + rng.normal(size=(200, 8))
    X_test = np.vstack([centre + rng.normal(size=(40, 8)), -centre + rng.normal(size=(10, 8))])
    return X_train, X_test


ALL_SCORERS = [
    GaussianScorer(),
    GaussianScorer(variance=None),
    KNNScorer(),
    KNNScorer(metric="cosine", aggregate="mean"),
    CosineKernelScorer(),
]


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
def test_far_outliers_get_the_lowest_scores(scorer):
    X_train, X_test = _inliers_and_far_outliers()
    scores = clone(scorer).fit(X_train).score_samples(X_test)
    assert scores.dtype == np.float64
    assert scores[40:].max() < scores[:40].min()


@pytest.mark.parametrize("scorer", ALL_SCORERS, ids=repr)
def test_float32_input_gives_float64_scores(scorer):
    X_train, X_test = _data()
    fitted = clone(scorer).fit(X_train.astype(np.float32))
    scores = fitted.score_samples(X_test.astype(np.float32))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, clone(scorer).fit(X_train).score_samples(X_test), rtol=1e-4)


# -- GaussianScorer --------------------------------------------------------------


def test_gaussian_without_pca_is_the_multivariate_normal_logpdf():
    X_train, X_test = _data()
    scorer = GaussianScorer(variance=None, whiten=False, reg_covar=1e-3).fit(X_train)
    covariance = np.cov(X_train, rowvar=False, bias=True)
    # the regularisation is relative: reg_covar times the mean variance
    covariance += 1e-3 * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    expected = multivariate_normal(X_train.mean(axis=0), covariance).logpdf(X_test)
    np.testing.assert_allclose(scorer.score_samples(X_test), expected, rtol=1e-10)
    np.testing.assert_allclose(scorer.location_, X_train.mean(axis=0))
    np.testing.assert_allclose(scorer.covariance_, covariance)
    np.testing.assert_allclose(
        scorer.precision_cholesky_ @ scorer.precision_cholesky_.T, np.linalg.inv(covariance)
    )
    assert scorer.pca_ is None


@pytest.mark.parametrize("variance", [None, 0.9, 1.0])
def test_gaussian_score_is_minus_half_mahalanobis_plus_constant(variance):
    X_train, X_test = _data()
    scorer = GaussianScorer(variance=variance).fit(X_train)
    Z = X_test if scorer.pca_ is None else scorer.pca_.transform(X_test)
    diff = Z - scorer.location_
    expected = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(scorer.covariance_), diff)
    distances = scorer.mahalanobis(X_test)
    np.testing.assert_allclose(distances, expected, rtol=1e-8)
    _, log_det = np.linalg.slogdet(scorer.covariance_)
    constant = -0.5 * (Z.shape[1] * np.log(2 * np.pi) + log_det)
    np.testing.assert_allclose(scorer.score_samples(X_test), constant - 0.5 * distances)


def test_gaussian_matches_transformaly_pipeline():
    """PCA whitening to 90 % of the variance, then a one-component GaussianMixture."""
    X_train, X_test = _data(n_train=300, n_features=12)
    scorer = GaussianScorer(variance=0.9).fit(X_train)
    pca = PCA(n_components=0.9, whiten=True, svd_solver="full").fit(X_train)
    gmm = GaussianMixture(n_components=1, reg_covar=1e-6).fit(pca.transform(X_train))
    assert scorer.pca_.n_components_ == pca.n_components_ < X_train.shape[1]
    assert np.sum(scorer.pca_.explained_variance_ratio_) > 0.9
    np.testing.assert_allclose(
        scorer.score_samples(X_test), gmm.score_samples(pca.transform(X_test)), rtol=1e-6
    )


def test_gaussian_variance_one_keeps_the_rank_of_the_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 50))  # d > n: the centred data have rank 9
    scorer = GaussianScorer(variance=1.0).fit(X)
    assert scorer.pca_.n_components_ == 9
    assert np.all(np.isfinite(scorer.score_samples(rng.normal(size=(5, 50)))))


@pytest.mark.parametrize("variance", [None, 0.9])
def test_gaussian_more_features_than_samples_and_constant_features(variance):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 20))
    X[:, :5] = 3.0  # constant features
    scorer = GaussianScorer(variance=variance).fit(X)
    scores = scorer.score_samples(rng.normal(size=(4, 20)))
    assert np.all(np.isfinite(scores))


def test_gaussian_single_sample():
    X = np.array([[1.0, 2.0, 3.0]])
    scorer = GaussianScorer(variance=None).fit(X)
    scores = scorer.score_samples(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]]))
    assert np.all(np.isfinite(scores))
    assert scores[0] > scores[1]
    with pytest.raises(ValueError, match=r"n_samples=1 .*use variance=None"):
        GaussianScorer().fit(X)
    with pytest.raises(ValueError, match=r"n_samples=4 .*use variance=None"):
        GaussianScorer().fit(np.ones((4, 3)))


@pytest.mark.parametrize("factor", [1e-4, 1e4])
@pytest.mark.parametrize("n_samples", [12, 200])  # fewer / more samples than features
def test_gaussian_without_pca_ranking_does_not_depend_on_the_unit(factor, n_samples):
    X_train, X_test = _data(n_train=n_samples, n_test=40, n_features=30)
    X_train[:, :3] = 0.5  # constant features: the regularisation matters
    reference = GaussianScorer(variance=None).fit(X_train)
    scaled = GaussianScorer(variance=None).fit(X_train * factor)
    expected = reference.mahalanobis(X_test)
    np.testing.assert_allclose(scaled.mahalanobis(X_test * factor), expected, rtol=1e-6)
    assert spearmanr(scaled.score_samples(X_test * factor), expected).statistic == pytest.approx(
        -1.0
    )
    assert scaled.reg_covar_ == pytest.approx(reference.reg_covar_ * factor**2)
    assert reference.reg_covar_ == pytest.approx(1e-6 * np.trace(np.cov(X_train.T, bias=True)) / 30)


def test_gaussian_parameter_validation():
    with pytest.raises(ValueError, match="The 'variance' parameter of GaussianScorer must be"):
        GaussianScorer(variance=1.5).fit(np.eye(3))


# -- KNNScorer ------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("aggregate", ["sum", "mean", "max"])
def test_knn_matches_sklearn_nearest_neighbors(metric, aggregate):
    X_train, X_test = _data()
    X_test[0] = 0.0  # an all-zero row: cosine distance 1 to everything
    scorer = KNNScorer(n_neighbors=4, metric=metric, aggregate=aggregate).fit(X_train)
    nn = NearestNeighbors(
        n_neighbors=4, algorithm="brute", metric="euclidean" if metric == "l2" else "cosine"
    ).fit(X_train)
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[aggregate]
    for X in (X_test, X_train):  # the training set: each sample is its own neighbour
        distances, _ = nn.kneighbors(X)
        np.testing.assert_allclose(
            scorer.score_samples(X), -reduce(distances, axis=1), rtol=1e-5, atol=1e-5
        )


def test_knn_offset_from_leave_one_out_training_scores():
    X_train, _ = _data()
    scorer = KNNScorer(n_neighbors=2, aggregate="sum", contamination=0.2).fit(X_train)
    nn = NearestNeighbors(n_neighbors=2).fit(X_train)
    leave_one_out, _ = nn.kneighbors()  # the 2 nearest *other* samples
    assert scorer.offset_ == pytest.approx(np.percentile(-leave_one_out.sum(axis=1), 20))
    # so that new samples from the training distribution are flagged at about that rate
    rng = np.random.default_rng(5)
    X_new = rng.normal(size=(4000, X_train.shape[1])) * X_train.std(0) + X_train.mean(0)
    X_ref = rng.normal(size=(400, X_train.shape[1])) * X_train.std(0) + X_train.mean(0)
    share = np.mean(KNNScorer(contamination=0.2).fit(X_ref).predict(X_new) == -1)
    assert 0.12 < share < 0.3


def test_knn_leave_one_out_handles_duplicates():
    X = np.repeat(np.arange(5.0)[:, None], 3, axis=0)  # every row three times
    scorer = KNNScorer(n_neighbors=2).fit(X)
    assert scorer.offset_ == 0.0  # each row still has two identical others


def test_knn_too_many_neighbors():
    with pytest.raises(
        ValueError,
        match=r"Expected n_neighbors < n_samples_fit .*n_neighbors = 3, n_samples_fit = 3",
    ):
        KNNScorer(n_neighbors=3).fit(np.eye(3))


def test_knn_sqrt_neighbors_grow_with_the_training_set():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    sqrt = KNNScorer(n_neighbors="sqrt").fit(X)
    assert sqrt.n_neighbors_ == 8  # ceil(sqrt(50))
    np.testing.assert_array_equal(
        sqrt.score_samples(X[:5]), KNNScorer(n_neighbors=8).fit(X).score_samples(X[:5])
    )
    np.testing.assert_array_equal(sqrt.train_scores_, KNNScorer(n_neighbors=8).fit(X).train_scores_)
    assert KNNScorer(n_neighbors="sqrt").fit(X[:2]).n_neighbors_ == 1  # capped at n - 1


def test_knn_sqrt_neighbors_see_through_a_group_of_outliers():
    # 4 near-identical outliers among 60 inliers: with k=2 they vouch for each other
    # and the filter threshold (10 %) keeps them; a neighbourhood of ceil(sqrt(64)) = 8
    # reaches past the group
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(60, 2)), 8.0 + 0.01 * rng.normal(size=(4, 2))])
    small = KNNScorer(n_neighbors=2, contamination=0.1).fit(X)
    grown = KNNScorer(n_neighbors="sqrt", contamination=0.1).fit(X)
    assert (small.train_scores_[60:] >= small.offset_).all()
    assert (grown.train_scores_[60:] < grown.offset_).all()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_knn_pickle_round_trip(metric):
    X_train, X_test = _data()
    scorer = KNNScorer(n_neighbors=3, metric=metric).fit(X_train)
    expected = scorer.score_samples(X_test)
    restored = pickle.loads(pickle.dumps(scorer))
    assert restored._index is None  # rebuilt on first use
    np.testing.assert_array_equal(restored.score_samples(X_test), expected)
    assert restored.offset_ == scorer.offset_
    # the original still works after pickling (its index was not dropped)
    np.testing.assert_array_equal(scorer.score_samples(X_test), expected)


def test_knn_batch_size_does_not_change_scores():
    X_train, X_test = _data()
    big = KNNScorer(n_neighbors=3).fit(X_train).score_samples(X_test)
    tiny = KNNScorer(n_neighbors=3, batch_size=1).fit(X_train).score_samples(X_test)
    np.testing.assert_array_equal(tiny, big)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("factor", [1e-30, 1e20, 1e-200, 1e200])
def test_knn_scores_do_not_saturate_beyond_the_float32_range(metric, factor):
    # faiss searches in float32: squared distances of 1e20 overflow it, of 1e-30 vanish
    X_train, X_test = _data()
    reference = KNNScorer(n_neighbors=3, metric=metric).fit(X_train)
    scorer = KNNScorer(n_neighbors=3, metric=metric).fit(X_train * factor)
    unit = factor if metric == "l2" else 1.0
    scores = scorer.score_samples(X_test * factor)
    assert len(np.unique(scores)) == len(X_test)
    np.testing.assert_allclose(scores, reference.score_samples(X_test) * unit, rtol=1e-5)
    assert scorer.offset_ == pytest.approx(reference.offset_ * unit, rel=1e-5)
    restored = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(restored.score_samples(X_test * factor), scores)


def test_knn_scale_is_an_exact_power_of_two():
    X_train, _ = _data()
    scorer = KNNScorer(n_neighbors=3).fit(X_train)
    peak = np.abs(X_train).max()
    assert scorer.scale_ <= peak < 2 * scorer.scale_
    assert np.log2(scorer.scale_) == int(np.log2(scorer.scale_))
    assert KNNScorer(metric="cosine").fit(X_train).scale_ == 1.0
    assert KNNScorer(n_neighbors=1).fit(np.zeros((3, 2))).scale_ == 1.0


def test_knn_refuses_queries_beyond_the_float32_range_of_the_training_scale():
    X_train, X_test = _data()
    scorer = KNNScorer(n_neighbors=3).fit(X_train)
    with pytest.raises(ValueError, match=r"X has values up to .*float32 search of faiss"):
        scorer.score_samples(X_test * 1e20)


def _clustered(n, d=16, n_clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)) * 4.0
    return centres[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, d))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_knn_ivf_searching_every_cell_is_exact(metric):
    X_train, X_test = _data()
    exact = KNNScorer(n_neighbors=3, metric=metric, index="flat").fit(X_train)
    ivf = KNNScorer(n_neighbors=3, metric=metric, index="ivf", n_lists=4, n_probe=4).fit(X_train)
    assert (ivf.index_, ivf.n_lists_) == ("ivf", 4)
    np.testing.assert_allclose(ivf.score_samples(X_test), exact.score_samples(X_test), rtol=1e-5)
    # the leave-one-out training scores go through the same index
    np.testing.assert_allclose(ivf.train_scores_, exact.train_scores_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"index": "ivf", "compression": None},
        {"index": "ivf"},  # "auto": 4-bit codes of 8 features
        {"index": "hnsw"},
        {"index": "ivf", "pq_subvectors": 16, "n_lists": 8},
        {"index": "ivf", "compression": "sq8"},
    ],
)
def test_knn_approximate_indexes_find_the_exact_neighbours_on_clusters(params):
    X = _clustered(4000, d=64)
    X_train, X_test = X[:3600], X[3600:]
    exact = KNNScorer(index="flat").fit(X_train)
    approx = KNNScorer(random_state=0, **params).fit(X_train)
    # most neighbours are the exact ones; in 64 dimensions the members of a cluster are
    # at almost equal distances, so a missed neighbour is replaced by one about as near
    for found, expected in [
        (approx.score_samples(X_test), exact.score_samples(X_test)),
        (approx.train_scores_, exact.train_scores_),  # leave-one-out, through the index
    ]:
        error = np.abs(found - expected) / np.abs(expected)
        assert np.median(error) < 1e-4
        assert np.percentile(error, 95) < 0.1
    assert approx.offset_ == pytest.approx(exact.offset_, rel=0.01)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_knn_kneighbors_matches_sklearn(metric):
    X_train, X_test = _data()
    scorer = KNNScorer(n_neighbors=3, metric=metric).fit(X_train)
    distances, indices = scorer.kneighbors(X_test)
    nn = NearestNeighbors(
        n_neighbors=3, algorithm="brute", metric="euclidean" if metric == "l2" else "cosine"
    ).fit(X_train)
    expected_d, expected_i = nn.kneighbors(X_test)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5, atol=1e-6)
    assert distances.dtype == np.float64 and indices.dtype == np.int64
    # another number of neighbours, as sklearn's kneighbors(X, n_neighbors)
    d5, i5 = scorer.kneighbors(X_test, n_neighbors=5)
    np.testing.assert_array_equal(i5, nn.kneighbors(X_test, n_neighbors=5)[1])
    np.testing.assert_array_equal(i5[:, :3], indices)
    np.testing.assert_allclose(d5[:, :3], distances)
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit, but n_neighbors = 61"):
        scorer.kneighbors(X_test, n_neighbors=len(X_train) + 1)
    with pytest.raises(ValueError, match="positive int, got 0"):
        scorer.kneighbors(X_test, n_neighbors=0)


def test_index_rows_searches_without_scoring_the_rows():
    from ssad.scoring._knn import index_rows

    X_train, X_test = _data()
    params = {"index": "ivf", "n_lists": 2, "n_probe": 2, "compression": None}
    bank = index_rows(X_train, n_neighbors=1, random_state=0, **params)
    assert bank.index_ == "ivf" and not hasattr(bank, "train_scores_")
    exact = NearestNeighbors(n_neighbors=2).fit(X_train).kneighbors(X_test)[1]
    np.testing.assert_array_equal(bank.kneighbors(X_test)[1], exact[:, :1])
    np.testing.assert_array_equal(bank.kneighbors(X_test, n_neighbors=2)[1], exact)
    with pytest.raises(ValueError, match="'index' parameter"):
        index_rows(X_train, n_neighbors=1, index="annoy")


def test_knn_auto_index_switches_at_the_threshold(monkeypatch):
    from ssad.scoring import _knn

    X_train, _ = _data()
    assert KNNScorer().fit(X_train).index_ == "flat"
    monkeypatch.setattr(_knn, "AUTO_IVF_MIN_SAMPLES", len(X_train))
    scorer = KNNScorer(random_state=0).fit(X_train)
    assert scorer.index_ == "ivf"
    assert scorer.n_lists_ == max(1, min(round(4 * np.sqrt(len(X_train))), len(X_train) // 39))
    # 6 features: not a multiple of 8
    assert (scorer.compression_, scorer.pq_subvectors_) == (None, None)
    wide = KNNScorer(random_state=0).fit(np.hstack([X_train, X_train, X_train[:, :4]]))
    assert (wide.compression_, wide.pq_subvectors_) == ("pq", 2)  # one 4-bit code per 8
    sq8 = KNNScorer(compression="sq8", random_state=0).fit(X_train)
    assert (sq8.compression_, sq8.pq_subvectors_) == ("sq8", None)
    assert KNNScorer(compression=None).fit(X_train).compression_ is None


@pytest.mark.parametrize(
    "params",
    [
        {"index": "ivf", "n_lists": 6, "n_probe": 2},
        {"index": "ivf", "n_lists": 6, "n_probe": 2, "pq_subvectors": 3},
        {"index": "ivf", "n_lists": 6, "n_probe": 2, "compression": "sq8", "refine_factor": 2},
        {"index": "hnsw", "hnsw_m": 4, "ef_search": 4},
        {"index": "hnsw", "metric": "cosine"},
    ],
)
def test_knn_approximate_index_round_trips_without_retraining(params, tmp_path):
    import ssad

    X_train, X_test = _data()
    scorer = KNNScorer(n_neighbors=2, random_state=0, **params).fit(X_train)
    expected = scorer.score_samples(X_test)
    restored = pickle.loads(pickle.dumps(scorer))
    assert restored._index is None
    np.testing.assert_array_equal(restored.score_samples(X_test), expected)
    ssad.save(scorer, tmp_path / "knn.ssad")
    np.testing.assert_array_equal(ssad.load(tmp_path / "knn.ssad").score_samples(X_test), expected)


def test_knn_ivf_is_reproducible_with_random_state():
    X_train, X_test = _data()
    a = KNNScorer(index="ivf", n_lists=5, n_probe=1, random_state=3).fit(X_train)
    b = KNNScorer(index="ivf", n_lists=5, n_probe=1, random_state=3).fit(X_train)
    np.testing.assert_array_equal(a.score_samples(X_test), b.score_samples(X_test))
    np.testing.assert_array_equal(a.train_scores_, b.train_scores_)


def test_knn_refuses_a_damaged_hnsw_graph():
    X_train, X_test = _data()
    restored = pickle.loads(pickle.dumps(KNNScorer(index="hnsw").fit(X_train)))
    restored._trained["hnsw"]["neighbors"][0] = len(X_train)  # points outside the data
    with pytest.raises(ValueError, match="stored HNSW graph does not match"):
        restored.score_samples(X_test)


def test_knn_index_parameter_errors():
    X_train, _ = _data()
    with pytest.raises(ValueError, match="compression='sq8' .* needs index='ivf'"):
        KNNScorer(index="flat", compression="sq8").fit(X_train)
    with pytest.raises(ValueError, match=r"must divide the number of features \(6\)"):
        KNNScorer(index="ivf", pq_subvectors=4).fit(X_train)
    with pytest.raises(ValueError, match=r"pq_subvectors='auto' gives 0 .*compression='sq8'"):
        KNNScorer(index="ivf", compression="pq").fit(X_train)  # 6 features: fewer than 8
    with pytest.raises(ValueError, match="needs at least 16 training samples"):
        KNNScorer(index="ivf", pq_subvectors=2).fit(X_train[:15])
    with pytest.raises(ValueError, match="n_lists must be at most the number of training"):
        KNNScorer(index="ivf", n_lists=10_000).fit(X_train)
    with pytest.raises(ValueError, match="The 'index' parameter of KNNScorer must be"):
        KNNScorer(index="lsh").fit(X_train)


@pytest.mark.skipif(getattr(faiss, "get_num_gpus", lambda: 0)() > 0, reason="faiss sees a GPU")
def test_knn_cuda_without_gpu_faiss_names_the_fix():
    X_train, _ = _data()
    with pytest.raises(RuntimeError, match="install a faiss-gpu package"):
        KNNScorer(device="cuda").fit(X_train)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_knn_gpu_path_moves_flat_and_ivf_indexes_without_compression(monkeypatch, index):
    """With a faiss that reports a GPU, flat and IVF indexes go through
    ``index_cpu_to_gpu`` (stood in for by the CPU index here), IVF without the
    CPU's automatic PQ codes, HNSW stays on the CPU, and the scores are those of
    the same index kept on the CPU by ``device="cpu"``, which moves nothing."""
    from ssad.scoring import _knn

    moved = []

    def to_gpu(resources, device, cpu_index):
        moved.append((type(resources).__name__, device, type(cpu_index).__name__))
        return cpu_index

    class FakeGpuResources:
        pass

    monkeypatch.setattr(_knn, "_faiss_gpus", lambda: 1)
    monkeypatch.setattr(_knn, "_GPU_RESOURCES", None)
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeGpuResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    X_train, X_test = _data(n_train=400, n_features=16)
    params = dict(index=index, n_lists=8, n_probe=8, random_state=0)
    on_gpu = KNNScorer(**params).fit(X_train)
    if index == "hnsw":  # its graph is built in parallel: not compared bit for bit
        assert moved == []
        return
    expected = "IndexFlat" if index == "flat" else "IndexIVFFlat"
    assert moved == [("FakeGpuResources", 0, expected)]
    assert on_gpu.compression_ is None
    moved.clear()
    on_cpu = KNNScorer(**params, device="cpu", compression=None).fit(X_train)
    assert moved == []
    np.testing.assert_allclose(on_gpu.score_samples(X_test), on_cpu.score_samples(X_test))
    np.testing.assert_allclose(on_gpu.offset_, on_cpu.offset_)


# -- CosineKernelScorer ------------------------------------------------------------


def _direct_cosine_kernel(X_train, X_test, temperature, shift=0.0):
    """The paper's score, eq. 6: mean over training samples of exp(cos / T)."""
    train = X_train / np.linalg.norm(X_train, axis=1, keepdims=True)
    test = X_test / np.linalg.norm(X_test, axis=1, keepdims=True)
    return np.mean(np.exp((test @ train.T - shift) / temperature), axis=1)


@pytest.mark.parametrize("shift", [0.0, 0.1])
def test_cosine_kernel_matches_direct_computation(shift):
    X_train, X_test = _data()
    direct = _direct_cosine_kernel(X_train, X_test, temperature=0.2, shift=shift)
    log_scorer = CosineKernelScorer(temperature=0.2, shift=shift).fit(X_train)
    np.testing.assert_allclose(log_scorer.score_samples(X_test), np.log(direct), rtol=1e-10)
    scorer = CosineKernelScorer(temperature=0.2, shift=shift, log=False).fit(X_train)
    np.testing.assert_allclose(scorer.score_samples(X_test), direct, rtol=1e-10)


def test_cosine_kernel_shift_moves_log_scores_by_a_constant():
    X_train, X_test = _data()
    plain = CosineKernelScorer().fit(X_train)
    shifted = CosineKernelScorer(shift=0.1).fit(X_train)
    np.testing.assert_allclose(
        shifted.score_samples(X_test), plain.score_samples(X_test) - 0.1 / 0.04
    )
    np.testing.assert_array_equal(shifted.predict(X_test), plain.predict(X_test))


@pytest.mark.parametrize("temperature", [0.01, 0.001])
def test_cosine_kernel_is_stable_at_low_temperature(temperature):
    X_train, X_test = _data()
    scores = CosineKernelScorer(temperature=temperature).fit(X_train).score_samples(X_test)
    assert np.all(np.isfinite(scores))
    train = X_train / np.linalg.norm(X_train, axis=1, keepdims=True)
    test = X_test / np.linalg.norm(X_test, axis=1, keepdims=True)
    expected = logsumexp(test @ train.T / temperature, axis=1) - np.log(len(X_train))
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


def test_cosine_kernel_without_log_reports_overflow():
    X_train, _ = _data()
    scorer = CosineKernelScorer(temperature=0.001, log=False)
    with pytest.raises(FloatingPointError, match="use log=True or a larger temperature"):
        scorer.fit(X_train)


@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_cosine_kernel_batch_size_does_not_change_scores(batch_size):
    X_train, X_test = _data()
    big = CosineKernelScorer(batch_size=10_000).fit(X_train).score_samples(X_test)
    small = CosineKernelScorer(batch_size=batch_size).fit(X_train).score_samples(X_test)
    np.testing.assert_allclose(small, big, rtol=1e-12)


def test_cosine_kernel_is_scale_invariant():
    X_train, X_test = _data()
    scorer = CosineKernelScorer().fit(X_train)
    np.testing.assert_allclose(
        scorer.score_samples(3.0 * X_test), scorer.score_samples(X_test), rtol=1e-12
    )


@pytest.mark.parametrize(
    ("scale", "dtype"), [(1e20, np.float32), (1e-25, np.float32), (1e160, np.float64)]
)
def test_cosine_kernel_scores_do_not_depend_on_the_magnitude(scale, dtype):
    X = np.random.default_rng(0).normal(size=(50, 8)) + 3
    ref = CosineKernelScorer(temperature=0.1).fit(X)
    big = CosineKernelScorer(temperature=0.1).fit((X * scale).astype(dtype))
    np.testing.assert_allclose(
        big.score_samples((X[:5] * scale).astype(dtype)), ref.score_samples(X[:5]), rtol=1e-5
    )
    assert big.offset_ == pytest.approx(ref.offset_, rel=1e-5)
