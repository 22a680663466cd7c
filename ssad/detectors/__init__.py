"""Deep image detectors: a backbone, its own training objective and scorers from ssad.scoring."""

from ssad.detectors.transformaly import Transformaly, TransformalyDetector

__all__ = ["Transformaly", "TransformalyDetector"]
