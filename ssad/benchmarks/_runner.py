"""The one benchmark runner: load data, build the splits and rows, evaluate, write reports."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from ssad._images import check_images, luma
from ssad.benchmarks._evaluate import (
    EvaluationResult,
    FromFitted,
    WithFitParams,
    _embedder,
    _take,
    default_baselines,
    evaluate,
)
from ssad.benchmarks._presets import Variant, get_preset
from ssad.benchmarks._protocols import (
    Split,
    contaminated_splits,
    dataset_vs_dataset,
    leave_one_out_splits,
    one_class_splits,
)
from ssad.benchmarks._registry import estimator_companions, make_estimator
from ssad.benchmarks._schema import validate_report
from ssad.datasets import load_dataset
from ssad.features import PixelFeatures

__all__ = ["PROTOCOLS", "report_stem", "run_benchmark", "run_preset", "write_report"]

logger = logging.getLogger(__name__)

#: Protocol names the runner runs.
PROTOCOLS = ("one-class", "leave-one-out", "contaminated", "dataset-vs-dataset")

#: At most this many test images are embedded for the t-SNE plot.
MAX_EMBEDDING_POINTS = 2000

#: Settings a preset fixes and a run may override: recorded, and hashed into the file stem.
SETTINGS = ("max_train", "max_test", "image_size", "n_epochs", "sensitivity_holdout")


def _subsample(y: np.ndarray, n_max: int | None, seed: int, strata: Any = None) -> np.ndarray:
    """Sorted indices of at most ``n_max`` samples, stratified by ``y``, else ``strata``."""
    idx = np.arange(y.shape[0])
    if n_max is None or n_max >= y.shape[0]:
        return idx
    if n_max < 1:
        raise ValueError(f"--max-train and --max-test must be >= 1; got {n_max}.")
    draw = functools.partial(train_test_split, idx, train_size=n_max, random_state=seed)
    for stratify in (y, strata):
        with contextlib.suppress(ValueError):  # a class too small to stratify
            return np.sort(draw(stratify=stratify)[0])
    return np.sort(draw()[0])


def _cap_training(splits: list[Split], y_train: np.ndarray, n_max: int | None, seed: int) -> None:
    """At most ``n_max`` training images per split, keeping the contamination share."""
    for split in splits:  # Split is frozen: its fields are replaced in place
        kept = _subsample(y_train[split.train_idx], n_max, seed, split.train_is_anomaly)
        object.__setattr__(split, "train_idx", split.train_idx[kept])
        if split.train_is_anomaly is not None:
            object.__setattr__(split, "train_is_anomaly", split.train_is_anomaly[kept])


def _match_images(X: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Convert uint8 images to ``shape`` ((H, W) grey or (H, W, C)): RGB, resized, then luma."""
    if tuple(X.shape[1:]) == tuple(shape):
        return X
    x = check_images(X).load(slice(None), size=(shape[0], shape[1])).permute(0, 2, 3, 1).numpy()
    x = luma(x) if len(shape) == 2 else x
    return np.rint(np.clip(x * 255.0, 0, 255)).astype(np.uint8)


def _configure(estimator: Any, overrides: Mapping[str, Any], strict: bool) -> Any:
    """Set every parameter called like a key of ``overrides`` (at any depth) to its value."""
    for name, value in overrides.items():
        params = estimator.get_params(deep=True)
        keys = [k for k in params if k == name or k.endswith("__" + name)]
        if value is not None and keys:
            estimator.set_params(**dict.fromkeys(keys, value))
        elif value is not None and strict:
            raise ValueError(
                f"The estimator {type(estimator).__name__} has no parameter {name!r} to "
                f"override (--{name.replace('_', '-')})."
            )
    return estimator


def _refuse_existing(out: Any, stems: Sequence[str], overwrite: Any) -> None:
    """Fail before any work if a report's JSON file exists in ``out`` and may not be replaced."""
    for stem in stems if out is not None and not overwrite else []:
        if (Path(out) / f"{stem}.json").exists():
            raise FileExistsError(
                f"{Path(out) / (stem + '.json')} exists; pass --overwrite (overwrite=True) to "
                "replace it, or choose another --out."
            )


