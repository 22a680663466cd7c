"""Deep image detectors and recipes: a backbone, its training objective, scorers from ssad.scoring."""

from ssad.detectors.thesis import make_thesis_pipeline, thesis_scores
from ssad.detectors.transformaly import Transformaly, TransformalyDetector

__all__ = ["Transformaly", "TransformalyDetector", "make_thesis_pipeline", "thesis_scores"]
