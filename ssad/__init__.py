"""ssad: self-supervised anomaly detection for images, as scikit-learn estimators.

Every detector follows scikit-learn's outlier-detector contract:
``score_samples`` is higher for more normal samples, ``predict`` returns +1
for inliers and -1 for outliers, ``p_values`` and ``predict_proba`` turn
scores into conformal p-values, and :func:`ssad.set_threshold` moves the
threshold to a target false-positive rate or the best F1.  Fitted estimators are saved with
:func:`ssad.save` and read back with :func:`ssad.load`, a format that cannot run
code (pickle works too, for files you trust).
"""

from ssad._io import load, save
from ssad.base import BaseDetector
from ssad.detectors import (
    ConvexMILDetector,
    PatchCoreDetector,
    SelfDistillNegDetector,
    Transformaly,
    TransformalyDetector,
)
from ssad.features import DINOFeatures, MAEFeatures, TimmFeatures
from ssad.scoring import (
    CosineKernelScorer,
    FilteredFit,
    GaussianScorer,
    GMMOutlierFilter,
    KMeansScorer,
    KNNScorer,
)
from ssad.thresholds import set_threshold

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseDetector",
    "ConvexMILDetector",
    "CosineKernelScorer",
    "DINOFeatures",
    "FilteredFit",
    "GMMOutlierFilter",
    "GaussianScorer",
    "KMeansScorer",
    "KNNScorer",
    "MAEFeatures",
    "PatchCoreDetector",
    "SelfDistillNegDetector",
    "TimmFeatures",
    "Transformaly",
    "TransformalyDetector",
    "__version__",
    "load",
    "save",
    "set_threshold",
]
