"""Evaluation protocols of the papers: generators of :class:`Split` index splits over labels.

A protocol never touches images; :func:`ssad.benchmarks.evaluate` applies its splits to them.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_random_state

__all__ = (
    "Split contaminated_splits dataset_vs_dataset leave_one_out_splits one_class_splits".split()
)


@dataclass(frozen=True, eq=False)
class Split:
    """One train/test split of a protocol.

    Parameters
    ----------
    name : str
        Human-readable name, e.g. ``"class 3: Dress"``.
    train_idx : ndarray of shape (n_fit,), dtype int64
        Indices into the training set of the images to fit on.
    test_idx : ndarray of shape (n_score,), dtype int64
        Indices into the test set of the images to score.
    is_anomaly : ndarray of shape (n_score,), dtype bool
        Whether each image of ``test_idx`` is an anomaly (the positive class
        of AUROC and average precision).
    normal_classes : tuple of int, default=()
        The labels treated as normal (empty for :func:`dataset_vs_dataset`).
    train_is_anomaly : ndarray of shape (n_fit,), dtype bool, default=None
        Which images of ``train_idx`` are not of ``normal_classes`` (the unlabeled
        contamination of :func:`contaminated_splits`); None without any.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import one_class_splits
    >>> split = next(one_class_splits(np.array([0, 1, 0]), np.array([1, 0])))
    >>> split.name, split.train_idx.tolist(), split.is_anomaly.tolist()
    ('class 0', [0, 2], [True, False])
    """

    name: str
    train_idx: np.ndarray = field(repr=False)
    test_idx: np.ndarray = field(repr=False)
    is_anomaly: np.ndarray = field(repr=False)
    normal_classes: tuple[int, ...] = ()
    train_is_anomaly: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_train_anomalies(self) -> int:
        """Number of training images of the split that are anomalies (contamination)."""
        return 0 if self.train_is_anomaly is None else int(np.count_nonzero(self.train_is_anomaly))

    @property
    def n_train(self) -> int:
        """Number of training images of the split."""
        return int(self.train_idx.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test images of the split."""
        return int(self.test_idx.shape[0])

    @property
    def n_anomalies(self) -> int:
        """Number of anomalous test images of the split."""
        return int(np.count_nonzero(self.is_anomaly))


