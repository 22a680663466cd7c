"""Data-parallel scoring with Dask: a fitted detector scores a collection chunk by chunk.

:func:`score_dask` maps a fitted estimator's ``score_samples`` (or
``decision_function``, ``predict``) over the chunks of a Dask array of images
or the partitions of a Dask bag of images or image paths.  The estimator
travels to each worker once (as one task of the graph), and each chunk is
scored where it lies, on a ``dask.distributed`` cluster or with Dask's local
schedulers.  Dask is an optional dependency: ``pip install "ssad[dask]"``.

scikit-learn's Dask wrapper, ``dask_ml.wrappers.ParallelPostFit``, does the
same for ``predict`` and ``transform`` of 2-D arrays (it drops the feature
axis of each block); images have three or four axes and outlier detectors
score with ``score_samples``, hence this helper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["score_dask"]

_METHODS = {"score_samples": np.float64, "decision_function": np.float64, "predict": np.int64}


def _dask() -> Any:
    try:
        import dask
        import dask.array
        import dask.bag
    except ImportError as exc:  # pragma: no cover - exercised without dask installed
        raise ImportError(
            "score_dask needs Dask, which is not installed; install it with "
            "pip install 'ssad[dask]' (or pip install 'dask[distributed]')."
        ) from exc
    return dask


def _score_block(block: np.ndarray, estimator: Any, method: str) -> np.ndarray:
    """Scores of one chunk of a Dask array (images along axis 0)."""
    out: np.ndarray = getattr(estimator, method)(block)
    return out.astype(_METHODS[method], copy=False)


def _score_partition(items: Any, estimator: Any, method: str) -> list[Any]:
    """Scores of one partition of a Dask bag, as a list (one per image)."""
    items = list(items)
    if not items:
        return []
    X = np.stack(items) if all(isinstance(x, np.ndarray) for x in items) else items
    out: list[Any] = getattr(estimator, method)(X).tolist()
    return out


def score_dask(estimator: Any, images: Any, *, method: str = "score_samples") -> Any:
    """Score a Dask collection of images, chunk by chunk, with a fitted estimator.

    Parameters
    ----------
    estimator : fitted estimator
        Any fitted ssad detector, or a scikit-learn pipeline ending in one
        (e.g. ``make_pipeline(TimmFeatures(...), KNNScorer())``).  It is
        shipped to each worker once; it scores on its ``device_``.
    images : dask.array.Array or dask.bag.Bag
        A Dask array of images ``(n, H, W)`` or ``(n, H, W, C)`` (uint8 or
        floats in ``[0, 1]``, as :func:`ssad._images.check_images` accepts),
        chunked along the first axis (other axes are made single chunks);
        or a Dask bag whose items are image file paths, PIL images or
        ``(H, W[, C])`` arrays.
    method : {"score_samples", "decision_function", "predict"}, default="score_samples"
        The estimator's method applied to each chunk.

    Returns
    -------
    dask.array.Array or dask.bag.Bag
        Lazy results, one per image, in the order of ``images``: a 1-D Dask
        array (float64; int64 for ``"predict"``) chunked as ``images`` for an
        array, a bag with the partitions of ``images`` for a bag.  Call
        ``.compute()`` to get them.

    Raises
    ------
    ImportError
        If Dask is not installed.
    ValueError
        If ``method`` is unknown or ``images`` is a Dask array with other
        than 3 or 4 axes.
    TypeError
        If ``images`` is not a Dask array or bag.
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.

    Notes
    -----
    Each chunk is scored by one call of ``method``, so chunks of a few
    hundred images keep the model busy; within a chunk the estimator's own
    ``batch_size`` and ``num_workers`` apply.  Results equal those of
    ``getattr(estimator, method)`` on the whole collection.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from ssad import KNNScorer
    >>> from ssad.features import PixelFeatures
    >>> from sklearn.pipeline import make_pipeline
    >>> from ssad.parallel import score_dask
    >>> X = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    >>> model = make_pipeline(PixelFeatures(), KNNScorer()).fit(X)
    >>> scores = score_dask(model, da.from_array(X, chunks=(5, 8, 8)))
    >>> np.allclose(scores.compute(), model.score_samples(X))
    True
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}. Got {method!r} instead.")
    check_is_fitted(estimator)
    dask = _dask()
    shipped = dask.delayed(estimator, pure=True)  # one task: each worker receives it once
    if isinstance(images, dask.array.Array):
        if images.ndim not in (3, 4):
            raise ValueError(
                "images must be a Dask array of shape (n, H, W) or (n, H, W, C); got "
                f"{images.ndim} dimension(s) with shape {images.shape}."
            )
        images = images.rechunk({axis: -1 for axis in range(1, images.ndim)})
        dtype = _METHODS[method]
        return images.map_blocks(
            _score_block,
            shipped,
            method,
            drop_axis=list(range(1, images.ndim)),
            dtype=dtype,
            meta=np.empty((0,), dtype=dtype),
        )
    if isinstance(images, dask.bag.Bag):
        return images.map_partitions(_score_partition, shipped, method)
    raise TypeError(
        "images must be a dask.array.Array or a dask.bag.Bag; got an object of type "
        f"{type(images).__name__}. Score in-memory images with the estimator itself."
    )
