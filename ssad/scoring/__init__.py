"""Scorers on embeddings: 2-D outlier detectors that follow :class:`ssad.base.BaseDetector`.

Each takes ``X`` of shape ``(n_samples, n_features)`` and returns float64
``score_samples`` (higher = more normal).  They pass scikit-learn's full
estimator checks and are the building blocks the deep detectors compose.
"""

from ssad.scoring._coreset import greedy_coreset
from ssad.scoring._cosine import CosineKernelScorer
from ssad.scoring._gaussian import GaussianScorer
from ssad.scoring._gmm import FilteredFit, GMMOutlierFilter
from ssad.scoring._kmeans import KMeansScorer
from ssad.scoring._knn import AUTO_IVF_MIN_SAMPLES, KNNScorer
from ssad.scoring._sum import SumScorer

__all__ = [
    "AUTO_IVF_MIN_SAMPLES",
    "CosineKernelScorer",
    "FilteredFit",
    "GMMOutlierFilter",
    "GaussianScorer",
    "KMeansScorer",
    "KNNScorer",
    "SumScorer",
    "greedy_coreset",
]