def _rows(
    specs: Mapping[str, Any],
    method: Any,
    estimator: str,
    params: Mapping[str, Any],
    overrides: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Estimators (or FromFitted rows) from the specs of a preset."""
    rows: dict[str, Any] = {}
    for name, spec in specs.items():
        if isinstance(spec, FromFitted):
            rows[name] = spec
        elif isinstance(spec, Variant) and spec.build is not None:
            rows[name] = _configure(spec.build(method), overrides, strict=False)
        elif isinstance(spec, Variant):
            own = spec.estimator is None
            base = {**params, **spec.params} if own else dict(spec.params)
            row = make_estimator(spec.estimator or estimator, base, random_state=seed)
            row = _configure(row, overrides, strict=False)
            fit_params = {k: make() for k, make in spec.fit_params.items()}
            rows[name] = WithFitParams(row, fit_params) if fit_params else row
        else:  # an estimator
            rows[name] = clone(spec)
    return rows


def report_stem(
    name: str,
    *,
    seed: int,
    ratio: float | None = None,
    classes: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """The file name stem of a run: everything that makes it unique.

    ``name`` (a preset, or ``dataset_protocol_estimator``), the contamination
    ratio, the classes run, the seed and, when any override is set, a short
    hash of them, so that runs with different settings never share a file.

    Examples
    --------
    >>> from ssad.benchmarks import report_stem
    >>> report_stem("digits_one-class_knn-pixels", seed=0, classes=[0, 1])
    'digits_one-class_knn-pixels_c0-1_seed0'
    """
    parts = [name]
    if ratio is not None:
        parts.append(f"r{ratio:g}")
    if classes is not None:
        parts.append("c" + "-".join(str(int(c)) for c in classes))
    parts.append(f"seed{seed}")
    set_overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if set_overrides:
        blob = json.dumps(set_overrides, sort_keys=True, default=str).encode()
        parts.append(hashlib.sha1(blob).hexdigest()[:8])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts))


def run_benchmark(
    dataset: str,
    *,
    root: str | os.PathLike[str] | None = None,
    protocol: str = "one-class",
    estimator: str = "knn-pixels",
    params: Mapping[str, Any] | None = None,
    ablations: Mapping[str, Any] | None = None,
    baselines: Mapping[str, Any] | None = None,
    classes: Sequence[int] | None = None,
    ratio: float = 0.05,
    ood_dataset: str | None = None,
    ood_root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    image_size: int | None = None,
    n_epochs: int | None = None,
    read_size: int | None = None,
    sensitivity_holdout: int | None = None,
    name: str | None = None,
    preset: str | None = None,
    stem: str | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    verbose: int = 1,
    command: Sequence[str] | None = None,
) -> tuple[EvaluationResult, Any, Bunch]:
    """Run one benchmark: a registered estimator, its ablations and the baselines.

    Parameters
    ----------
    dataset : str
        Name of the data set (:func:`ssad.datasets.load_dataset`).
    root : path-like, default=None
        Its folder.
    protocol : {"one-class", "leave-one-out", "contaminated", "dataset-vs-dataset"}
        The protocol.
    estimator : str, default="knn-pixels"
        A registered name (:func:`ssad.benchmarks.available_estimators`).
    params : mapping, default=None
        ``set_params`` of the estimator (``step__param`` for pipelines).
    ablations, baselines : mapping of str to Variant, FromFitted or estimator, default=None
        Ablation rows, and rows added to the default baselines.
    classes : sequence of int, default=None
        Classes to run, or the in-distribution classes kept (dataset-vs-dataset).
    ratio : float, default=0.05
        Contamination share of the contaminated protocol.
    ood_dataset, ood_root : str, default=None
        Out-of-distribution set of dataset-vs-dataset (its test split,
        converted to the in-distribution image shape) and its folder.
    seed : int, default=0
        Seeds subsampling, splits, the contaminated protocol, the baselines
        and the estimator (when its factory takes ``random_state``).
    max_train : int, default=None
        At most this many training images per split (stratified by class).
    max_test : int, default=None
        At most this many test images (stratified); the out-of-distribution
        test set is capped at it too.
    image_size, n_epochs : int, default=None
        Set every ``image_size`` / ``n_epochs`` parameter of the estimator
        and its rows (a short run is one command).
    read_size : int, default=None
        Side to resize images to when reading (``mvtec:*``, ``folder``).
    sensitivity_holdout : int, default=None
        Also compute the sensitivity score with this many held-out images.
    name : str, default=None
        Name of the run (file stem); default ``dataset_protocol_estimator``.
    preset : str, default=None
        The preset run, recorded.
    stem : str, default=None
        File name stem of the report; default: :func:`report_stem` of the
        arguments.
    out : path-like, default=None
        Where the report will be written: if its JSON file exists already,
        fail *before* any work unless ``overwrite``.
    overwrite : bool, default=False
        Allow replacing an existing report.
    verbose : int, default=1
        Progress bar on stderr when > 0.
    command : sequence of str, default=None
        Command line, recorded.

    Returns
    -------
    result : EvaluationResult
        The results; ``result.metadata["stem"]`` names its files.
    estimator : estimator
        The unfitted estimator evaluated (for plots).
    data : Bunch
        The data the splits index (``splits`` added).

    Raises
    ------
    ValueError
        If an argument is invalid.
    FileExistsError
        If the report exists in ``out`` and ``overwrite`` is False.

    Examples
    --------
    >>> from ssad.benchmarks import run_benchmark
    >>> result, _, _ = run_benchmark("digits", classes=[0, 1], verbose=0)  # doctest: +SKIP
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}.")
    if (protocol == "dataset-vs-dataset") != (ood_dataset is not None):
        raise ValueError("--ood-dataset is needed by, and only by, --protocol dataset-vs-dataset.")
    params = dict(params or {})
    run_name = name or f"{dataset}_{protocol}_{estimator}"
    values = (max_train, max_test, image_size, n_epochs, sensitivity_holdout)
    override_info = {"params": params or None, **dict(zip(SETTINGS, values))}
    if stem is None:
        r = ratio if protocol == "contaminated" else None
        stem = report_stem(run_name, seed=seed, ratio=r, classes=classes, overrides=override_info)
    _refuse_existing(out, [stem], overwrite)
    overrides = {"image_size": image_size, "n_epochs": n_epochs}
    est = _configure(make_estimator(estimator, params, random_state=seed), overrides, True)
    ablation_rows = _rows(ablations or {}, est, estimator, params, overrides, seed)
    base, skipped = default_baselines(est, seed)
    companions = {k: Variant(v) for k, v in estimator_companions(estimator).items()}
    base.update(_rows({**companions, **(baselines or {})}, est, estimator, params, overrides, seed))
    data = load_dataset(dataset, root, read_size=read_size, random_state=seed)
    n_available = (len(data.y_train), len(data.y_test))
    if protocol == "dataset-vs-dataset" and classes is not None:
        keep_tr, keep_te = np.isin(data.y_train, classes), np.isin(data.y_test, classes)
        data.X_train, data.y_train = data.X_train[keep_tr], data.y_train[keep_tr]
        data.X_test, data.y_test = data.X_test[keep_te], data.y_test[keep_te]
    te = _subsample(data.y_test, max_test, seed)
    data.X_test, data.y_test = data.X_test[te], data.y_test[te]
    if data.get("masks_test") is not None:  # pixel metrics for rows with anomaly maps
        data.masks_test = data.masks_test[te] if protocol != "dataset-vs-dataset" else None
    shape = [int(s) for s in data.X_train.shape[1:]]
    info: dict[str, Any] = {
        "name": dataset,
        "root": None if root is None else os.fspath(root),
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
        "n_train_available": n_available[0],
        "n_test_available": n_available[1],
        "max_train": max_train,
        "max_test": max_test,
        "image_shape": shape,
        "target_names": [str(t) for t in data.target_names],
        "split": data.split,
        "ood": None,
    }
    n_in = len(data.y_test)
    if protocol == "dataset-vs-dataset":
        assert ood_dataset is not None
        ood = load_dataset(ood_dataset, ood_root, read_size=read_size, random_state=seed)
        X_out = _match_images(ood.X_test[_subsample(ood.y_test, max_test, seed)], tuple(shape))
        info["ood"] = {
            "name": ood_dataset,
            "root": None if ood_root is None else os.fspath(ood_root),
            "n_test": len(X_out),
            "n_test_available": len(ood.y_test),
            "image_shape": [int(s) for s in ood.X_test.shape[1:]],
            "converted_to": shape,
            "split": ood.split,
        }
        data.X_test = np.concatenate([data.X_test, X_out])
        data.y_test = np.r_[np.zeros(n_in, np.int64), np.ones(len(X_out), np.int64)]
        info["n_test"] = len(data.y_test)
        name = f"{dataset} vs {ood_dataset}"
        splits = list(dataset_vs_dataset(len(data.y_train), n_in, len(X_out), name=name))
    else:
        by_class = {"one-class": one_class_splits, "leave-one-out": leave_one_out_splits}
        make = by_class.get(protocol, contaminated_splits)
        args = (ratio, classes, seed) if protocol == "contaminated" else (classes,)
        splits = list(make(data.y_train, data.y_test, *args, target_names=data.target_names))
    _cap_training(splits, data.y_train, max_train, seed)
    logger.info("%s: %d splits, %d training images.", run_name, len(splits), len(data.y_train))
    proto = {
        "name": protocol,
        "classes": None if classes is None else [int(c) for c in classes],
        "ratio": float(ratio) if protocol == "contaminated" else None,
    }
    meta: dict[str, Any] = {"dataset": info, "protocol": proto, "preset": preset, "stem": stem}
    meta.update(overrides=override_info, command=None if command is None else list(command))
    kw: dict[str, Any] = {"ablations": ablation_rows, "baselines": base, "metadata": meta}
    kw.update(name=estimator, sensitivity_holdout=sensitivity_holdout, masks=data.get("masks_test"))
    kw.update(random_state=seed, verbose=verbose)
    result = evaluate(est, splits, data.X_train, data.X_test, **kw)
    result.skipped_baselines.update(skipped)
    data.splits = splits
    return result, est, data


