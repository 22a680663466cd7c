"""Feature extractors: frozen timm backbones as scikit-learn transformers."""

from ssad.features._timm import DINOFeatures, MAEFeatures, TimmFeatures

__all__ = ["DINOFeatures", "MAEFeatures", "TimmFeatures"]
