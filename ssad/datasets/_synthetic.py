"""Synthetic image sets for tests, examples and documentation."""

from __future__ import annotations

import numbers

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.utils import check_random_state

from ._common import check_image_size, check_int

__all__ = ["make_anomaly_images", "make_local_defect_images", "make_shape_images"]

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


#: The kinds of images make_local_defect_images draws, and the defects it makes.
LOCAL_DEFECT_KINDS = ("texture", "object")
LOCAL_DEFECTS = ("blob", "scratch", "speckle")


def _textures(
    rng: np.random.RandomState, n: int, height: int, width: int, n_channels: int
) -> np.ndarray:
    """A woven-looking texture: an oriented grating over fine filtered noise, both varying."""
    yy, xx = _grid(height, width)
    angle = np.deg2rad(rng.uniform(25.0, 45.0, size=(n, 1, 1)))
    period = rng.uniform(4.5, 7.5, size=(n, 1, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1, 1))
    grating = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    grain = gaussian_filter(rng.normal(size=(n, height, width)), sigma=(0, 1.0, 1.0))
    grain /= grain.std(axis=(1, 2), keepdims=True) + 1e-12
    level = rng.uniform(0.42, 0.58, size=(n, 1, 1))
    contrast = rng.uniform(0.09, 0.15, size=(n, 1, 1))
    grey = level + contrast * grating + 0.05 * grain
    if n_channels == 1:
        return grey[..., None]
    tint = np.array([1.0, 0.85, 0.65]) + rng.uniform(-0.1, 0.1, size=(n, 1, 1, 3))
    return grey[..., None] * tint