def run_preset(name: str, **overrides: Any) -> Iterator[tuple[EvaluationResult, Any, Bunch]]:
    """Run a preset, one report per contamination ratio, lazily.

    Parameters
    ----------
    name : str
        A preset name (:func:`ssad.benchmarks.available_presets`).
    **overrides
        Keyword arguments of :func:`run_benchmark` that replace the preset's:
        ``estimator`` (a registered one of the same kind as the preset's method),
        ``classes``, ``max_train``, ``max_test``, ``image_size``, ``n_epochs``,
        ``params`` (merged into the preset's), ``seed``, ``root``, ``ood_root``,
        ``verbose``, ``command``, ``sensitivity_holdout``, ``ratios``, ``out``
        and ``overwrite`` (every report's file is checked before the first run).

    Yields
    ------
    (EvaluationResult, estimator, Bunch)
        One per ratio (one for protocols without contamination), as each
        run finishes; before the first run every report's file is checked.

    Examples
    --------
    >>> from ssad.benchmarks import run_preset
    >>> runs = list(run_preset("speed", max_train=8, max_test=8, verbose=0))  # doctest: +SKIP
    """
    p = get_preset(name)
    settings: dict[str, Any] = {k: getattr(p, k) for k in ("classes", *SETTINGS)}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    ratios = settings.pop("ratios", p.ratios) if p.protocol == "contaminated" else (0.05,)
    settings.pop("ratios", None)
    user = {k: overrides.get(k) for k in (*SETTINGS, "params", "estimator")}
    keys: dict[str, Any] = {"seed": settings.get("seed", 0), "classes": overrides.get("classes")}
    rs = [r if p.protocol == "contaminated" else None for r in ratios]
    stems = [report_stem(p.name, ratio=r, overrides=user, **keys) for r in rs]
    _refuse_existing(settings.get("out"), stems, settings.get("overwrite"))  # before any run
    settings["params"] = {**p.params, **(settings.get("params") or {})}
    method, kind = settings.pop("estimator", p.estimator), type(make_estimator(p.estimator))
    if not isinstance(make_estimator(method), kind):  # the rows read the method's fit
        raise ValueError(f"{p.name!r} needs a {kind.__name__} as its method; {method!r} is not")
    fixed: dict[str, Any] = {"protocol": p.protocol, "name": p.name, "preset": p.name}
    fixed.update(estimator=method, ablations=p.ablations, baselines=p.baselines)
    fixed["ood_dataset"] = p.ood_dataset
    for ratio, stem in zip(ratios, stems):
        yield run_benchmark(p.dataset, ratio=ratio, stem=stem, **fixed, **settings)


