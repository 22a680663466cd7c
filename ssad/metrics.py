"""Pixel-level measures of anomaly maps against ground-truth masks (the MVTec AD protocol).

Both functions take the masks first, as scikit-learn's metrics take
``y_true`` first, and anomaly maps oriented like
:meth:`~ssad.PatchCoreDetector.anomaly_map`: higher = more anomalous.

=================================  ============================================
:func:`pixel_roc_auc_score`        AUROC over every pixel of every image
:func:`pro_curve`                  per-region overlap against false positive rate
:func:`pro_score`                  normalised area under that curve up to an FPR
=================================  ============================================
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

__all__ = ["pixel_roc_auc_score", "pro_curve", "pro_score"]


def _check_maps(masks: Any, anomaly_maps: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    maps = np.asarray(anomaly_maps, dtype=np.float64)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None] if maps.ndim == 2 else maps
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(
            f"{func} expects masks and anomaly maps of one shape (n_images, height, width); "
            f"got {masks.shape} and {maps.shape}."
        )
    if not np.isfinite(maps).all():
        raise ValueError(f"{func}: the anomaly maps hold NaN or infinite values.")
    masks = masks > 0
    if masks.all() or not masks.any():
        kind = "anomalous" if masks.all() else "normal"
        raise ValueError(
            f"{func} needs both normal and anomalous pixels; every pixel of the masks is {kind}."
        )
    return masks, maps


def pixel_roc_auc_score(masks: Any, anomaly_maps: Any) -> float:
    """Pixel AUROC: every pixel of every image is a sample, anomalous where its mask is set.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width)
        Ground truth: nonzero on defects (all zero for normal images).
    anomaly_maps : array-like of shape (n_images, height, width)
        Higher = more anomalous.

    Returns
    -------
    float
        ``roc_auc_score(masks.ravel() > 0, anomaly_maps.ravel())``.

    Raises
    ------
    ValueError
        If the shapes differ, a map is not finite, or the masks hold only
        normal or only anomalous pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.metrics import pixel_roc_auc_score
    >>> masks = np.zeros((2, 4, 4)); masks[1, :2, :2] = 1
    >>> maps = np.zeros((2, 4, 4)); maps[1, :2, :3] = 1.0
    >>> round(pixel_roc_auc_score(masks, maps), 3)
    0.964
    """
    masks, maps = _check_maps(masks, anomaly_maps, "pixel_roc_auc_score")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pro_curve(masks: Any, anomaly_maps: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) against the false positive rate, at every threshold.

    The ground-truth regions are the connected components (8-connectivity) of
    each mask.  At a threshold ``t`` the pixels whose map value is at least
    ``t`` are predicted anomalous; the PRO is the mean, over all regions of
    all images, of the share of the region's pixels predicted anomalous, and
    the false positive rate the share of normal pixels (over all images)
    predicted anomalous.  Pixels with equal values switch together.

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width)
        Ground truth: nonzero on defects.
    anomaly_maps : array-like of shape (n_images, height, width)
        Higher = more anomalous.

    Returns
    -------
    fpr : ndarray of shape (n_thresholds + 1,)
        False positive rates, increasing from 0 to 1.
    pro : ndarray of shape (n_thresholds + 1,)
        Per-region overlaps, increasing from 0 to 1.
    thresholds : ndarray of shape (n_thresholds + 1,)
        Decreasing thresholds; the first is ``inf`` (nothing predicted).

    Raises
    ------
    ValueError
        As :func:`pixel_roc_auc_score`.

    See Also
    --------
    pro_score : The normalised area under the curve.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.metrics import pro_curve
    >>> masks = np.zeros((1, 4, 4)); masks[0, 0, 0] = masks[0, 3, 3] = 1
    >>> maps = np.zeros((1, 4, 4)); maps[0, 0, 0] = 2.0; maps[0, 3, 3] = 1.0
    >>> fpr, pro, thresholds = pro_curve(masks, maps)
    >>> fpr.tolist(), pro.tolist()
    ([0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    masks, maps = _check_maps(masks, anomaly_maps, "pro_curve")
    # each pixel's contribution when it switches to "anomalous": 1 / (its region's size)
    # to the summed overlaps, or 1 to the false positives
    region_share = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i, mask in enumerate(masks):
        regions, n = label(mask, structure=np.ones((3, 3), dtype=int))
        if n:
            sizes = np.bincount(regions.ravel())
            region_share[i] = np.where(regions > 0, 1.0 / sizes[regions], 0.0)
            n_regions += n
    values = maps.ravel()
    order = np.argsort(-values, kind="stable")
    values = values[order]
    pro = np.cumsum(region_share.ravel()[order]) / n_regions
    fpr = np.cumsum(~masks.ravel()[order]) / np.count_nonzero(~masks)
    last = np.r_[values[1:] != values[:-1], True]  # the end of each run of equal values
    return (
        np.r_[0.0, np.clip(fpr[last], 0.0, 1.0)],
        np.r_[0.0, np.clip(pro[last], 0.0, 1.0)],
        np.r_[np.inf, values[last]],
    )


def pro_score(masks: Any, anomaly_maps: Any, *, max_fpr: float = 0.3) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (the MVTec AD PRO).

    The curve of :func:`pro_curve` is integrated with the trapezoidal rule
    from a false positive rate of 0 to ``max_fpr`` (linearly interpolated
    there) and normalised, so that a perfect map scores 1 (Bergmann et al.:
    ``max_fpr=0.3``).

    Parameters
    ----------
    masks : array-like of shape (n_images, height, width)
        Ground truth: nonzero on defects.
    anomaly_maps : array-like of shape (n_images, height, width)
        Higher = more anomalous.
    max_fpr : float in (0, 1], default=0.3
        Upper limit of the integration.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    ValueError
        As :func:`pixel_roc_auc_score`, or if ``max_fpr`` is not in (0, 1].

    References
    ----------
    .. [1] P. Bergmann, K. Batzner, M. Fauser, D. Sattlegger and C. Steger,
       "The MVTec Anomaly Detection Dataset: A Comprehensive Real-World
       Dataset for Unsupervised Anomaly Detection", IJCV 129, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.metrics import pro_score
    >>> masks = np.zeros((2, 8, 8)); masks[1, 2:4, 2:4] = 1
    >>> pro_score(masks, masks.astype(float))
    1.0
    >>> round(pro_score(masks, np.zeros((2, 8, 8))), 3)  # a constant map: chance
    0.15
    """
    if (
        isinstance(max_fpr, bool)
        or not isinstance(max_fpr, numbers.Real)
        or not 0.0 < float(max_fpr) <= 1.0
    ):
        raise ValueError(
            f"The 'max_fpr' parameter of pro_score must be a float in (0, 1]. "
            f"Got {max_fpr!r} instead."
        )
    fpr, pro, _ = pro_curve(masks, anomaly_maps)
    # the curve up to max_fpr, ending exactly there (interpolated)
    end = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, y = fpr[:end], pro[:end]
    if end < len(fpr) and x[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        x = np.r_[x, max_fpr]
        y = np.r_[y, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return min(1.0, area / float(max_fpr))
