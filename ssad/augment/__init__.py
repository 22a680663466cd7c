"""Random views of image batches (per-image draws), multi-crop and shifting transforms."""

from ssad.augment._multicrop import MultiCropTransform, dino_view_transforms
from ssad.augment._shifting import (
    SHIFTING_TRANSFORMS,
    PatchPermutationTransform,
    PixelShuffleTransform,
    RotationTransform,
    make_shifting_transform,
)
from ssad.augment._views import (
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Solarize,
    ViewTransform,
)

__all__ = [
    "SHIFTING_TRANSFORMS",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "MultiCropTransform",
    "PatchPermutationTransform",
    "PixelShuffleTransform",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RotationTransform",
    "Solarize",
    "ViewTransform",
    "dino_view_transforms",
    "make_shifting_transform",
]