def _markdown_document(result: EvaluationResult) -> str:
    meta = result.metadata
    data, proto, env = meta.get("dataset") or {}, meta.get("protocol") or {}, result.environment
    shape = "x".join(str(s) for s in data.get("image_shape", []))
    title = meta.get("preset") or result.estimator.name
    lines = [
        f"# {title}: {result.estimator.name} on {data.get('name')}, {proto.get('name')} protocol",
        "",
        f"- data: {data.get('name')}: {data.get('n_train')} training / {data.get('n_test')} test "
        f"images of {shape}; at most {data.get('max_train') or 'all'} training images per split",
    ]
    if data.get("split"):
        lines.append(f"- split: {data['split']}")
    if ood := data.get("ood"):
        lines.append(f"- out-of-distribution: {ood['name']}, {ood['n_test']} test images")
    if proto.get("classes") is not None:
        lines.append(f"- classes: {proto['classes']}")
    if proto.get("ratio") is not None:
        lines.append(f"- contamination ratio: {proto['ratio']}")
    pk = env.get("packages", {})
    lines += [
        f"- estimator: `{result.estimator.estimator}` (all parameters in the JSON file)",
        f"- seed {result.random_state}; created {result.created}",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} cores, {env.get('torch_threads')} "
        f"torch threads), GPU: {env.get('gpu') or 'none'}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None),
    ]
    if meta.get("command"):
        cmd = " ".join(meta["command"])  # the CLI's arguments, or a script's whole command
        prefix = "" if cmd.startswith("python ") else "python -m ssad.benchmarks "
        lines.append(f"- command: `{prefix}{cmd}`")
    lines += [
        "",
        "AUROC, AP and sensitivity in %, anomalies positive (`roc_auc_score(is_anomaly, "
        "-score_samples)`); times are wall-clock seconds summed over the splits.",
        "",
        result.to_markdown(),
    ]
    return "\n".join(lines)


