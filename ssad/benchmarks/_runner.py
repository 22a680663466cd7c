"""The benchmark runner: load data, build the splits, evaluate, write JSON + Markdown (+ plots)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from ssad.benchmarks._evaluate import EvaluationResult, _embedder, _take, evaluate
from ssad.benchmarks._protocols import (
    Split,
    contaminated_splits,
    dataset_vs_dataset,
    leave_one_out_splits,
    one_class_splits,
)
from ssad.benchmarks._registry import PixelFeatures, make_estimator
from ssad.benchmarks._schema import validate_report

__all__ = ["DATASETS", "PROTOCOLS", "load_benchmark_data", "run_benchmark", "write_report"]

logger = logging.getLogger(__name__)

#: Data set names the runner reads (``mvtec:<category>`` names an MVTec AD category).
DATASETS = (
    "fashion-mnist",
    "mnist",
    "mnist-5k",
    "cifar10",
    "cifar100",
    "digits",
    "mvtec:<category>",
    "folder",
)

#: Protocol names the runner runs.
PROTOCOLS = ("one-class", "leave-one-out", "contaminated", "dataset-vs-dataset")

#: Share of the images that forms the test split of data sets that have none.
TEST_SIZE = 0.2

#: At most this many test images are embedded for the t-SNE plot.
MAX_EMBEDDING_POINTS = 2000


def _require_root(name: str, root: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    if root is None:
        raise ValueError(f"--dataset {name} reads files: pass their folder with --root.")
    return root


def _split_xy(data: Bunch, random_state: int, name: str) -> Bunch:
    """A stratified train/test split of a data set that has none."""
    idx = np.arange(len(data.y))
    train, test = train_test_split(
        idx, test_size=TEST_SIZE, stratify=data.y, random_state=random_state
    )
    train, test = np.sort(train), np.sort(test)
    return Bunch(
        X_train=data.X[train],
        y_train=data.y[train],
        X_test=data.X[test],
        y_test=data.y[test],
        target_names=list(data.target_names),
        split=(
            f"stratified {100 * (1 - TEST_SIZE):.0f}/{100 * TEST_SIZE:.0f} split of the "
            f"{len(idx)} images of {name} (random_state={random_state})"
        ),
    )


def load_benchmark_data(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    random_state: int = 0,
) -> Bunch:
    """Load a data set by its runner name, always as a train/test split.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``fashion-mnist``, ``mnist``, ``mnist-5k``,
        ``cifar10``, ``cifar100`` (20 coarse classes), ``digits``,
        ``mvtec:<category>`` (e.g. ``mvtec:bottle``) or ``folder`` (a folder
        per class).
    root : path-like, default=None
        Folder of the files; needed except for ``fashion-mnist`` (default
        ``/usr/share/datasets/fashion-mnist``), ``mnist-5k`` and ``digits``.
    image_size : int, default=None
        Resize images to this side when reading (``mvtec:*`` and ``folder``).
    random_state : int, default=0
        Seeds the stratified 80/20 split of sets without a test split
        (``mnist-5k``, ``digits``, ``folder``).

    Returns
    -------
    Bunch
        ``X_train, y_train, X_test, y_test`` (uint8 images, int64 labels),
        ``target_names`` and ``split`` (how the split was made, or None).

    Raises
    ------
    ValueError
        If the name is unknown or ``root`` is needed and missing.
    FileNotFoundError
        If the files are missing (the readers name the file expected).

    Examples
    --------
    >>> from ssad.benchmarks import load_benchmark_data
    >>> data = load_benchmark_data("digits")
    >>> data.X_train.shape, data.X_test.shape
    ((1437, 8, 8), (360, 8, 8))
    """
    from ssad import datasets as ds

    if name == "fashion-mnist":
        data = ds.load_fashion_mnist(root) if root is not None else ds.load_fashion_mnist()
    elif name == "mnist":
        data = ds.load_mnist(_require_root(name, root))
    elif name == "cifar10":
        data = ds.load_cifar10(_require_root(name, root))
    elif name == "cifar100":
        data = ds.load_cifar100(_require_root(name, root))
    elif name.startswith("mvtec:") and len(name) > len("mvtec:"):
        data = ds.load_mvtec_ad(_require_root(name, root), name[len("mvtec:") :], image_size)
    elif name == "digits":
        return _split_xy(ds.load_digits_images(), random_state, name)
    elif name == "mnist-5k":
        return _split_xy(ds.load_mnist_5k(), random_state, name)
    elif name == "folder":
        return _split_xy(
            ds.load_image_folder(_require_root(name, root), image_size), random_state, name
        )
    else:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {list(DATASETS)}.")
    return Bunch(
        X_train=data.X_train,
        y_train=data.y_train,
        X_test=data.X_test,
        y_test=data.y_test,
        target_names=list(data.target_names),
        split=None,
    )


def _subsample(y: np.ndarray, n_max: int | None, random_state: int) -> np.ndarray:
    """Sorted indices of at most ``n_max`` samples, stratified by ``y`` when possible."""
    n = y.shape[0]
    idx = np.arange(n)
    if n_max is None or n_max >= n:
        return idx
    if n_max < 1:
        raise ValueError(f"--max-train and --max-test must be >= 1; got {n_max}.")
    try:
        kept, _ = train_test_split(idx, train_size=n_max, stratify=y, random_state=random_state)
    except ValueError:  # a class too small to stratify
        kept, _ = train_test_split(idx, train_size=n_max, random_state=random_state)
    return np.sort(kept)


def _match_images(X: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Convert uint8 images to ``shape`` ((H, W) grey or (H, W, C)): channels, then size."""
    import torch
    import torch.nn.functional as F

    if tuple(X.shape[1:]) == tuple(shape):
        return X
    want_c = shape[2] if len(shape) == 3 else 1
    out = np.empty((X.shape[0], *shape), dtype=np.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for start in range(0, X.shape[0], 1024):
        x = torch.from_numpy(np.ascontiguousarray(X[start : start + 1024]))
        x = (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2).float()
        x = x[:, :3]
        if x.shape[1] == 1 and want_c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and want_c == 1:
            x = (x * luma).sum(dim=1, keepdim=True)
        if tuple(x.shape[2:]) != tuple(shape[:2]):
            x = F.interpolate(
                x, size=shape[:2], mode="bilinear", antialias=True, align_corners=False
            )
        y = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out[start : start + len(y)] = y[..., 0] if len(shape) == 2 else y
    return out


def _protocol_splits(
    protocol: str,
    data: Bunch,
    classes: Sequence[int] | None,
    ratio: float,
    seed: int,
    n_test_in: int,
    name: str,
) -> Iterator[Split]:
    names = data.target_names
    if protocol == "one-class":
        return one_class_splits(data.y_train, data.y_test, classes, target_names=names)
    if protocol == "leave-one-out":
        return leave_one_out_splits(data.y_train, data.y_test, classes, target_names=names)
    if protocol == "contaminated":
        return contaminated_splits(
            data.y_train, data.y_test, ratio, classes, seed, target_names=names
        )
    if protocol == "dataset-vs-dataset":
        n_out = len(data.y_test) - n_test_in
        return dataset_vs_dataset(len(data.y_train), n_test_in, n_out, name=name)
    raise ValueError(f"Unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}.")


def run_benchmark(
    dataset: str,
    *,
    root: str | os.PathLike[str] | None = None,
    protocol: str = "one-class",
    estimator: str = "knn-pixels",
    params: dict[str, Any] | None = None,
    classes: Sequence[int] | None = None,
    ratio: float = 0.05,
    ood_dataset: str | None = None,
    ood_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    image_size: int | None = None,
    verbose: int = 1,
    command: Sequence[str] | None = None,
) -> tuple[EvaluationResult, Any, Bunch]:
    """Run one benchmark: a registered estimator and the baselines on the splits of a protocol.

    Parameters
    ----------
    dataset : str
        Runner name of the data set (see :func:`load_benchmark_data`).
    root : path-like, default=None
        Its folder.
    protocol : {"one-class", "leave-one-out", "contaminated", "dataset-vs-dataset"}, \
default="one-class"
        The protocol.
    estimator : str, default="knn-pixels"
        A registered name (:func:`ssad.benchmarks.available_estimators`).
    params : dict, default=None
        ``set_params`` of the estimator (``step__param`` for pipelines).
    classes : sequence of int, default=None
        Classes to run (one-class, leave-one-out, contaminated), or the
        in-distribution classes kept (dataset-vs-dataset); default: all.
    ratio : float, default=0.05
        Contamination share of the contaminated protocol.
    ood_dataset : str, default=None
        Runner name of the out-of-distribution set (dataset-vs-dataset); its
        test split is used, converted to the in-distribution image shape.
    ood_root : path-like, default=None
        Its folder.
    seed : int, default=0
        Seeds subsampling, splits without a test set, the contaminated
        protocol, the IsolationForest baseline and the estimator (when its
        factory takes ``random_state`` and ``params`` does not set it).
    max_train, max_test : int, default=None
        Use at most this many training / test images (stratified random
        subsample); the out-of-distribution test set is capped at ``max_test`` too.
    image_size : int, default=None
        Side to resize images to when reading (``mvtec:*``, ``folder``).
    verbose : int, default=1
        Progress bar on stderr when > 0.
    command : sequence of str, default=None
        Command line, recorded.

    Returns
    -------
    result : EvaluationResult
        The results; ``result.to_dict()`` validates against ``schema.json``.
    estimator : estimator
        The unfitted estimator evaluated (for plots).
    data : Bunch
        The data the splits index: ``X_train, y_train, X_test, y_test``
        (test labels of dataset-vs-dataset: 0 in-distribution, 1 out).

    Raises
    ------
    ValueError
        If an argument is invalid.

    See Also
    --------
    write_report : Write the result to files.

    Examples
    --------
    >>> from ssad.benchmarks import run_benchmark
    >>> result, _, _ = run_benchmark("digits", classes=[0, 1], verbose=0)  # doctest: +SKIP
    >>> [m.name for m in result.models]  # doctest: +SKIP
    ['knn-pixels', 'iforest-pixels']
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}.")
    if protocol == "dataset-vs-dataset" and ood_dataset is None:
        raise ValueError("--protocol dataset-vs-dataset needs --ood-dataset.")
    if protocol != "dataset-vs-dataset" and ood_dataset is not None:
        raise ValueError("--ood-dataset is only used by --protocol dataset-vs-dataset.")
    est = make_estimator(estimator, params, random_state=seed)
    data = load_benchmark_data(dataset, root, image_size=image_size, random_state=seed)
    n_train_available, n_test_available = len(data.y_train), len(data.y_test)
    if protocol == "dataset-vs-dataset" and classes is not None:
        keep_tr = np.isin(data.y_train, classes)
        keep_te = np.isin(data.y_test, classes)
        data.X_train, data.y_train = data.X_train[keep_tr], data.y_train[keep_tr]
        data.X_test, data.y_test = data.X_test[keep_te], data.y_test[keep_te]
    tr = _subsample(data.y_train, max_train, seed)
    te = _subsample(data.y_test, max_test, seed)
    data.X_train, data.y_train = data.X_train[tr], data.y_train[tr]
    data.X_test, data.y_test = data.X_test[te], data.y_test[te]
    image_shape = [int(s) for s in data.X_train.shape[1:]]
    dataset_info: dict[str, Any] = {
        "name": dataset,
        "root": None if root is None else os.fspath(root),
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
        "n_train_available": n_train_available,
        "n_test_available": n_test_available,
        "max_train": max_train,
        "max_test": max_test,
        "image_shape": image_shape,
        "target_names": [str(t) for t in data.target_names],
        "split": data.split,
        "ood": None,
    }
    n_test_in = len(data.y_test)
    split_name = dataset
    if protocol == "dataset-vs-dataset":
        assert ood_dataset is not None
        ood = load_benchmark_data(ood_dataset, ood_root, image_size=image_size, random_state=seed)
        keep = _subsample(ood.y_test, max_test, seed)
        X_out = ood.X_test[keep]
        dataset_info["ood"] = {
            "name": ood_dataset,
            "root": None if ood_root is None else os.fspath(ood_root),
            "n_test": len(keep),
            "n_test_available": len(ood.y_test),
            "image_shape": [int(s) for s in X_out.shape[1:]],
            "converted_to": image_shape,
            "split": ood.split,
        }
        X_out = _match_images(X_out, tuple(data.X_test.shape[1:]))
        data.X_test = np.concatenate([data.X_test, X_out])
        data.y_test = np.concatenate([np.zeros(n_test_in, np.int64), np.ones(len(X_out), np.int64)])
        dataset_info["n_test"] = len(data.y_test)
        split_name = f"{dataset} vs {ood_dataset}"
    splits = list(_protocol_splits(protocol, data, classes, ratio, seed, n_test_in, split_name))
    protocol_info = {
        "name": protocol,
        "classes": [int(c) for c in classes] if classes is not None else None,
        "ratio": float(ratio) if protocol == "contaminated" else None,
    }
    logger.info(
        "%s on %s (%s): %d splits, %d training / %d test images.",
        estimator,
        dataset,
        protocol,
        len(splits),
        len(data.y_train),
        len(data.y_test),
    )
    result = evaluate(
        est,
        splits,
        data.X_train,
        data.X_test,
        baselines="auto",
        name=estimator,
        random_state=seed,
        metadata={
            "dataset": dataset_info,
            "protocol": protocol_info,
            "command": list(command) if command is not None else None,
        },
        verbose=verbose,
    )
    data.splits = splits
    return result, est, data


def _stem(result: EvaluationResult) -> str:
    meta = result.metadata
    parts = [
        str(meta.get("dataset", {}).get("name", "data")),
        str(meta.get("protocol", {}).get("name", "protocol")),
        result.estimator.name,
        f"seed{result.random_state}",
    ]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts))


def _markdown_document(result: EvaluationResult) -> str:
    meta = result.metadata
    data = meta.get("dataset") or {}
    proto = meta.get("protocol") or {}
    env = result.environment
    pk = env.get("packages", {})
    shape = "x".join(str(s) for s in data.get("image_shape", []))
    lines = [
        f"# {result.estimator.name} on {data.get('name')}, {proto.get('name')} protocol",
        "",
        f"- data: {data.get('name')} ({data.get('root') or 'default location'}): "
        f"{data.get('n_train')} training / {data.get('n_test')} test images of {shape}"
        + (
            f" (subsampled from {data.get('n_train_available')} / {data.get('n_test_available')})"
            if data.get("max_train") or data.get("max_test")
            else ""
        ),
    ]
    if data.get("split"):
        lines.append(f"- split: {data['split']}")
    if data.get("ood"):
        ood = data["ood"]
        lines.append(
            f"- out-of-distribution: {ood['name']}, {ood['n_test']} test images "
            f"(converted from {'x'.join(map(str, ood['image_shape']))} to {shape})"
        )
    proto_line = f"- protocol: {proto.get('name')}"
    if proto.get("classes") is not None:
        proto_line += f", classes {proto['classes']}"
    if proto.get("ratio") is not None:
        proto_line += f", contamination ratio {proto['ratio']}"
    lines += [
        proto_line,
        f"- estimator: {result.estimator.name} (`{result.estimator.estimator}`; all parameters "
        "in the JSON file)",
        f"- seed: {result.random_state}; created {result.created}",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} cores, "
        f"{env.get('torch_threads')} torch threads), GPU: {env.get('gpu') or 'none'}; "
        f"Python {env.get('python')}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None),
    ]
    if meta.get("command"):
        lines.append("- command: `python -m ssad.benchmarks " + " ".join(meta["command"]) + "`")
    lines += [
        "",
        "AUROC in %, anomalies as the positive class (`roc_auc_score(is_anomaly, "
        "-score_samples)`); AP = average precision in %. Times are wall-clock seconds summed "
        "over the splits; peak RSS is the whole process's (libraries and data included), "
        "RSS increase what fit + score added to it.",
        "",
        result.to_markdown(),
    ]
    return "\n".join(lines)


def _embedding_plot(
    result: EvaluationResult, estimator: Any, data: Bunch, path: Path, seed: int
) -> Path:
    from ssad.plotting import _new_figure, plot_embedding

    split: Split = data.splits[0]
    X_fit = _take(data.X_train, split.train_idx)
    rng = np.random.default_rng(seed)
    test_idx = split.test_idx
    if test_idx.shape[0] > MAX_EMBEDDING_POINTS:
        test_idx = np.sort(rng.choice(test_idx, MAX_EMBEDDING_POINTS, replace=False))
    X_show = _take(data.X_test, test_idx)
    get_transform, _ = _embedder(estimator)
    if get_transform is None:
        what = "raw pixels"
        Z = PixelFeatures().fit(X_show).transform(X_show)
    elif hasattr(estimator, "steps"):
        what = f"{result.estimator.name} embeddings"
        head = clone(estimator[:-1]).fit(X_fit)
        Z = head.transform(X_show)
    else:
        what = f"{result.estimator.name} embeddings"
        Z = clone(estimator).fit(X_fit).transform(X_show)
    labels = data.y_test[test_idx]
    proto = (result.metadata.get("protocol") or {}).get("name")
    if proto == "dataset-vs-dataset":
        names: list[str] | None = ["in-distribution", "out-of-distribution"]
    else:
        names = [str(t) for t in data.target_names] or None
    fig, ax = _new_figure((6.5, 5.5))
    plot_embedding(
        np.asarray(Z),
        labels,
        label_names=names,
        ax=ax,
        random_state=seed,
        title=f"t-SNE of {what} (fitted on {split.name}), {len(test_idx)} test images",
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_report(
    result: EvaluationResult,
    out: str | os.PathLike[str],
    *,
    plots: bool = False,
    estimator: Any = None,
    data: Bunch | None = None,
) -> list[Path]:
    """Write a benchmark result as JSON and Markdown (and PNG plots).

    The JSON file is checked against ``schema.json`` before it is written.

    Parameters
    ----------
    result : EvaluationResult
        What :func:`run_benchmark` (or :func:`evaluate`) returned.
    out : path-like
        Folder to write into (created if missing).
    plots : bool, default=False
        Also write ROC curves per model (``*_roc_<model>.png``) and, when
        ``estimator`` and ``data`` are given, a t-SNE plot of the estimator's
        embeddings of the test images on the first split
        (``*_embedding.png``; this fits the estimator's embedding part again).
        Needs matplotlib; the figures are drawn off-screen (no pyplot state).
    estimator : estimator, default=None
        The unfitted estimator (for the embedding plot).
    data : Bunch, default=None
        The data of :func:`run_benchmark` (for the embedding plot).

    Returns
    -------
    list of pathlib.Path
        The files written, JSON first, then Markdown, then plots.

    Raises
    ------
    ValueError
        If the result does not validate against the schema.

    Examples
    --------
    >>> from ssad.benchmarks import run_benchmark, write_report
    >>> result, est, data = run_benchmark("digits", classes=[0], verbose=0)  # doctest: +SKIP
    >>> [p.suffix for p in write_report(result, "results")]  # doctest: +SKIP
    ['.json', '.md']
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(result)
    report = result.to_dict()
    validate_report(report)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(_markdown_document(result), encoding="utf-8")
    paths = [json_path, md_path]
    if plots:
        from ssad.plotting import _new_figure, plot_roc_curves

        for model in result.models:
            fig, ax = _new_figure((5.5, 5.0))
            plot_roc_curves(model, ax=ax, title=f"{model.name} ({model.role})")
            suffix = re.sub(r"[^A-Za-z0-9._-]+", "-", model.name)
            if model.role == "baseline" and model.name == result.estimator.name:
                suffix += "-baseline"
            path = out_dir / f"{stem}_roc_{suffix}.png"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            paths.append(path)
        if estimator is not None and data is not None:
            seed = result.random_state if result.random_state is not None else 0
            paths.append(
                _embedding_plot(result, estimator, data, out_dir / f"{stem}_embedding.png", seed)
            )
    for path in paths:
        logger.info("Wrote %s", path)
    return paths
