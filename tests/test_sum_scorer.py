"""SumScorer: several scorers, each on its own columns, added into one score."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from ssad.scoring import GaussianScorer, KNNScorer, SumScorer


@parametrize_with_checks(
    [
        SumScorer([("all", GaussianScorer(variance=None), slice(None))]),
        SumScorer(
            [
                ("a", GaussianScorer(variance=None), slice(0, 1)),
                ("b", GaussianScorer(variance=None), slice(1, None)),
            ],
            standardize=True,
        ),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_plain_sum_and_standardised_sum():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(200, 2)), 100 * rng.normal(size=(200, 2))]
    a = GaussianScorer(variance=None).fit(X[:, :2])
    b = KNNScorer().fit(X[:, 2:])
    plain = SumScorer([("a", GaussianScorer(variance=None), [0, 1]), ("b", KNNScorer(), [2, 3])])
    plain.fit(X)
    X_new = rng.normal(size=(5, 4))
    np.testing.assert_allclose(
        plain.score_samples(X_new), a.score_samples(X_new[:, :2]) + b.score_samples(X_new[:, 2:])
    )
    # the training scores are each part's own (leave-one-out for kNN)
    np.testing.assert_allclose(plain.train_scores_, a.train_scores_ + b.train_scores_)
    std = SumScorer(plain.scorers, standardize=True).fit(X)
    expected = (a.score_samples(X_new[:, :2]) - a.train_scores_.mean()) / a.train_scores_.std()
    expected += (b.score_samples(X_new[:, 2:]) - b.train_scores_.mean()) / b.train_scores_.std()
    np.testing.assert_allclose(std.score_samples(X_new), expected)
    assert set(std.score_parts(X_new)) == {"a", "b"}


def test_bad_scorers():
    with pytest.raises(ValueError, match="non-empty list of \\(name, scorer, columns\\)"):
        SumScorer([]).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="non-empty list"):
        SumScorer([("a", GaussianScorer())]).fit(np.zeros((5, 2)))


def test_part_names_must_be_distinct():
    X = np.random.default_rng(0).normal(size=(30, 4))
    parts = [("a", GaussianScorer(), slice(0, 2)), ("a", KNNScorer(), slice(2, 4))]
    with pytest.raises(ValueError, match="distinct names; got \\['a', 'a'\\]"):
        SumScorer(parts).fit(X)
