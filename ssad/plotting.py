"""Plots of scores and embeddings: score histograms, ROC curves, 2-D maps of embeddings.

matplotlib is optional (``pip install ssad[plot]``); it is imported when a
function is called, never by ``import ssad``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_embedding", "plot_roc_curves", "plot_score_histogram"]

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
        out.append((str(label), np.asarray(y, dtype=bool), np.asarray(scores, dtype=np.float64)))
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
        y = np.asarray(is_anomaly).reshape(-1).astype(bool)
        if y.shape != scores.shape:
            raise ValueError(
                f"is_anomaly must have one entry per score; got {y.size} for {scores.size} scores."
            )
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
