"""What the deep image detectors share on top of :class:`ssad.base.BaseDetector`."""

from __future__ import annotations

from typing import Any

from ssad._images import ImageSet, check_images
from ssad._persistence import TorchStateMixin
from ssad.base import BaseDetector

__all__ = ["ImageDetector"]


class ImageDetector(TorchStateMixin, BaseDetector):
    """A :class:`~ssad.base.BaseDetector` whose input is images, not 2-D arrays.

    ``_fit`` and ``_score_samples`` receive an :class:`ssad._images.ImageSet`;
    fitted torch modules pickle as state dicts (``_build_modules``).
    """

    def _validate_input(self, X: Any, *, reset: bool) -> ImageSet:
        return check_images(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
