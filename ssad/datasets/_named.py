"""Data sets by name: what the benchmark runner and the command line read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch

from ._bundled import load_digits_images, load_mnist_5k
from ._cifar import load_cifar10, load_cifar100
from ._folders import load_image_folder
from ._idx import load_fashion_mnist, load_mnist
from ._mvtec import load_mvtec_ad
from ._synthetic import LOCAL_DEFECT_KINDS, make_local_defect_images

__all__ = ["DATASETS", "load_dataset"]

#: Data set names load_dataset reads (``mvtec:<category>`` names an MVTec AD category).
DATASETS = (
    "fashion-mnist",
    "mnist",
    "mnist-5k",
    "cifar10",
    "cifar100",
    "digits",
    "mvtec:<category>",
    "folder",
    "synthetic-local:<texture|object>[:<defect_scale>]",
)

#: Images of the synthetic local-defect sets: training (normal), test normal, test defective.
SYNTHETIC_LOCAL_SIZES = (200, 100, 100)

#: Share of the images that forms the test split of data sets that have none.
TEST_SIZE = 0.2


def _require_root(name: str, root: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    if root is None:
        raise ValueError(
            f"The data set {name!r} reads files: pass their folder (root=..., or --root)."
        )
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
        masks_test=data.masks[test] if "masks" in data else None,
        target_names=list(data.target_names),
        split=f"stratified {100 * (1 - TEST_SIZE):.0f}/{100 * TEST_SIZE:.0f} split of the "
        f"{len(idx)} images of {name} (random_state={random_state})",
    )


def _synthetic_local(spec: str, read_size: int | None, random_state: int) -> Bunch:
    kind, _, scale_text = spec.partition(":")
    try:
        defect_scale = float(scale_text) if scale_text else 1.0
    except ValueError:
        defect_scale = float("nan")
    if kind not in LOCAL_DEFECT_KINDS or not 0 < defect_scale <= 2:
        raise ValueError(
            f"Unknown dataset 'synthetic-local:{spec}'; expected 'synthetic-local:<kind>' or "
            f"'synthetic-local:<kind>:<defect_scale>' with a kind in {list(LOCAL_DEFECT_KINDS)} "
            "and a defect scale in (0, 2], e.g. 'synthetic-local:texture:0.5'."
        )
    n_train, n_good, n_defect = SYNTHETIC_LOCAL_SIZES
    X, y, masks = make_local_defect_images(
        n_train + n_good,
        n_defect,
        kind=kind,
        image_size=64 if read_size is None else read_size,
        random_state=random_state,
        defect_scale=defect_scale,
    )
    scale_arg = f", defect_scale={defect_scale:g}" if scale_text else ""
    return Bunch(
        X_train=X[:n_train],
        y_train=y[:n_train],
        X_test=X[n_train:],
        y_test=y[n_train:],
        masks_test=masks[n_train:],
        target_names=["good", "defect"],
        split=f"make_local_defect_images(kind={kind!r}, random_state={random_state}{scale_arg}): "
        f"{n_train} normal training images; {n_good} normal and {n_defect} defective test images",
    )


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    read_size: int | None = None,
    random_state: int = 0,
) -> Bunch:
    """Load a data set by name, always as a train/test split (what the benchmarks read).

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: ``fashion-mnist``, ``mnist``, ``mnist-5k``,
        ``cifar10``, ``cifar100`` (20 coarse classes), ``digits``,
        ``mvtec:<category>`` (e.g. ``mvtec:bottle``), ``folder`` (a folder
        per class; defect masks from its ``masks`` sub-folder when there is
        one, see :func:`load_image_folder`) or ``synthetic-local:texture`` /
        ``synthetic-local:object`` (``synthetic-local`` alone: texture), images
        with small defects made by :func:`make_local_defect_images` (200
        normal training images; 100 normal and 100 defective test images of
        64 pixels, or ``read_size``); ``synthetic-local:texture:0.5`` passes
        ``defect_scale=0.5`` (smaller defects).
    root : path-like, default=None
        Folder of the files; needed except for ``fashion-mnist`` (default
        ``/usr/share/datasets/fashion-mnist``), ``mnist-5k`` and ``digits``.
    read_size : int, default=None
        Resize images to this side when reading (``mvtec:*`` and ``folder``),
        or the side of the ``synthetic-local`` images.
    random_state : int, default=0
        Seeds the stratified 80/20 split of sets without a test split
        (``mnist-5k``, ``digits``, ``folder``) and the ``synthetic-local``
        images.

    Returns
    -------
    Bunch
        ``X_train, y_train, X_test, y_test`` (uint8 images, int64 labels),
        ``masks_test`` (uint8 ``(n_test, H, W)`` defect masks, or None when
        the data set has none), ``target_names`` and ``split`` (how the split
        was made, or None).

    Raises
    ------
    ValueError
        If the name is unknown or ``root`` is needed and missing.
    FileNotFoundError
        If the files are missing (the readers name the file expected).

    Examples
    --------
    >>> from ssad.datasets import load_dataset
    >>> data = load_dataset("digits")
    >>> data.X_train.shape, data.X_test.shape
    ((1437, 8, 8), (360, 8, 8))
    """
    if name == "fashion-mnist":
        data = load_fashion_mnist(root) if root is not None else load_fashion_mnist()
    elif name == "mnist":
        data = load_mnist(_require_root(name, root))
    elif name == "cifar10":
        data = load_cifar10(_require_root(name, root))
    elif name == "cifar100":
        data = load_cifar100(_require_root(name, root))
    elif name.startswith("mvtec:") and len(name) > len("mvtec:"):
        data = load_mvtec_ad(_require_root(name, root), name[len("mvtec:") :], read_size)
    elif name == "digits":
        return _split_xy(load_digits_images(), random_state, name)
    elif name == "mnist-5k":
        return _split_xy(load_mnist_5k(), random_state, name)
    elif name == "folder":
        folder_root = _require_root(name, root)
        masks = "masks" if (Path(folder_root).expanduser() / "masks").is_dir() else None
        folder = load_image_folder(folder_root, read_size, mask_folder=masks)
        return _split_xy(folder, random_state, name)
    elif name == "synthetic-local" or name.startswith("synthetic-local:"):
        return _synthetic_local(name.partition(":")[2] or "texture", read_size, random_state)
    else:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {list(DATASETS)}.")
    return Bunch(
        X_train=data.X_train,
        y_train=data.y_train,
        X_test=data.X_test,
        y_test=data.y_test,
        masks_test=data.get("masks"),
        target_names=list(data.target_names),
        split=None,
    )
