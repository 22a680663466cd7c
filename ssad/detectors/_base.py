"""What the deep image detectors share on top of :class:`ssad.base.BaseDetector`."""

from __future__ import annotations

import numbers
import os
from typing import Any

from sklearn.utils._param_validation import Interval, StrOptions

from ssad._images import ImageSet, check_images
from ssad._persistence import TorchStateMixin
from ssad.base import DEVICE_CONSTRAINT, BaseDetector
from ssad.features._timm import PRECISIONS

__all__ = ["ImageDetector"]


class ImageDetector(TorchStateMixin, BaseDetector):
    """A :class:`~ssad.base.BaseDetector` whose input is images, not 2-D arrays.

    ``_fit`` and ``_score_samples`` receive an :class:`ssad._images.ImageSet`;
    fitted torch modules pickle as state dicts (``_build_modules``).  The
    parameters every deep detector shares (backbone, weights, input size,
    device, precision, seed, verbosity) are validated here.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "backbone": [str],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "image_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "device": DEVICE_CONSTRAINT,
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _validate_input(self, X: Any, *, reset: bool) -> ImageSet:
        return check_images(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
