"""Natural-image patches that need no download: an auxiliary set for negatives."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images
from sklearn.utils import check_random_state

from ._common import check_int

__all__ = ["make_natural_patches"]


def make_natural_patches(
    n_samples: int = 1000,
    *,
    image_size: int = 32,
    grey: bool = False,
    min_scale: float = 0.05,
    random_state: Any = None,
) -> np.ndarray:
    """Random crops of scikit-learn's two sample photographs, resized to one size.

    An offline stand-in for the auxiliary natural images (ImageNet, Tiny
    Images) that self-supervised detectors turn into negatives: squares of a
    random side between ``sqrt(min_scale)`` and 1 times the shorter side of
    the photograph (a Chinese temple and a flower, 427 x 640 pixels each,
    shipped with scikit-learn), at random places, resized with antialiasing.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of patches.
    image_size : int, default=32
        Side of the square patches.
    grey : bool, default=False
        Convert to grey (ITU-R 601 luma), e.g. as negatives for grey data.
    min_scale : float in (0, 1], default=0.05
        Smallest crop area, as a share of the largest square.
    random_state : int, RandomState instance or None, default=None
        Draws the crops.

    Returns
    -------
    ndarray of shape (n_samples, image_size, image_size[, 3]), dtype uint8
        The patches.

    Examples
    --------
    >>> from ssad.datasets import make_natural_patches
    >>> make_natural_patches(4, image_size=16, grey=True, random_state=0).shape
    (4, 16, 16)
    """
    func = "make_natural_patches"
    n_samples = check_int(n_samples, "n_samples", func=func, low=1)
    image_size = check_int(image_size, "image_size", func=func, low=1)
    if not 0 < min_scale <= 1:
        raise ValueError(f"{func} needs min_scale in (0, 1]; got {min_scale}.")
    rng = check_random_state(random_state)
    photos = [Image.fromarray(np.asarray(im)) for im in load_sample_images().images]
    out = np.empty((n_samples, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n_samples):
        photo = photos[rng.randint(len(photos))]
        w, h = photo.size
        side = max(2, int(min(h, w) * np.sqrt(rng.uniform(min_scale, 1.0))))
        top, left = rng.randint(h - side + 1), rng.randint(w - side + 1)
        crop = photo.crop((left, top, left + side, top + side))
        out[i] = np.asarray(crop.resize((image_size, image_size), Image.Resampling.BILINEAR))
    if grey:
        luma = out.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)
    return out
