"""Deep image detectors and recipes: backbone, training objective, scorers from ssad.scoring."""

from ssad.detectors.convex_mil import ConvexMILDetector
from ssad.detectors.patchcore import PatchCoreDetector
from ssad.detectors.self_distill import SelfDistillNegDetector
from ssad.detectors.thesis import make_thesis_pipeline, thesis_scores
from ssad.detectors.transformaly import Transformaly, TransformalyDetector

__all__ = [
    "ConvexMILDetector",
    "PatchCoreDetector",
    "SelfDistillNegDetector",
    "Transformaly",
    "TransformalyDetector",
    "make_thesis_pipeline",
    "thesis_scores",
]
