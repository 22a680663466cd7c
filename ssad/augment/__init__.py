"""Random views of image batches (per-image draws) and shifting transforms."""

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
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Solarize",
    "ViewTransform",
]
