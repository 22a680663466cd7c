"""ssad.metrics: pixel AUROC and the per-region overlap (PRO) of anomaly maps."""

import doctest

import numpy as np
import pytest
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

import ssad.metrics
from ssad.metrics import pixel_roc_auc_score, pro_curve, pro_score


def _brute_pro(masks, maps, max_fpr):
    """PRO by its definition: every threshold, every region, then a fine trapezoid."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        xs.append((pred & (masks == 0)).sum() / (masks == 0).sum())
        ys.append(np.mean([pred[i][r].mean() for i, r in regions]))
    grid = np.linspace(0, max_fpr, 200001)
    return np.trapezoid(np.interp(grid, xs, ys), grid) / max_fpr


@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_pro_score_matches_the_definition(max_fpr):
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 20, 20), dtype=np.uint8)
    masks[0, 2:6, 3:9] = 1
    masks[1, 10:12, 10:18] = 1
    masks[1, 0:2, 0:2] = 1  # two regions of very different sizes count alike
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    maps = np.round(maps, 1)  # ties switch together
    assert pro_score(masks, maps, max_fpr=max_fpr) == pytest.approx(
        _brute_pro(masks, maps, max_fpr), abs=1e-5
    )


def test_pro_curve_and_extremes():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[1, 2:4, 2:4] = True
    fpr, pro, thresholds = pro_curve(masks, masks * 2.0)
    assert fpr[0] == pro[0] == 0.0 and thresholds[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0) and fpr[-1] == pro[-1] == 1.0
    assert pro_score(masks, masks * 1.0) == 1.0
    assert pro_score(masks, -1.0 * masks) == 0.0
    assert pixel_roc_auc_score(masks, masks * 1.0) == 1.0
    # a single 2-D image is one image
    assert pixel_roc_auc_score(masks[1], masks[1] * 1.0) == 1.0


def test_pixel_auroc_is_sklearn_on_pixels():
    rng = np.random.default_rng(1)
    masks = rng.uniform(size=(4, 6, 6)) < 0.2
    maps = rng.normal(size=(4, 6, 6)) + masks
    assert pixel_roc_auc_score(masks, maps) == roc_auc_score(masks.ravel(), maps.ravel())


def test_errors():
    masks = np.zeros((2, 4, 4))
    masks[0, 0, 0] = 1
    with pytest.raises(ValueError, match="one shape"):
        pro_score(masks, np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="every pixel of the masks is normal"):
        pixel_roc_auc_score(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        pro_score(masks, np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="'max_fpr' parameter"):
        pro_score(masks, np.zeros((2, 4, 4)), max_fpr=0.0)


def test_docstring_examples():
    assert doctest.testmod(ssad.metrics).failed == 0
