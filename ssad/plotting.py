"""Plots of scores, embeddings and anomaly maps: histograms, ROC curves, 2-D maps, overlays.

matplotlib is optional (``pip install ssad[plot]``); it is imported when a
function is called, never by ``import ssad``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ssad.thresholds import _is_anomaly

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_anomaly_map",
    "plot_anomaly_maps",
    "plot_embedding",
    "plot_roc_curves",
    "plot_score_histogram",
]

_INSTALL = "pip install ssad[plot]"


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"Plotting needs the optional dependency matplotlib: {_INSTALL} "
            "(or pip install matplotlib)."
        ) from exc
    return plt


def _new_figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A new figure that pyplot does not manage (for writing files), and its axes."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"Plotting needs the optional dependency matplotlib: {_INSTALL} "
            "(or pip install matplotlib)."
        ) from exc
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _curves(results: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, is_anomaly, score_samples) for each curve."""
    if hasattr(results, "estimator") and hasattr(results, "baselines"):
        results = results.estimator  # an EvaluationResult: the estimator's splits
    if hasattr(results, "splits"):
        return [(s.name, s.is_anomaly, s.scores) for s in results.splits]
    if isinstance(results, Mapping):
        items = list(results.items())
    elif isinstance(results, tuple) and len(results) == 2 and np.ndim(results[0]) == 1:
        items = [("", results)]
    elif isinstance(results, Sequence):
        items = [(f"split {i}", pair) for i, pair in enumerate(results)]
    else:
        raise TypeError(
            "results must be an EvaluationResult, a ModelResult, a (is_anomaly, scores) pair, "
            f"or a list or dict of such pairs; got {type(results).__name__}."
        )
    out = []
    for label, pair in items:
        y, scores = pair
        scores = np.asarray(scores, dtype=np.float64)
        y = _is_anomaly(y, scores.shape[0], name="is_anomaly", of="scores")
        out.append((str(label), y, scores))
    return out


def plot_roc_curves(
    results: Any,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """ROC curves, one per split, with anomalies as the positive class.

    Parameters
    ----------
    results : EvaluationResult, ModelResult, pair, or list or dict of pairs
        An :class:`~ssad.benchmarks.EvaluationResult` (its estimator's
        splits), a :class:`~ssad.benchmarks.ModelResult` (its splits), or
        ``(is_anomaly, score_samples)`` pairs: boolean labels (True =
        anomaly) and scores with *higher = more normal*, as
        ``score_samples`` returns; a dict maps curve labels to pairs.
    ax : matplotlib Axes, default=None
        Where to draw; default: a new pyplot figure.
    title : str, default=None
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install ssad[plot]``).

    See Also
    --------
    sklearn.metrics.RocCurveDisplay : One curve, from labels and scores.

    Notes
    -----
    Each curve is drawn by
    ``RocCurveDisplay.from_predictions(is_anomaly, -scores)``; the legend
    gives its AUROC, ``roc_auc_score(is_anomaly, -scores)``, the number the
    benchmark tables report.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.plotting import plot_roc_curves
    >>> y = np.array([False, False, True, True])
    >>> ax = plot_roc_curves({"toy": (y, np.array([2.0, 1.5, 1.0, 0.0]))})  # doctest: +SKIP
    """
    from sklearn.metrics import RocCurveDisplay

    curves = _curves(results)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(5.5, 5.0))
    for i, (label, y, scores) in enumerate(curves):
        display = RocCurveDisplay.from_predictions(
            y,
            -scores,  # anomalies positive: the lower the score, the more anomalous
            pos_label=True,
            name=label or None,
            ax=ax,
            plot_chance_level=i == 0,
            chance_level_kw={"label": "_nolegend_", "color": "grey", "lw": 0.8},
        )
        auroc = 100 * float(display.roc_auc)
        display.line_.set_label(f"{label} (AUROC {auroc:.1f})" if label else f"AUROC {auroc:.1f}")
    ax.set_xlabel("false positive rate (normal images flagged)")
    ax.set_ylabel("true positive rate (anomalies found)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small" if len(curves) <= 10 else "x-small")
    return ax


