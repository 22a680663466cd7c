"""Image features: the one embedder, frozen timm backbones and raw pixels as transformers."""

from ssad.features._embed import (
    POOLINGS,
    backbone_features,
    embed_images,
    feature_grids,
    resolve_pooling,
    token_grid,
    tokens_to_grid,
)
from ssad.features._pixels import PixelFeatures
from ssad.features._timm import DINOFeatures, MAEFeatures, TimmFeatures

__all__ = [
    "POOLINGS",
    "DINOFeatures",
    "MAEFeatures",
    "PixelFeatures",
    "TimmFeatures",
    "backbone_features",
    "embed_images",
    "feature_grids",
    "resolve_pooling",
    "token_grid",
    "tokens_to_grid",
]