def _fitted_plots(
    result: EvaluationResult, estimator: Any, data: Bunch, out_dir: Path, stem: str, seed: int
) -> list[Path]:
    """t-SNE of the embeddings and, for detectors with maps, anomaly-map overlays of split 0."""
    from ssad.plotting import _new_figure, plot_anomaly_maps, plot_embedding

    split: Split = data.splits[0]
    test_idx = split.test_idx
    if test_idx.shape[0] > MAX_EMBEDDING_POINTS:
        rng = np.random.default_rng(seed)
        test_idx = np.sort(rng.choice(test_idx, MAX_EMBEDDING_POINTS, replace=False))
    X_show = _take(data.X_test, test_idx)
    fitted = clone(estimator).fit(_take(data.X_train, split.train_idx))
    transform = _embedder(fitted)
    Z = PixelFeatures().fit_transform(X_show) if transform is None else transform(X_show)
    names = [str(t) for t in data.target_names] or None
    if (result.metadata.get("protocol") or {}).get("name") == "dataset-vs-dataset":
        names = ["in-distribution", "out-of-distribution"]
    fig, ax = _new_figure((6.5, 5.5))
    plot_embedding(
        np.asarray(Z),
        data.y_test[test_idx],
        label_names=names,
        ax=ax,
        random_state=seed,
        title=f"t-SNE of {result.estimator.name} embeddings (fitted on {split.name})",
    )
    paths = [out_dir / f"{stem}_embedding.png"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    if hasattr(fitted, "anomaly_map"):  # six anomalous and two normal test images
        from matplotlib.figure import Figure

        pos = np.r_[np.flatnonzero(split.is_anomaly)[:6], np.flatnonzero(~split.is_anomaly)[:2]]
        images, masks = _take(data.X_test, split.test_idx[pos]), data.get("masks_test")
        maps = fitted.anomaly_map(images)
        masks = None if masks is None else masks[split.test_idx[pos]]
        kinds = np.where(split.is_anomaly[pos], "anomaly", "normal")
        titles = [f"{k} {-s:.3g}" for k, s in zip(kinds, fitted.score_samples(images))]
        grid = plot_anomaly_maps(
            images, maps, masks, titles=titles, fig=Figure(figsize=(10.4, 5.6))
        )
        paths.append(out_dir / f"{stem}_anomaly_maps.png")
        grid.savefig(paths[-1], dpi=120, bbox_inches="tight")
    return paths


def write_report(
    result: EvaluationResult,
    out: str | os.PathLike[str],
    *,
    plots: bool = False,
    estimator: Any = None,
    data: Bunch | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a benchmark result as JSON and Markdown (and PNG plots).

    The JSON file is checked against ``schema.json`` before it is written;
    files are named by ``result.metadata["stem"]`` (:func:`report_stem`).

    Parameters
    ----------
    result : EvaluationResult
        What :func:`run_benchmark` (or :func:`evaluate`) returned.
    out : path-like
        Folder to write into (created if missing).
    plots : bool, default=False
        Also write ROC curves per model and, when ``estimator`` and ``data``
        are given, a t-SNE plot of the estimator's embeddings of the test
        images of the first split and, for an estimator with
        ``anomaly_map``, its maps over eight of those images with their
        masks (this fits the estimator again).
    estimator : estimator, default=None
        The unfitted estimator (for the embedding plot).
    data : Bunch, default=None
        The data of :func:`run_benchmark` (for the embedding plot).
    overwrite : bool, default=False
        Replace existing files; otherwise an existing JSON file is an error.

    Returns
    -------
    list of pathlib.Path
        The files written, JSON first, then Markdown, then plots.

    Raises
    ------
    FileExistsError
        If the JSON file exists and ``overwrite`` is False.
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
    stem = str(result.metadata.get("stem") or report_stem(result.estimator.name, seed=0))
    _refuse_existing(out_dir, [stem], overwrite)
    json_path = out_dir / f"{stem}.json"
    report = result.to_dict()
    validate_report(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(_markdown_document(result), encoding="utf-8")
    paths = [json_path, md_path]
    if plots:
        from ssad.plotting import _new_figure, plot_roc_curves

        for i, model in enumerate(result.models):
            fig, ax = _new_figure((5.5, 5.0))
            plot_roc_curves(model, ax=ax, title=f"{model.name} ({model.role})")
            path = out_dir / f"{stem}_roc_{i}-{re.sub(r'[^A-Za-z0-9._-]+', '-', model.name)}.png"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            paths.append(path)
        if estimator is not None and data is not None:
            seed = result.random_state if result.random_state is not None else 0
            paths += _fitted_plots(result, estimator, data, out_dir, stem, seed)
    for path in paths:
        logger.info("Wrote %s", path)
    return paths
