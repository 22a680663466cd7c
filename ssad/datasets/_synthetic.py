"""Synthetic image sets for tests, examples and documentation."""

from __future__ import annotations

import numbers

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils import check_random_state

from ._common import check_image_size, check_int

__all__ = ["make_anomaly_images", "make_shape_images"]

#: The shapes drawn by make_shape_images, in label order.
SHAPE_NAMES = ("disc", "square", "triangle", "cross", "ring", "diamond")

_MIN_SIZE = 8


def _check_common(
    image_size: object, n_channels: object, noise: object, *, func: str
) -> tuple[int, int, int, float]:
    size = check_image_size(image_size, func=func)
    if size is None or min(size) < _MIN_SIZE:
        raise ValueError(
            f"The 'image_size' parameter of {func} must be an int >= {_MIN_SIZE} or a pair "
            f"(height, width) of ints >= {_MIN_SIZE}. Got {image_size!r} instead."
        )
    if n_channels not in (1, 3) or isinstance(n_channels, bool):
        raise ValueError(
            f"The 'n_channels' parameter of {func} must be an int among {{1, 3}}. "
            f"Got {n_channels!r} instead."
        )
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0 <= float(noise) <= 1:
        raise ValueError(
            f"The 'noise' parameter of {func} must be a float in the range [0, 1]. "
            f"Got {noise!r} instead."
        )
    return size[0], size[1], int(n_channels), float(noise)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return yy[None], xx[None]  # (1, H, W) each, broadcast over images


def _backgrounds(
    rng: np.random.RandomState, n: int, height: int, width: int, n_channels: int
) -> np.ndarray:
    """Smooth backgrounds, brighter at the top (so the images have an upright side)."""
    yy, _ = _grid(height, width)
    base = 0.3 + rng.uniform(-0.05, 0.05, size=(n, 1, 1, 1))
    tint = rng.uniform(-0.03, 0.03, size=(n, 1, 1, n_channels))
    slope = rng.uniform(0.1, 0.2, size=(n, 1, 1, 1))
    gradient = slope * (0.5 - yy[..., None] / max(height - 1, 1))
    return base + tint + gradient


def _object_colours(rng: np.random.RandomState, n: int, n_channels: int) -> np.ndarray:
    """Bright, warm object colours (a single bright level for grey images)."""
    if n_channels == 1:
        return rng.uniform(0.75, 0.9, size=(n, 1, 1, 1))
    warm = np.array([0.9, 0.6, 0.25])
    return (warm + rng.uniform(-0.06, 0.06, size=(n, 3)))[:, None, None, :]