def _objects(
    rng: np.random.RandomState, n: int, height: int, width: int, n_channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """A shaded washer (a ring) near the centre of a smooth background, and its mask."""
    yy, xx = _grid(height, width)
    side = min(height, width)
    background = _backgrounds(rng, n, height, width, n_channels)
    radius = rng.uniform(0.30, 0.34, size=(n, 1, 1)) * side
    cy = height / 2 + rng.uniform(-0.03, 0.03, size=(n, 1, 1)) * side
    cx = width / 2 + rng.uniform(-0.03, 0.03, size=(n, 1, 1)) * side
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    ring = (
        1.0 / (1.0 + np.exp(-(radius - dist) / 0.7)) / (1.0 + np.exp(-(dist - 0.4 * radius) / 0.7))
    )
    light = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    shade = (
        rng.uniform(0.6, 0.8, size=(n, 1, 1))
        + 0.12 * ((yy - cy) * np.sin(light) + (xx - cx) * np.cos(light)) / radius
    )
    tint = np.array([0.95, 0.95, 1.0]) + rng.uniform(-0.05, 0.05, size=(n, 1, 1, 3))
    colour = shade[..., None] * (tint if n_channels == 3 else 1.0)
    return background * (1 - ring[..., None]) + colour * ring[..., None], ring > 0.5


def _defect(
    rng: np.random.RandomState,
    image: np.ndarray,
    inside: np.ndarray | None,
    defect: str,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one small defect on ``image`` (H, W, C), its extent multiplied by ``scale``;
    returns the image and the defect's mask."""
    height, width = image.shape[:2]
    side = scale * min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if inside is not None:  # a centre on the object
        ys, xs = np.nonzero(inside)
        k = rng.randint(len(ys))
        cy, cx = ys[k] + rng.uniform(-0.5, 0.5), xs[k] + rng.uniform(-0.5, 0.5)
    else:
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
    # darker or brighter than the surface, by a moderate amount
    delta = np.where(rng.uniform() < 0.5, -1.0, 1.0) * rng.uniform(0.25, 0.35)
    if defect == "blob":  # a stain: the surface flattened to a darker or brighter tone
        r = rng.uniform(0.05, 0.09) * side
        dist = np.sqrt(((yy - cy) / rng.uniform(0.7, 1.0)) ** 2 + (xx - cx) ** 2)
        alpha = 1.0 / (1.0 + np.exp(-(r - dist) / 0.6))
        flat = image.mean(axis=(0, 1)) + 0.8 * delta
        mask = dist <= r
        return image * (1 - alpha[..., None]) + flat * alpha[..., None], mask
    elif defect == "scratch":
        length = rng.uniform(0.2, 0.35) * side
        # on a texture, across the weave (the grating runs at about 35 degrees)
        angle = np.deg2rad(rng.uniform(-10, 80) if inside is None else rng.uniform(0, 180))
        dy, dx = np.sin(angle), np.cos(angle)
        along = np.clip((yy - cy) * dy + (xx - cx) * dx, -length / 2, length / 2)
        across = np.sqrt((yy - cy - along * dy) ** 2 + (xx - cx - along * dx) ** 2)
        half = rng.uniform(0.6, 1.1)
        change = delta / (1.0 + np.exp(-(half - across) / 0.3))
        mask = across <= half + 0.5
    else:  # speckle: a cluster of dark and bright dots
        r = rng.uniform(0.06, 0.1) * side
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        dots = mask & (rng.uniform(size=mask.shape) < 0.5)
        change = dots * np.where(rng.uniform(size=mask.shape) < 0.5, -1.0, 1.0) * abs(delta)
    return image + change[..., None], mask


def make_local_defect_images(
    n_normal: int = 100,
    n_anomalous: int = 20,
    *,
    kind: str = "texture",
    image_size: int | tuple[int, int] = 64,
    n_channels: int = 3,
    random_state: int | np.random.RandomState | None = None,
    noise: float = 0.02,
    defect_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate images with small local defects and the defects' masks (MVTec-like, offline).

    Normal images vary from one to the next, like the defect-free images of
    an inspection data set; an anomalous image is a normal one with one
    small defect, which changes a few per cent of its pixels:

    - ``kind="texture"``: a woven-looking surface, an oriented grating
      (random phase and contrast, period 4.5-7.5 pixels, angle 25-45
      degrees) over fine filtered noise, with a random tint and brightness;
    - ``kind="object"``: a shaded washer (a ring) near the centre of a
      smooth background, at a slightly random place, size, shading and
      colour; defects lie on the ring.

    The defect of each anomalous image is drawn at random among
    ``"blob"`` (a stain: an elliptic spot, radius 5-9 % of the side, where the
    surface is flat and darker or brighter),
    ``"scratch"`` (a thin darker or brighter line, 20-35 % of the side long,
    across the weave of a texture) and ``"speckle"`` (a cluster of darker and
    brighter dots in a disc of radius 6-10 % of the side); ``defect_scale``
    multiplies these extents (a scratch keeps its width).  A defect changes
    the intensity by 0.25 to 0.35 (on the 0..1 scale).

    Parameters
    ----------
    n_normal : int, default=100
        Number of normal images, at least 1.
    n_anomalous : int, default=20
        Number of images with a defect, at least 0.
    kind : {"texture", "object"}, default="texture"
        What the images show.
    image_size : int or tuple of (int, int), default=64
        Image side, or ``(height, width)``; at least 16.
    n_channels : {1, 3}, default=3
        3 for RGB images, 1 for grey images (returned without a channel axis).
    random_state : int, RandomState instance or None, default=None
        Seeds the generator; global random generators are never seeded.
    noise : float, default=0.02
        Standard deviation of the Gaussian pixel noise (0..1 intensity scale).
    defect_scale : float, default=1.0
        Factor on the extent of the defects (their radius or length), in
        (0, 2]; 0.5 gives defects of about a quarter of the area.

    Returns
    -------
    X : ndarray of shape (n_normal + n_anomalous, H, W, 3) or (n_normal + n_anomalous, H, W)
        The images, dtype uint8: the normal ones first, then the anomalous ones.
    y : ndarray of shape (n_normal + n_anomalous,), dtype int64
        0 for a normal image, 1 for an image with a defect.
    masks : ndarray of shape (n_normal + n_anomalous, H, W), dtype uint8
        1 on the defect, 0 elsewhere (all 0 for normal images), as
        :func:`load_mvtec_ad` returns them.

    See Also
    --------
    load_mvtec_ad : The real images of the same task.
    make_anomaly_images : Whole-image anomalies.

    Examples
    --------
    >>> from ssad.datasets import make_local_defect_images
    >>> X, y, masks = make_local_defect_images(4, 2, random_state=0)
    >>> X.shape, y.tolist(), masks.shape
    ((6, 64, 64, 3), [0, 0, 0, 0, 1, 1], (6, 64, 64))
    >>> bool(masks[:4].any()), bool(masks[4:].any(axis=(1, 2)).all())
    (False, True)
    """
    func = "make_local_defect_images"
    n_normal = check_int(n_normal, "n_normal", func=func, low=1)
    n_anomalous = check_int(n_anomalous, "n_anomalous", func=func, low=0)
    if kind not in LOCAL_DEFECT_KINDS:
        raise ValueError(
            f"The 'kind' parameter of {func} must be a str among {set(LOCAL_DEFECT_KINDS)}. "
            f"Got {kind!r} instead."
        )
    height, width, n_channels, noise = _check_common(image_size, n_channels, noise, func=func)
    if not (isinstance(defect_scale, numbers.Real) and 0 < defect_scale <= 2):
        raise ValueError(
            f"The 'defect_scale' parameter of {func} must be a float in (0, 2]. "
            f"Got {defect_scale!r} instead."
        )
    if min(height, width) < 16:
        raise ValueError(
            f"The 'image_size' parameter of {func} must be an int >= 16 or a pair (height, "
            f"width) of ints >= 16. Got {image_size!r} instead."
        )
    rng = check_random_state(random_state)
    n = n_normal + n_anomalous
    if kind == "texture":
        images, inside = _textures(rng, n, height, width, n_channels), None
    else:
        images, inside = _objects(rng, n, height, width, n_channels)
    masks = np.zeros((n, height, width), dtype=np.uint8)
    for i in range(n_normal, n):
        defect = LOCAL_DEFECTS[rng.randint(len(LOCAL_DEFECTS))]
        on = None if inside is None else inside[i]
        images[i], mask = _defect(rng, images[i], on, defect, float(defect_scale))
        masks[i] = mask
    X = _finish(images, rng, noise)
    y = np.repeat(np.array([0, 1], dtype=np.int64), [n_normal, n_anomalous])
    return X, y, masks