def plot_score_histogram(
    scores: Any,
    is_anomaly: Any = None,
    *,
    threshold: float | None = None,
    bins: int | str = "auto",
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Histograms of the scores of normal and anomalous images, with the threshold.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        ``score_samples`` of the images: higher = more normal.
    is_anomaly : array-like of shape (n_samples,), default=None
        True (or 1) for an anomaly: the anomalies get their own histogram.
        Without it, one histogram of all scores.
    threshold : float, default=None
        A vertical line at this score, e.g. the detector's ``offset_``
        (``det[-1].offset_`` for a pipeline): images to its left are flagged.
    bins : int or str, default="auto"
        Bins shared by both histograms (:func:`numpy.histogram_bin_edges`).
    ax : matplotlib Axes, default=None
        Where to draw; default: a new pyplot figure.
    title : str, default=None
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install ssad[plot]``).
    ValueError
        If ``scores`` is not 1-D and finite, or ``is_anomaly`` has another length.

    See Also
    --------
    ssad.set_threshold : Move the threshold to a target false-positive rate.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.plotting import plot_score_histogram
    >>> scores = np.r_[np.random.default_rng(0).normal(0, 1, 90), [-6.0, -5.0, -4.5]]
    >>> ax = plot_score_histogram(scores, scores < -4, threshold=-2.0)  # doctest: +SKIP
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(
            f"scores must be a non-empty 1-D array of finite numbers; got shape {scores.shape}."
        )
    if is_anomaly is None:
        groups = [("images", scores)]
    else:
        y = _is_anomaly(is_anomaly, scores.size, name="is_anomaly", of="scores")
        groups = [("normal", scores[~y]), ("anomalous", scores[y])]
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.0, 4.0))
    edges = np.histogram_bin_edges(scores, bins=bins).tolist()  # the same bins for each group
    for (name, values), colour in zip(groups, ("tab:blue", "tab:red")):
        if values.size:
            ax.hist(values, bins=edges, alpha=0.6, color=colour, label=f"{name} ({values.size})")
    if threshold is not None:
        ax.axvline(float(threshold), color="black", ls="--", lw=1.2, label="threshold")
    ax.set_xlabel("score (higher = more normal)")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_embedding(
    Z: np.ndarray,
    labels: np.ndarray,
    method: str = "tsne",
    *,
    n_pca: int = 50,
    perplexity: float = 30.0,
    label_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    random_state: int | None = None,
    title: str | None = None,
) -> Axes:
    """Scatter plot of embeddings in 2-D, coloured by label.

    As in the Gasoyan thesis: PCA to ``n_pca`` dimensions, then t-SNE to 2.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
        Embeddings (or flattened images).
    labels : array-like of shape (n_samples,)
        Integer labels, e.g. classes or ``is_anomaly``.
    method : {"tsne", "pca"}, default="tsne"
        ``"tsne"``: PCA to ``min(n_pca, n_features, n_samples)`` dimensions,
        then :class:`sklearn.manifold.TSNE`; ``"pca"``: the first two principal
        components only.
    n_pca : int, default=50
        Dimensions kept by the PCA before t-SNE.
    perplexity : float, default=30.0
        t-SNE perplexity; lowered to ``(n_samples - 1) / 3`` for tiny sets.
    label_names : sequence of str, default=None
        Legend entries, indexed by label.
    ax : matplotlib Axes, default=None
        Where to draw; default: a new pyplot figure.
    random_state : int, default=None
        Seeds the PCA solver and t-SNE.
    title : str, default=None
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install ssad[plot]``).
    ValueError
        If ``method`` is unknown or the shapes do not match.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.plotting import plot_embedding
    >>> rng = np.random.default_rng(0)
    >>> Z = np.vstack([rng.normal(0, 1, (30, 8)), rng.normal(4, 1, (30, 8))])
    >>> ax = plot_embedding(Z, np.repeat([0, 1], 30), method="pca")  # doctest: +SKIP
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in ("tsne", "pca"):
        raise ValueError(
            "The 'method' parameter of plot_embedding must be a str among {'tsne', 'pca'}. "
            f"Got {method!r} instead."
        )
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if Z.ndim != 2 or Z.shape[0] != labels.shape[0] or Z.shape[0] < 3:
        raise ValueError(
            "Z must be 2-D with one row per label and at least 3 rows; got Z of shape "
            f"{Z.shape} and {labels.shape[0]} labels."
        )
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.5, 5.5))
    n_samples, n_features = Z.shape
    if method == "pca":
        k = min(2, n_features)
        P = PCA(n_components=k, random_state=random_state).fit_transform(Z)
        P = np.hstack([P, np.zeros((n_samples, 2 - k))])
        axis = "PC"
    else:
        k = min(n_pca, n_features, n_samples)
        P = PCA(n_components=k, random_state=random_state).fit_transform(Z) if k < n_features else Z
        P = TSNE(
            n_components=2,
            perplexity=min(perplexity, (n_samples - 1) / 3.0),
            init="pca",
            random_state=random_state,
        ).fit_transform(P)
        axis = "t-SNE "
    classes = np.unique(labels)
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, c in enumerate(classes):
        mask = labels == c
        if label_names is not None and 0 <= int(c) < len(label_names):
            name = str(label_names[int(c)])
        else:
            name = str(c)
        ax.scatter(P[mask, 0], P[mask, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=name)
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="medium")
    ax.legend(markerscale=2.5, fontsize="small", loc="best", frameon=True)
    return ax


def _as_display_image(image: Any) -> np.ndarray:
    """uint8 or [0, 1] float, (H, W) or (H, W, C) -> float (H, W) or (H, W, 3) in [0, 1]."""
    arr = np.asarray(image)
    arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(
            f"An image must be (H, W) or (H, W, C) with C in {{1, 3, 4}}; got {arr.shape}."
        )
    return np.clip(arr[..., :3] if arr.ndim == 3 else arr, 0.0, 1.0)


def plot_anomaly_map(
    image: Any,
    anomaly_map: Any,
    mask: Any = None,
    *,
    ax: Axes | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Axes:
    """An image with its anomaly map as a heatmap over it, and the defect's outline.

    Parameters
    ----------
    image : array-like of shape (H, W) or (H, W, C)
        uint8, or float in ``[0, 1]``.
    anomaly_map : array-like of shape (H, W)
        Higher = more anomalous, e.g. a row of
        :meth:`~ssad.PatchCoreDetector.anomaly_map`.
    mask : array-like of shape (H, W), default=None
        Ground truth (nonzero on the defect), drawn as a contour.
    ax : matplotlib Axes, default=None
        Where to draw; default: a new pyplot figure.
    alpha : float, default=0.5
        Opacity of the heatmap.
    cmap : str, default="jet"
        Colour map of the heatmap.
    vmin, vmax : float, default=None
        Value range of the colour map (default: the map's own range); give
        the same range to compare several images.
    title : str, default=None
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install ssad[plot]``).
    ValueError
        If the shapes do not match.

    See Also
    --------
    plot_anomaly_maps : A grid of them.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.plotting import plot_anomaly_map
    >>> image = np.zeros((16, 16), dtype=np.uint8)
    >>> heat = np.zeros((16, 16)); heat[4:8, 4:8] = 1.0
    >>> ax = plot_anomaly_map(image, heat, heat > 0.5)  # doctest: +SKIP
    """
    picture = _as_display_image(image)
    heat = np.asarray(anomaly_map, dtype=np.float64)
    if heat.shape != picture.shape[:2] or (mask is not None and np.shape(mask) != heat.shape):
        raise ValueError(
            f"image {picture.shape[:2]}, anomaly_map {heat.shape} and mask "
            f"{None if mask is None else np.shape(mask)} must have one height and width."
        )
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.0, 4.0))
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    if mask is not None and np.any(mask):
        ax.contour(np.asarray(mask) > 0, levels=[0.5], colors="white", linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")
    return ax


def plot_anomaly_maps(
    images: Any,
    anomaly_maps: Any,
    masks: Any = None,
    *,
    titles: Sequence[str] | None = None,
    n_cols: int = 4,
    fig: Figure | None = None,
    **kwargs: Any,
) -> Figure:
    """A grid of :func:`plot_anomaly_map` panels on one colour scale.

    Parameters
    ----------
    images : array-like of shape (n, H, W) or (n, H, W, C)
        uint8, or float in ``[0, 1]``.
    anomaly_maps : array-like of shape (n, H, W)
        Higher = more anomalous.
    masks : array-like of shape (n, H, W), default=None
        Ground truth, drawn as contours.
    titles : sequence of str, default=None
        One per panel, e.g. the image scores.
    n_cols : int, default=4
        Panels per row.
    fig : matplotlib Figure, default=None
        Where to draw; default: a new pyplot figure.
    **kwargs
        Passed to :func:`plot_anomaly_map` (``alpha``, ``cmap``, ``vmin``,
        ``vmax``); ``vmin`` and ``vmax`` default to the range of all maps.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.plotting import plot_anomaly_maps
    >>> images = np.zeros((3, 16, 16), dtype=np.uint8)
    >>> fig = plot_anomaly_maps(images, np.random.rand(3, 16, 16))  # doctest: +SKIP
    """
    heat = np.asarray(anomaly_maps, dtype=np.float64)
    n = heat.shape[0]
    if len(images) != n or (masks is not None and len(masks) != n):
        raise ValueError(
            f"Got {len(images)} images, {n} anomaly maps and "
            f"{None if masks is None else len(masks)} masks; expected one each."
        )
    kwargs.setdefault("vmin", float(heat.min()))
    kwargs.setdefault("vmax", float(heat.max()))
    n_cols = max(1, min(int(n_cols), n))
    n_rows = -(-n // n_cols)
    if fig is None:
        fig = _pyplot().figure(figsize=(2.6 * n_cols, 2.8 * n_rows))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        plot_anomaly_map(
            images[i],
            heat[i],
            None if masks is None else masks[i],
            ax=ax,
            title=None if titles is None else titles[i],
            **kwargs,
        )
    return fig