def _check_labels(y_train: object, y_test: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both label arrays, checked, and the indices of the test set."""
    arrays = []
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        arr = np.asarray(y)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array of class labels; got shape {arr.shape}.")
        if arr.size == 0:
            raise ValueError(f"{name} holds 0 labels; at least 1 is required.")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must hold integer class labels; got dtype {arr.dtype}.")
        arrays.append(arr)
    return arrays[0], arrays[1], np.arange(arrays[1].shape[0], dtype=np.int64)


def _check_classes(classes: Sequence[int] | np.ndarray | None, y_train: np.ndarray) -> list[int]:
    present = np.unique(y_train)
    if classes is None:
        return [int(c) for c in present]
    out = [int(c) for c in np.asarray(classes).reshape(-1)]
    missing = sorted(set(out) - {int(c) for c in present})
    if missing:
        raise ValueError(
            f"classes {missing} have no training image; the training labels are "
            f"{[int(c) for c in present]}."
        )
    if len(set(out)) != len(out):
        raise ValueError(f"classes must not repeat a class; got {out}.")
    return out


def _class_name(c: int, target_names: Sequence[str] | None) -> str:
    if target_names is not None and 0 <= c < len(target_names):
        return f"class {c}: {target_names[c]}"
    return f"class {c}"


def _checked(split: Split) -> Split:
    if split.n_train == 0:
        raise ValueError(f"Split {split.name!r} has no training image.")
    if split.is_anomaly.all() or not split.is_anomaly.any():
        kind = "anomalous" if split.is_anomaly.all() else "normal"
        raise ValueError(
            f"Split {split.name!r}: every test image is {kind}, so AUROC is undefined; the test "
            "set needs both normal and anomalous images."
        )
    return split


def one_class_splits(
    y_train: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[int] | np.ndarray | None = None,
    *,
    target_names: Sequence[str] | None = None,
) -> Iterator[Split]:
    """One-class ("unimodal") protocol: fit on one class, all other classes are anomalies.

    For each class ``c``: fit on the training images of ``c``; score the whole
    test set; anomalous = ``y_test != c`` (Transformaly table 1, ConvexMIL,
    SSLSDN).

    Parameters
    ----------
    y_train : array-like of shape (n_train,)
        Integer class labels of the training images.
    y_test : array-like of shape (n_test,)
        Integer class labels of the test images.
    classes : sequence of int, default=None
        The normal classes to run, one split each; default: every class in
        ``y_train``, in increasing order.
    target_names : sequence of str, default=None
        Class names, indexed by label, for the split names.

    Yields
    ------
    Split
        One split per class.

    Raises
    ------
    ValueError
        If a class has no training image, or a split's test set is all normal
        or all anomalous.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import one_class_splits
    >>> y_train, y_test = np.array([0, 1, 2, 0]), np.array([2, 0, 1])
    >>> for s in one_class_splits(y_train, y_test, target_names=["a", "b", "c"]):
    ...     print(s.name, s.train_idx.tolist(), s.is_anomaly.tolist())
    class 0: a [0, 3] [True, False, True]
    class 1: b [1] [True, True, False]
    class 2: c [2] [False, True, True]
    """
    # the contaminated protocol without contamination
    yield from contaminated_splits(y_train, y_test, 0.0, classes, 0, target_names=target_names)


def leave_one_out_splits(
    y_train: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[int] | np.ndarray | None = None,
    *,
    target_names: Sequence[str] | None = None,
) -> Iterator[Split]:
    """Leave-one-class-out ("multimodal") protocol: one class is the anomaly.

    For each class ``c``: fit on the training images of every class but ``c``;
    score the whole test set; anomalous = ``y_test == c`` (Transformaly
    table 5, Gasoyan thesis).

    Parameters
    ----------
    y_train : array-like of shape (n_train,)
        Integer class labels of the training images.
    y_test : array-like of shape (n_test,)
        Integer class labels of the test images.
    classes : sequence of int, default=None
        The classes to hold out, one split each; default: every class in
        ``y_train``.  The normal classes of a split are all the other classes
        of ``y_train``, not only those listed.
    target_names : sequence of str, default=None
        Class names, indexed by label, for the split names.

    Yields
    ------
    Split
        One split per held-out class; its name is that of the held-out class.

    Raises
    ------
    ValueError
        If a class has no training image, or a split's training set or the
        normal or anomalous part of its test set is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import leave_one_out_splits
    >>> y_train, y_test = np.array([0, 1, 2, 0]), np.array([2, 0, 1])
    >>> s = next(leave_one_out_splits(y_train, y_test))
    >>> s.name, s.train_idx.tolist(), s.is_anomaly.tolist(), s.normal_classes
    ('class 0', [1, 2], [False, True, False], (1, 2))
    """
    y_train, y_test, test_idx = _check_labels(y_train, y_test)
    all_classes = [int(c) for c in np.unique(y_train)]
    for c in _check_classes(classes, y_train):
        name = _class_name(c, target_names)
        train_idx = np.flatnonzero(y_train != c).astype(np.int64)
        normal = tuple(k for k in all_classes if k != c)
        yield _checked(Split(name, train_idx, test_idx, y_test == c, normal_classes=normal))


def contaminated_splits(
    y_train: np.ndarray,
    y_test: np.ndarray,
    ratio: float = 0.05,
    classes: Sequence[int] | np.ndarray | None = None,
    random_state: int | np.random.RandomState | None = None,
    *,
    target_names: Sequence[str] | None = None,
) -> Iterator[Split]:
    """Contaminated one-class protocol: the training set holds unlabeled anomalies.

    As :func:`one_class_splits`, but the training set of class ``c`` also
    holds ``m`` images drawn at random, without replacement, from the training
    images of the other classes, so that they make up a fraction ``ratio`` of
    it: ``m = round(ratio * n_c / (1 - ratio))`` for the ``n_c`` training
    images of ``c`` (ConvexMIL tables 1-2, ``gamma`` in {0.02, 0.05, 0.10}).
    The test set and its labels are those of the one-class protocol.

    Parameters
    ----------
    y_train : array-like of shape (n_train,)
        Integer class labels of the training images.
    y_test : array-like of shape (n_test,)
        Integer class labels of the test images.
    ratio : float in [0, 1), default=0.05
        Share of the training set made of images of other classes.
    classes : sequence of int, default=None
        The normal classes to run, one split each; default: every class in
        ``y_train``.
    random_state : int, RandomState instance or None, default=None
        Draws the contaminating images.  With an int, the draw of class ``c``
        depends only on ``(random_state, c)``, so a split is the same whichever
        other classes are run.  Global random generators are never seeded.
    target_names : sequence of str, default=None
        Class names, indexed by label, for the split names.

    Yields
    ------
    Split
        One split per class; ``n_train_anomalies`` is ``m``.

    Raises
    ------
    ValueError
        If ``ratio`` is outside [0, 1), there are fewer images of other classes
        than ``m``, or a split is degenerate (see :func:`one_class_splits`).

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.benchmarks import contaminated_splits
    >>> y = np.repeat([0, 1, 2], 100)
    >>> s = next(contaminated_splits(y, y, ratio=0.1, random_state=0))
    >>> s.n_train, s.n_train_anomalies
    (111, 11)
    """
    y_train, y_test, test_idx = _check_labels(y_train, y_test)
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 <= ratio < 1:
        raise ValueError(
            "The 'ratio' parameter of contaminated_splits must be a float in the range "
            f"[0, 1). Got {ratio!r} instead."
        )
    ratio = float(ratio)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        base_seed = int(random_state)
    else:
        base_seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    for c in _check_classes(classes, y_train):
        name = _class_name(c, target_names)
        own = np.flatnonzero(y_train == c)
        others = np.flatnonzero(y_train != c)
        n_extra = round(ratio * own.shape[0] / (1.0 - ratio))
        if n_extra > others.shape[0]:
            raise ValueError(
                f"Split {name!r}: ratio={ratio} needs {n_extra} training images of other "
                f"classes, but only {others.shape[0]} exist."
            )
        rng = np.random.default_rng([base_seed, c])
        extra = rng.choice(others, size=n_extra, replace=False)
        train_idx = np.sort(np.concatenate([own, extra])).astype(np.int64)
        yield _checked(Split(name, train_idx, test_idx, y_test != c, (c,), y_train[train_idx] != c))


def dataset_vs_dataset(
    n_train: int,
    n_test_in: int,
    n_test_out: int,
    *,
    name: str = "in-distribution vs out-of-distribution",
) -> Iterator[Split]:
    """Dataset-vs-dataset protocol: another dataset's test images are the anomalies.

    Fit on every in-distribution training image; score the in-distribution
    test images followed by the out-of-distribution test images; anomalous =
    out-of-distribution (SSLSDN table 1, e.g. CIFAR-10 vs SVHN).  The indices
    address the *concatenated* test set ``[X_test_in; X_test_out]`` (in that
    order), e.g. ``np.concatenate([X_test_in, X_test_out])`` when both hold
    images of the same shape.

    Parameters
    ----------
    n_train : int
        Number of in-distribution training images.
    n_test_in : int
        Number of in-distribution test images.
    n_test_out : int
        Number of out-of-distribution test images.
    name : str, default="in-distribution vs out-of-distribution"
        Name of the split, e.g. ``"cifar10 vs svhn"``.

    Yields
    ------
    Split
        A single split.

    Raises
    ------
    ValueError
        If a count is not a positive int.

    Examples
    --------
    >>> from ssad.benchmarks import dataset_vs_dataset
    >>> (s,) = dataset_vs_dataset(4, 2, 3, name="a vs b")
    >>> s.name, s.train_idx.tolist(), s.test_idx.tolist(), s.is_anomaly.tolist()
    ('a vs b', [0, 1, 2, 3], [0, 1, 2, 3, 4], [False, False, True, True, True])
    """
    counts = {"n_train": n_train, "n_test_in": n_test_in, "n_test_out": n_test_out}
    for label, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(
                f"The '{label}' parameter of dataset_vs_dataset must be an int in the range "
                f"[1, inf). Got {value!r} instead."
            )
    train_idx = np.arange(int(n_train), dtype=np.int64)
    test_idx = np.arange(int(n_test_in) + int(n_test_out), dtype=np.int64)
    is_anomaly = np.arange(test_idx.shape[0]) >= int(n_test_in)
    yield Split(name, train_idx, test_idx, is_anomaly)
