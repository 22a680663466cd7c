"""Readers of the CIFAR-10 and CIFAR-100 "python version" pickle batches."""

from __future__ import annotations

import importlib
import io
import logging
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from sklearn.utils import Bunch

from ._common import PathLike, as_path, missing_file_error, missing_root_error

__all__ = ["load_cifar10", "load_cifar100"]

logger = logging.getLogger(__name__)

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR10_HINT = (
    f"CIFAR-10 is read from the 'python version' (cifar-10-python.tar.gz) of {_CIFAR_URL}: "
    f"extract it and pass the '{_CIFAR10_DIR}' folder, or the folder holding it, as root."
)
_CIFAR100_HINT = (
    f"CIFAR-100 is read from the 'python version' (cifar-100-python.tar.gz) of {_CIFAR_URL}: "
    f"extract it and pass the '{_CIFAR100_DIR}' folder, or the folder holding it, as root."
)

_CIFAR10_DESCR = """\
CIFAR-10 (Krizhevsky, 2009): 60,000 colour 32x32 images in 10 classes (airplane,
automobile, bird, cat, deer, dog, frog, horse, ship, truck), 50,000 for training and
10,000 for testing, 6,000 per class. Read from the python-version batches in {root}."""

_CIFAR100_DESCR = """\
CIFAR-100 (Krizhevsky, 2009): 60,000 colour 32x32 images, 50,000 for training and
10,000 for testing, labelled with 100 fine classes grouped into 20 coarse superclasses.
The labels here are the {labels} ones. Read from the python-version files in {root}."""


def _numpy_global(*modules: str, name: str) -> Callable[..., Any]:
    """Return ``name`` from the first of ``modules`` that can be imported."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name} in any of {modules}")


#: dtype kinds a CIFAR pickle may build: bool, integers and floats (no objects, no
#: structured or void types, whose items are not plain numbers).
_ARRAY_KINDS = "biuf"


def _checked_dtype(dtype: Any) -> np.dtype[Any]:
    if isinstance(dtype, _DtypeSpec):
        dtype = dtype.dtype
    dtype = np.dtype(dtype)
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(
            f"the pickle builds an array of dtype {dtype!r}; a CIFAR file holds only numbers"
        )
    return dtype


class _DtypeSpec:
    """What a pickle's ``numpy.dtype(...)`` builds: a checked dtype, not a real one.

    A pickled dtype is rebuilt in two steps, ``dtype(code)`` and then
    ``__setstate__(state)``, whose state may set fields, sizes and internal flags
    (e.g. "holds object references") on a plain numeric dtype; numpy trusts
    them, and a uint8 array flagged as holding references is unsafe to free.  So
    only the byte order of the state is applied, and any other value is refused.
    """

    def __init__(self, *args: Any) -> None:
        self.dtype = _checked_dtype(np.dtype(*args[:3]))

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) not in (8, 9):
            raise pickle.UnpicklingError("the pickle holds a malformed numpy dtype")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        plain = (
            order in ("<", ">", "=", "|")
            and state[2:5] == (None, None, None)
            and state[5] in (-1, self.dtype.itemsize)
            and state[6] in (-1, self.dtype.alignment)
            and state[7] == 0
            and (len(state) == 8 or state[8] is None)
        )
        if not plain:
            raise pickle.UnpicklingError(
                f"the pickle sets the numpy dtype {self.dtype!r} to the state {state!r}; "
                "a CIFAR file holds only plain numeric dtypes"
            )
        if order in ("<", ">"):  # "=" and "|" keep the native order
            self.dtype = self.dtype.newbyteorder("<" if order == "<" else ">")


class _BoundedArray(np.ndarray):
    """ndarray whose unpickling refuses arrays larger than the file they come from.

    A pickle only states an array's shape: without a bound, a few bytes can ask
    for a 10^12-element array.  Every array of a CIFAR pickle holds its data in
    the file, so an array can never need more bytes than the file has.
    """

    max_bytes = 0  # set on the subclass each unpickler makes

    def __new__(cls, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> _BoundedArray:
        _check_size(shape, dtype, cls.max_bytes)
        return super().__new__(cls, shape, dtype, *args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, data) or, older, without the version
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("the pickle holds a malformed numpy array")
        shape, dtype = state[-4], _checked_dtype(state[-3])
        _check_size(shape, dtype, type(self).max_bytes)
        super().__setstate__((*state[:-3], dtype, *state[-2:]))


def _check_size(shape: Any, dtype: Any, max_bytes: int) -> None:
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise pickle.UnpicklingError(f"the pickle builds an array of shape {shape!r}")
    n_bytes = math.prod(dims) * _checked_dtype(dtype).itemsize
    if n_bytes > max_bytes:
        raise pickle.UnpicklingError(
            f"the pickle asks for an array of shape {dims} ({n_bytes} bytes), more than "
            f"the {max_bytes} bytes of the whole file"
        )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds the objects a CIFAR batch holds.

    Pickle files can run arbitrary code when loaded; the CIFAR batches only hold
    dicts, lists, strings, bytes and numpy arrays, so every other global is refused.
    Arrays may only be of numbers, and no larger than the file (``max_bytes``).
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def __init__(self, file: BinaryIO, *, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._array = type("_BoundedArray", (_BoundedArray,), {"max_bytes": max_bytes})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"the pickle refers to '{module}.{name}', which a CIFAR batch never holds; "
                "refusing to load it (pickle files can run code)"
            )
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "ndarray":
            return self._array
        if name == "dtype":
            return _DtypeSpec
        leaf = module.rsplit(".", 1)[1]
        original = _numpy_global(f"numpy._core.{leaf}", f"numpy.core.{leaf}", name=name)
        if name == "_reconstruct":

            def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
                if subtype is not self._array:
                    raise pickle.UnpicklingError("the pickle rebuilds an array of another class")
                _check_size(shape, dtype, self._array.max_bytes)
                return original(subtype, shape, _checked_dtype(dtype))

            return reconstruct
        if name == "scalar":
            return lambda dtype, *args: original(_checked_dtype(dtype), *args)
        # _frombuffer(buffer, dtype, shape, order): a view of bytes already in the file
        return lambda buf, dtype, *args: original(buf, _checked_dtype(dtype), *args)


def _read_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle into a dict with ``str`` keys."""
    raw = path.read_bytes()
    try:
        obj = _load(io.BytesIO(raw), max_bytes=len(raw))
    except MemoryError as exc:
        raise ValueError(
            f"Could not read '{path}' as a CIFAR 'python version' pickle: it asks for more "
            "memory than this machine has"
        ) from exc
    except Exception as exc:  # unpickling untrusted bytes raises many types
        raise ValueError(
            f"Could not read '{path}' as a CIFAR 'python version' pickle: {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(
            f"'{path}' should hold a dict (a CIFAR 'python version' pickle); "
            f"it holds a {type(obj).__name__}."
        )
    return {
        (k.decode("latin1") if isinstance(k, bytes) else str(k)): (
            v.view(np.ndarray) if isinstance(v, np.ndarray) else v
        )
        for k, v in obj.items()
    }