def _shape_mask(shape: int, dy: np.ndarray, dx: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Hard mask of shape number ``shape`` (see SHAPE_NAMES), centred at dy = dx = 0."""
    ady, adx = np.abs(dy), np.abs(dx)
    if shape == 0:  # disc
        return dy**2 + dx**2 <= s**2
    if shape == 1:  # square
        return np.maximum(adx, ady) <= 0.85 * s
    if shape == 2:  # triangle, apex up
        return (dy >= -s) & (dy <= s) & (adx <= (dy + s) / 2)
    if shape == 3:  # cross
        return ((adx <= s / 3) & (ady <= s)) | ((ady <= s / 3) & (adx <= s))
    if shape == 4:  # ring
        dist2 = dy**2 + dx**2
        return (dist2 <= s**2) & (dist2 >= (0.55 * s) ** 2)
    return adx + ady <= s  # diamond


def _finish(images: np.ndarray, rng: np.random.RandomState, noise: float) -> np.ndarray:
    if noise > 0:
        images = images + rng.normal(0.0, noise, size=images.shape)
    out = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def make_anomaly_images(
    n_normal: int = 100,
    n_anomalous: int = 20,
    image_size: int | tuple[int, int] = 32,
    n_channels: int = 3,
    random_state: int | np.random.RandomState | None = None,
    *,
    noise: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate normal images sharing one structure, and clearly different anomalies.

    A normal image is a smooth background, brighter at the top, with one soft-edged
    warm-coloured disc of random radius at a random position, plus mild Gaussian
    noise. An anomalous image has the same kind of background, but instead of the
    disc a square patch of high-frequency texture: stripes at a random angle (period
    2 to 4 pixels) or a checkerboard (cells of 1 to 3 pixels).

    Parameters
    ----------
    n_normal : int, default=100
        Number of normal images, at least 1.
    n_anomalous : int, default=20
        Number of anomalous images, at least 0.
    image_size : int or tuple of (int, int), default=32
        Image side, or ``(height, width)``; at least 8.
    n_channels : {1, 3}, default=3
        3 for RGB images, 1 for grey images (returned without a channel axis).
    random_state : int, RandomState instance or None, default=None
        Seeds the generator; pass an int for the same images at every call. Global
        random generators are never seeded.
    noise : float, default=0.02
        Standard deviation of the Gaussian pixel noise, on the 0..1 intensity scale.

    Returns
    -------
    X : ndarray of shape (n_normal + n_anomalous, H, W, 3) or (n_normal + n_anomalous, H, W)
        The images, dtype uint8: the normal ones first, then the anomalies.
    y : ndarray of shape (n_normal + n_anomalous,), dtype int64
        0 for a normal image, 1 for an anomaly.

    See Also
    --------
    make_shape_images : Several classes of shapes, for one-class protocols.

    Examples
    --------
    >>> from ssad.datasets import make_anomaly_images
    >>> X, y = make_anomaly_images(n_normal=10, n_anomalous=2, random_state=0)
    >>> X.shape, X.dtype, y.tolist()
    ((12, 32, 32, 3), dtype('uint8'), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    >>> make_anomaly_images(5, 1, image_size=16, n_channels=1, random_state=0)[0].shape
    (6, 16, 16)
    """
    func = "make_anomaly_images"
    n_normal = check_int(n_normal, "n_normal", func=func, low=1)
    n_anomalous = check_int(n_anomalous, "n_anomalous", func=func, low=0)
    height, width, n_channels, noise = _check_common(image_size, n_channels, noise, func=func)
    rng = check_random_state(random_state)
    yy, xx = _grid(height, width)
    side = min(height, width)

    # Normal images: a soft disc on the background.
    background = _backgrounds(rng, n_normal, height, width, n_channels)
    colour = _object_colours(rng, n_normal, n_channels)
    radius = rng.uniform(0.15, 0.25, size=(n_normal, 1, 1)) * side
    cy = rng.uniform(radius[:, 0, 0] + 1, height - 1 - radius[:, 0, 0])[:, None, None]
    cx = rng.uniform(radius[:, 0, 0] + 1, width - 1 - radius[:, 0, 0])[:, None, None]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    disc = (1.0 / (1.0 + np.exp(-(radius - dist) / 0.8)))[..., None]
    normal = background * (1 - disc) + colour * disc

    # Anomalies: a square patch of stripes or checkerboard on the background.
    background = _backgrounds(rng, n_anomalous, height, width, n_channels)
    colour = _object_colours(rng, n_anomalous, n_channels)
    half = np.floor(rng.uniform(0.2, 0.28, size=(n_anomalous, 1, 1)) * side)
    py = rng.uniform(half[:, 0, 0], height - half[:, 0, 0])[:, None, None]
    px = rng.uniform(half[:, 0, 0], width - half[:, 0, 0])[:, None, None]
    inside = ((np.abs(yy - py) <= half) & (np.abs(xx - px) <= half))[..., None]
    angle = rng.uniform(0, np.pi, size=(n_anomalous, 1, 1))
    period = rng.randint(2, 5, size=(n_anomalous, 1, 1))
    phase = xx * np.cos(angle) + yy * np.sin(angle)
    stripes = np.floor(2 * phase / period) % 2
    cell = rng.randint(1, 4, size=(n_anomalous, 1, 1))
    checker = (np.floor(yy / cell) + np.floor(xx / cell)) % 2
    use_stripes = rng.uniform(size=(n_anomalous, 1, 1)) < 0.5
    texture = np.where(use_stripes, stripes, checker)[..., None]
    patch = colour * texture + 0.05 * (1 - texture)
    anomalous = np.where(inside, patch, background)

    X = _finish(np.concatenate([normal, anomalous]), rng, noise)
    y = np.repeat(np.array([0, 1], dtype=np.int64), [n_normal, n_anomalous])
    return X, y


def make_shape_images(
    n_samples: int = 200,
    n_classes: int = 4,
    image_size: int | tuple[int, int] = 32,
    n_channels: int = 3,
    random_state: int | np.random.RandomState | None = None,
    *,
    noise: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate images of simple shapes, one class per shape.

    Each image holds one upright shape of random size, position and colour, with soft
    edges, on a smooth background brighter at the top, plus mild Gaussian noise. The
    class is the shape: 0 disc, 1 square, 2 triangle (apex up), 3 cross, 4 ring,
    5 diamond. Classes are balanced (they differ by at most one image) and shuffled.
    Use it for the one-class protocol (fit on one shape, the other shapes are the
    anomalies) without files.

    Parameters
    ----------
    n_samples : int, default=200
        Number of images, at least 1.
    n_classes : int, default=4
        Number of shapes (classes), from 2 to 6, taken in the order above.
    image_size : int or tuple of (int, int), default=32
        Image side, or ``(height, width)``; at least 8.
    n_channels : {1, 3}, default=3
        3 for RGB images, 1 for grey images (returned without a channel axis).
    random_state : int, RandomState instance or None, default=None
        Seeds the generator; pass an int for the same images at every call. Global
        random generators are never seeded.
    noise : float, default=0.02
        Standard deviation of the Gaussian pixel noise, on the 0..1 intensity scale.

    Returns
    -------
    X : ndarray of shape (n_samples, H, W, 3) or (n_samples, H, W), dtype uint8
        The images.
    y : ndarray of shape (n_samples,), dtype int64
        The shape of each image, 0..n_classes-1.

    See Also
    --------
    make_anomaly_images : Normal images and anomalies, labelled 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.datasets import make_shape_images
    >>> X, y = make_shape_images(n_samples=12, n_classes=3, random_state=0)
    >>> X.shape, np.bincount(y).tolist()
    ((12, 32, 32, 3), [4, 4, 4])
    """
    func = "make_shape_images"
    n_samples = check_int(n_samples, "n_samples", func=func, low=1)
    n_classes = check_int(n_classes, "n_classes", func=func, low=2)
    if n_classes > len(SHAPE_NAMES):
        raise ValueError(
            f"The 'n_classes' parameter of {func} must be an int in the range "
            f"[2, {len(SHAPE_NAMES)}]. Got {n_classes!r} instead."
        )
    height, width, n_channels, noise = _check_common(image_size, n_channels, noise, func=func)
    rng = check_random_state(random_state)
    yy, xx = _grid(height, width)
    side = min(height, width)

    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    background = _backgrounds(rng, n_samples, height, width, n_channels)
    if n_channels == 1:
        colour = rng.uniform(0.7, 0.95, size=(n_samples, 1, 1, 1))
    else:
        colour = rng.uniform(0.5, 1.0, size=(n_samples, 1, 1, 3))
        colour[np.arange(n_samples), 0, 0, rng.randint(0, 3, size=n_samples)] = 1.0
    s = rng.uniform(0.22, 0.32, size=(n_samples, 1, 1)) * side
    cy = rng.uniform(s[:, 0, 0] + 1, height - 1 - s[:, 0, 0])[:, None, None]
    cx = rng.uniform(s[:, 0, 0] + 1, width - 1 - s[:, 0, 0])[:, None, None]
    mask = np.empty((n_samples, height, width))
    for k in range(n_classes):
        of_k = y == k
        mask[of_k] = _shape_mask(k, yy - cy[of_k], xx - cx[of_k], s[of_k])
    mask = gaussian_filter(mask, sigma=(0, 0.6, 0.6), mode="nearest")[..., None]
    X = _finish(background * (1 - mask) + colour * mask, rng, noise)
    return X, y
