"""ssad.plotting: ROC curves and embedding maps; the runner's --plots."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from ssad.benchmarks import evaluate, one_class_splits  # noqa: E402
from ssad.benchmarks.__main__ import main  # noqa: E402
from ssad.datasets import make_shape_images  # noqa: E402
from ssad.features import PixelFeatures  # noqa: E402
from ssad.plotting import (  # noqa: E402
    plot_anomaly_map,
    plot_anomaly_maps,
    plot_embedding,
    plot_roc_curves,
    plot_score_histogram,
)
from ssad.scoring import KNNScorer  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _save(ax: object, path: Path) -> None:
    ax.figure.savefig(path)  # type: ignore[attr-defined]
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_roc_curves_from_pairs(tmp_path: Path) -> None:
    y = np.array([False, False, False, True, True])
    ax = Figure().subplots()
    out = plot_roc_curves(
        {"perfect": (y, np.array([3.0, 2.0, 1.0, 0.0, -1.0])), "random": (y, np.zeros(5))},
        ax=ax,
        title="toy",
    )
    assert out is ax
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["perfect (AUROC 100.0)", "random (AUROC 50.0)"]
    assert ax.get_title() == "toy"
    _save(ax, tmp_path / "roc.png")
    # a single pair, and a list of pairs
    assert plot_roc_curves((y, np.arange(5.0)), ax=Figure().subplots()).get_legend() is not None
    ax = plot_roc_curves([(y, np.arange(5.0))] * 2, ax=Figure().subplots())
    assert len(ax.get_legend().get_texts()) == 2
    with pytest.raises(TypeError, match="results must be"):
        plot_roc_curves(3.0, ax=Figure().subplots())


def test_plot_roc_curves_from_result(tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline

    X, y = make_shape_images(90, n_classes=3, image_size=16, random_state=0)
    res = evaluate(
        make_pipeline(PixelFeatures(), KNNScorer()),
        one_class_splits(y[:60], y[60:]),
        X[:60],
        X[60:],
        baselines=None,
    )
    ax = plot_roc_curves(res, ax=Figure().subplots())
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [f"{s.name} (AUROC {100 * s.auroc:.1f})" for s in res.splits]
    _save(ax, tmp_path / "roc.png")


def test_plot_roc_curves_pyplot_figure() -> None:
    import matplotlib.pyplot as plt

    y = np.array([False, True, True])
    ax = plot_roc_curves((y, np.array([1.0, 0.0, 0.5])))
    assert ax.figure in [plt.figure(n) for n in plt.get_fignums()]
    plt.close("all")


def test_plot_score_histogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, 80), rng.normal(-5, 1, 20)]
    is_anomaly = np.r_[np.zeros(80), np.ones(20)]
    ax = plot_score_histogram(
        scores, is_anomaly, threshold=-2.5, bins=20, ax=Figure().subplots(), title="toy"
    )
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["normal (80)", "anomalous (20)", "threshold"]
    assert len(ax.patches) == 40  # two histograms on the same 20 bins
    assert ax.lines[0].get_xdata()[0] == -2.5
    _save(ax, tmp_path / "hist.png")
    ax = plot_score_histogram(scores, ax=Figure().subplots())  # no labels: one histogram
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["images (100)"]
    with pytest.raises(ValueError, match="is_anomaly has .* labels for .* scores"):
        plot_score_histogram(scores, is_anomaly[:5], ax=Figure().subplots())
    predict_style = np.where(is_anomaly, -1, 1)  # +1 would be read as True: refused with a hint
    with pytest.raises(ValueError, match="pass is_anomaly == -1"):
        plot_score_histogram(scores, predict_style, ax=Figure().subplots())
    with pytest.raises(ValueError, match="pass is_anomaly == -1"):
        plot_roc_curves((predict_style, scores), ax=Figure().subplots())
    with pytest.raises(ValueError, match="finite"):
        plot_score_histogram([np.nan], ax=Figure().subplots())


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_plot_embedding(tmp_path: Path, method: str) -> None:
    rng = np.random.default_rng(0)
    Z = np.vstack([rng.normal(0, 1, (40, 64)), rng.normal(3, 1, (40, 64))])
    labels = np.repeat([0, 1], 40)
    with threadpool_limits(1):  # OpenMP t-SNE threads spin for long on a busy 2-core machine
        ax = plot_embedding(
            Z,
            labels,
            method=method,
            label_names=["normal", "anomaly"],
            ax=Figure().subplots(),
            random_state=0,
            title="two blobs",
        )
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["normal", "anomaly"]
    assert len(ax.collections) == 2
    _save(ax, tmp_path / f"{method}.png")


def test_plot_embedding_errors() -> None:
    with pytest.raises(ValueError, match="'method' parameter"):
        plot_embedding(np.zeros((5, 2)), np.zeros(5), method="umap", ax=Figure().subplots())
    with pytest.raises(ValueError, match="one row per label"):
        plot_embedding(np.zeros((5, 2)), np.zeros(4), ax=Figure().subplots())


def test_plot_anomaly_maps(tmp_path: Path) -> None:
    from ssad.datasets import make_local_defect_images

    X, _, masks = make_local_defect_images(1, 3, image_size=16, random_state=0)
    heat = masks + np.random.default_rng(0).uniform(0, 0.5, size=masks.shape)
    ax = plot_anomaly_map(X[1], heat[1], masks[1], ax=Figure().subplots(), title="blob")
    assert len(ax.images) == 2 and ax.get_title() == "blob" and len(ax.collections) >= 1
    grey = plot_anomaly_map(X[0].mean(axis=2) / 255, heat[0], ax=Figure().subplots())
    assert grey.images[0].get_cmap().name == "gray"
    fig = plot_anomaly_maps(X, heat, masks, titles=list("abcd"), n_cols=3, fig=Figure())
    axes = fig.get_axes()
    assert len(axes) == 6 and [a.get_title() for a in axes[:4]] == list("abcd")
    assert {a.images[1].get_clim() for a in axes[:4]} == {(float(heat.min()), float(heat.max()))}
    fig.savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="one height and width"):
        plot_anomaly_map(X[0], heat[0, :8], ax=Figure().subplots())
    with pytest.raises(ValueError, match="expected one each"):
        plot_anomaly_maps(X[:2], heat, fig=Figure())


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    y = np.array([False, True])
    with pytest.raises(ImportError, match=r"pip install ssad\[plot\]"):
        plot_roc_curves((y, np.array([1.0, 0.0])))
    with pytest.raises(ImportError, match=r"pip install ssad\[plot\]"):
        plot_embedding(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ImportError, match=r"pip install ssad\[plot\]"):
        plot_score_histogram(np.zeros(5))


def test_runner_plots(tmp_path: Path) -> None:
    argv = ["--dataset", "digits", "--classes", "0", "--max-test", "150", "--plots", "--quiet"]
    with threadpool_limits(1):  # see test_plot_embedding
        assert main([*argv, "--out", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    stem = next(tmp_path.glob("*.json")).stem
    assert pngs == [
        f"{stem}_embedding.png",
        f"{stem}_roc_0-knn-pixels.png",
        f"{stem}_roc_1-iforest-pixels.png",
    ]
    assert stem.startswith("digits_one-class_knn-pixels_c0_seed0_")  # + hash of --max-test
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
