"""Reading image files with Pillow into one uint8 array (shared by the folder readers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__: list[str] = []

# Pillow >= 9.1 has Image.Resampling; its top-level constants warn on 9.1-9.5.
_RESAMPLING = getattr(Image, "Resampling", Image)
BILINEAR = _RESAMPLING.BILINEAR
NEAREST = _RESAMPLING.NEAREST

#: File name endings read as images by default (compared case-insensitively).
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)

#: Pillow modes read as one grey channel; every other mode is converted to RGB.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"})


def probe_images(paths: Sequence[Path]) -> list[tuple[str, tuple[int, int]]]:
    """Return the Pillow mode and ``(height, width)`` of each file, reading headers only."""
    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                out.append((img.mode, (img.height, img.width)))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"Could not read '{path}' as an image: {exc}") from exc
    return out


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


def _to_array(img: Image.Image, grey: bool) -> np.ndarray:
    if grey:
        if img.mode not in ("L", "1", "LA"):
            arr = np.asarray(img)
            if arr.dtype != np.uint8:
                # 16-bit or float grey: scale the file's own range to 0..255.
                arr = arr.astype(np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.asarray(img.convert("L"), dtype=np.uint8)
    if img.mode in GREY_MODES and img.mode not in ("L", "1", "LA"):
        img = Image.fromarray(_to_array(img, grey=True))
    if img.mode in ("RGBA", "LA", "PA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


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
        try:
            with Image.open(path) as img:
                arr = _to_array(img, grey)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"Could not read '{path}' as an image: {exc}") from exc
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
