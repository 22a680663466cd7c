"""Reading image files with Pillow into one uint8 array (shared by the folder readers).

Files are decoded by :func:`ssad._images.read_image_file`, the reader the image
adapter uses too, so a file gives the same pixels whether it is loaded here or
passed to an estimator as a path: 16-bit files are scaled by 65535, float files
must hold values in ``[0, 1]``, and transparent pixels are composited on white.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ssad._images import (
    GREY_MODES,
    IMAGE_EXTENSIONS,
    luma,
    probe_image,
    read_image_file,
    read_mask_file,
)

__all__ = ["IMAGE_EXTENSIONS"]

# Pillow >= 9.1 has Image.Resampling; its top-level constants warn on 9.1-9.5.
_RESAMPLING = getattr(Image, "Resampling", Image)
BILINEAR = _RESAMPLING.BILINEAR
NEAREST = _RESAMPLING.NEAREST


def probe_images(paths: Sequence[Path]) -> list[tuple[str, tuple[int, int]]]:
    """Return the Pillow mode and ``(height, width)`` of each file, reading headers only."""
    return [probe_image(path) for path in paths]


def all_grey(infos: Sequence[tuple[str, tuple[int, int]]]) -> bool:
    """Whether every probed image is grey (so the stack is ``(n, H, W)``)."""
    return all(mode in GREY_MODES for mode, _ in infos)


def common_size(
    paths: Sequence[Path], infos: Sequence[tuple[str, tuple[int, int]]], *, func: str
) -> tuple[int, int]:
    """Return the size all images share, or tell the user to pass ``image_size``."""
    first_size = infos[0][1]
    for path, (_, size) in zip(paths, infos):
        if size != first_size:
            raise ValueError(
                f"The images differ in size: '{paths[0]}' is {first_size[0]}x{first_size[1]} "
                f"(height x width) but '{path}' is {size[0]}x{size[1]}. Pass image_size "
                f"(an int or a (height, width) pair) to {func} to resize them all."
            )
    return first_size


def _to_uint8(pixels: np.ndarray, grey: bool) -> np.ndarray:
    """Float pixels in [0, 1] from ``read_image_file`` -> uint8 grey ``(H, W)`` or RGB."""
    if grey and pixels.ndim == 3:
        pixels = luma(pixels)
    elif not grey and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.rint(pixels * np.float32(255.0)).astype(np.uint8)


def read_images(
    paths: Sequence[Path],
    *,
    grey: bool,
    size: tuple[int, int],
    resample: int = BILINEAR,
    resize: bool = True,
) -> np.ndarray:
    """Load ``paths`` into one uint8 array of shape ``(n, *size)`` or ``(n, *size, 3)``.

    Images whose size differs from ``size`` are resized with ``resample`` when
    ``resize`` is true (the caller checked sizes beforehand otherwise).
    """
    height, width = size
    shape = (len(paths), height, width) if grey else (len(paths), height, width, 3)
    out = np.empty(shape, dtype=np.uint8)
    for i, path in enumerate(paths):
        arr = _to_uint8(read_image_file(path), grey)
        if arr.shape[:2] != (height, width):
            if not resize:
                raise ValueError(
                    f"'{path}' is {arr.shape[0]}x{arr.shape[1]} (height x width); "
                    f"expected {height}x{width}."
                )
            # Resize after the conversion to 8-bit L/RGB, which every filter supports.
            arr = np.asarray(Image.fromarray(arr).resize((width, height), resample=resample))
        out[i] = arr
    return out


def read_masks(
    images: Sequence[Path],
    masks: Sequence[Path | None],
    image_infos: Sequence[tuple[str, tuple[int, int]]],
    size: tuple[int, int],
) -> np.ndarray:
    """Binary masks ``(n, *size)`` uint8 of ``images``: 1 where a mask file is nonzero
    (:func:`ssad._images.read_mask_file`: any channel, any bit depth, transparent
    pixels excluded), all 0 where it is None; a mask must have its image's size
    (``image_infos``)."""
    out = np.zeros((len(images), *size), dtype=np.uint8)
    for i, (image, mask, (_, image_hw)) in enumerate(zip(images, masks, image_infos)):
        if mask is None:
            continue
        ((_, mask_hw),) = probe_images([mask])
        if mask_hw != image_hw:
            raise ValueError(
                f"The mask '{mask}' is {mask_hw[0]}x{mask_hw[1]} (height x width) but its "
                f"image '{image}' is {image_hw[0]}x{image_hw[1]}."
            )
        defect = read_mask_file(mask)
        if defect.shape != size:
            resized = Image.fromarray(defect.astype(np.uint8) * 255).resize(
                (size[1], size[0]), resample=NEAREST
            )
            defect = np.asarray(resized) > 0
        out[i] = defect
    return out
