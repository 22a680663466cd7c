"""Raw pixels as features: the input of the pixel baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from ssad._images import check_images

__all__ = ["PixelFeatures"]


class PixelFeatures(TransformerMixin, BaseEstimator):
    """Raw pixels as features: each image flattened to one row of floats in [0, 1].

    The input of the raw-pixel baselines: uint8 images are divided by 255,
    float images (already in [0, 1]) are kept, and each image becomes a row of
    ``H * W * C`` values.  It learns nothing.

    Parameters
    ----------
    dtype : {"float32", "float64"}, default="float32"
        dtype of the output; float32 is what faiss and IsolationForest compute in.

    Attributes
    ----------
    n_features_out_ : int
        Length of a row: the number of pixel values of an image.

    See Also
    --------
    ssad.features.TimmFeatures : Embeddings from a pretrained network instead.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.features import PixelFeatures
    >>> X = np.full((2, 4, 4), 255, dtype=np.uint8)
    >>> PixelFeatures().fit_transform(X).shape
    (2, 16)
    >>> float(PixelFeatures().fit_transform(X).max())
    1.0
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "dtype": [StrOptions({"float32", "float64"})],
    }

    def __init__(self, *, dtype: str = "float32") -> None:
        self.dtype = dtype

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> PixelFeatures:
        """Record the row length; ``X`` is only validated.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts.
        y : None
            Ignored.

        Returns
        -------
        self : PixelFeatures
            The fitted transformer.
        """
        self.n_features_out_ = int(self._flatten(X).shape[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Flatten images to rows of pixel values in [0, 1].

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts; all of one size.

        Returns
        -------
        ndarray of shape (n_images, ``n_features_out_``)
            The pixel values.
        """
        check_is_fitted(self)
        out = self._flatten(X)
        if out.shape[1] != self.n_features_out_:
            raise ValueError(
                f"X has {out.shape[1]} pixel values per image, but PixelFeatures was fitted "
                f"on images with {self.n_features_out_}."
            )
        return out

    def _flatten(self, X: Any) -> np.ndarray:
        images = check_images(X)
        if images.kind == "array":
            data = images.data
        elif images.kind == "tensor":
            data = images.data.cpu().numpy()
        else:  # PIL images or files: loaded as (n, 3, H, W) floats in [0, 1]
            data = images.load(slice(None)).numpy()
        flat = np.asarray(data).reshape(len(images), -1)
        if flat.dtype == np.uint8:
            return flat.astype(self.dtype) / np.asarray(255.0, dtype=self.dtype)
        return flat.astype(self.dtype, copy=False)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