def _load(f: BinaryIO, *, max_bytes: int) -> Any:
    # encoding="bytes" reads the Python 2 pickles of the original archives.
    return _CifarUnpickler(f, max_bytes=max_bytes, encoding="bytes").load()


def _get(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise ValueError(
            f"'{path}' has no '{key}' entry; it has {sorted(batch)}. "
            "Is it a CIFAR 'python version' file?"
        )
    return batch[key]


def _names(meta: dict[str, Any], key: str, path: Path, n_classes: int) -> list[str]:
    names = _get(meta, key, path)
    out = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    if len(out) != n_classes:
        raise ValueError(f"'{path}' lists {len(out)} names in '{key}'; expected {n_classes}.")
    return out


def _images_labels(
    batch: dict[str, Any], label_key: str, path: Path, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(_get(batch, "data", path))
    labels = np.asarray(_get(batch, label_key, path))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise ValueError(
            f"'{path}' should hold 'data' as a uint8 array of shape (n, 3072) (3 colour "
            f"planes of 32x32 pixels); it holds {data.dtype} data of shape {data.shape}."
        )
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(
            f"'{path}' holds {len(data)} images but its '{label_key}' has shape "
            f"{labels.shape}; expected ({len(data)},)."
        )
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes
    ):
        raise ValueError(f"'{path}' holds '{label_key}' outside 0..{n_classes - 1}.")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _resolve_dir(root: Path, folder: str, first_file: str, *, name: str, hint: str) -> Path:
    """Accept ``root`` as the extracted folder or as its parent."""
    if not root.is_dir():
        raise missing_root_error(root, name=name, expected=root / folder / first_file, hint=hint)
    for candidate in (root, root / folder):
        if (candidate / first_file).is_file():
            return candidate
    raise missing_file_error(
        root / folder / first_file,
        what=f"{name} file",
        hint=hint,
        alternative=root / first_file,
    )


def _require(directory: Path, filename: str, *, name: str, hint: str) -> Path:
    path = directory / filename
    if not path.is_file():
        raise missing_file_error(path, what=f"{name} file", hint=hint)
    return path


def load_cifar10(root: PathLike) -> Bunch:
    """Load CIFAR-10 from the "python version" pickle batches.

    Reads ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``
    from the ``cifar-10-batches-py`` folder extracted from ``cifar-10-python.tar.gz``.
    Nothing is downloaded. Only numpy arrays, lists and strings are unpickled: a
    file that refers to anything else is refused.

    Parameters
    ----------
    root : str or os.PathLike
        The extracted ``cifar-10-batches-py`` folder, or the folder holding it.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X_train : ndarray of shape (50000, 32, 32, 3), dtype uint8
            Training images, RGB, channels last.
        y_train : ndarray of shape (50000,), dtype int64
            Training labels, 0..9.
        X_test : ndarray of shape (10000, 32, 32, 3), dtype uint8
            Test images.
        y_test : ndarray of shape (10000,), dtype int64
            Test labels, 0..9.
        target_names : list of str
            The class names from ``batches.meta``: ``"airplane"``, ..., ``"truck"``.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the batch files is missing; the message names the file.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If a file is not a CIFAR-10 pickle batch.

    See Also
    --------
    load_cifar100 : The same reader for CIFAR-100.

    References
    ----------
    .. [1] A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
       technical report, University of Toronto, 2009.

    Examples
    --------
    >>> from ssad.datasets import load_cifar10
    >>> data = load_cifar10("~/data/cifar-10-batches-py")  # doctest: +SKIP
    >>> data.X_train.shape, data.target_names[0]  # doctest: +SKIP
    ((50000, 32, 32, 3), 'airplane')
    """
    root_path = as_path(root, func="load_cifar10")
    kw = {"name": "CIFAR-10", "hint": _CIFAR10_HINT}
    directory = _resolve_dir(root_path, _CIFAR10_DIR, "data_batch_1", **kw)
    train_files = [_require(directory, f"data_batch_{i}", **kw) for i in range(1, 6)]
    test_file = _require(directory, "test_batch", **kw)
    meta_file = _require(directory, "batches.meta", **kw)

    target_names = _names(_read_pickle(meta_file), "label_names", meta_file, 10)
    parts = [_images_labels(_read_pickle(p), "labels", p, 10) for p in train_files]
    X_test, y_test = _images_labels(_read_pickle(test_file), "labels", test_file, 10)
    X_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    logger.info(
        "Loaded CIFAR-10 from %s: %d training and %d test images.",
        directory,
        len(X_train),
        len(X_test),
    )
    return Bunch(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        target_names=target_names,
        DESCR=_CIFAR10_DESCR.format(root=directory),
    )


def load_cifar100(root: PathLike, labels: Literal["coarse", "fine"] = "coarse") -> Bunch:
    """Load CIFAR-100 from the "python version" pickle files.

    Reads ``train``, ``test`` and ``meta`` from the ``cifar-100-python`` folder
    extracted from ``cifar-100-python.tar.gz``. Nothing is downloaded. Only numpy
    arrays, lists and strings are unpickled: a file that refers to anything else is
    refused.

    Parameters
    ----------
    root : str or os.PathLike
        The extracted ``cifar-100-python`` folder, or the folder holding it.
    labels : {"coarse", "fine"}, default="coarse"
        Which labels to return: the 20 superclasses (the anomaly-detection papers'
        CIFAR-100 protocol) or the 100 classes.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X_train : ndarray of shape (50000, 32, 32, 3), dtype uint8
            Training images, RGB, channels last.
        y_train : ndarray of shape (50000,), dtype int64
            Training labels, 0..19 (coarse) or 0..99 (fine).
        X_test : ndarray of shape (10000, 32, 32, 3), dtype uint8
            Test images.
        y_test : ndarray of shape (10000,), dtype int64
            Test labels.
        target_names : list of str
            The 20 superclass or 100 class names from ``meta``.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the files is missing; the message names the file.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If ``labels`` is not "coarse" or "fine", or a file is not a CIFAR-100 pickle.

    See Also
    --------
    load_cifar10 : The same reader for CIFAR-10.

    Examples
    --------
    >>> from ssad.datasets import load_cifar100
    >>> data = load_cifar100("~/data", labels="coarse")  # doctest: +SKIP
    >>> len(data.target_names)  # doctest: +SKIP
    20
    """
    if labels not in ("coarse", "fine"):
        raise ValueError(
            "The 'labels' parameter of load_cifar100 must be a str among "
            f"{{'coarse', 'fine'}}. Got {labels!r} instead."
        )
    root_path = as_path(root, func="load_cifar100")
    kw = {"name": "CIFAR-100", "hint": _CIFAR100_HINT}
    directory = _resolve_dir(root_path, _CIFAR100_DIR, "train", **kw)
    train_file = _require(directory, "train", **kw)
    test_file = _require(directory, "test", **kw)
    meta_file = _require(directory, "meta", **kw)

    n_classes = 20 if labels == "coarse" else 100
    target_names = _names(_read_pickle(meta_file), f"{labels}_label_names", meta_file, n_classes)
    key = f"{labels}_labels"
    X_train, y_train = _images_labels(_read_pickle(train_file), key, train_file, n_classes)
    X_test, y_test = _images_labels(_read_pickle(test_file), key, test_file, n_classes)
    logger.info(
        "Loaded CIFAR-100 (%s labels) from %s: %d training and %d test images.",
        labels,
        directory,
        len(X_train),
        len(X_test),
    )
    return Bunch(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        target_names=target_names,
        DESCR=_CIFAR100_DESCR.format(labels=labels, root=directory),
    )
