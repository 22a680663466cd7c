"""Frozen timm backbones as scikit-learn transformers: images in, embeddings out."""

from __future__ import annotations

import logging
import numbers
import os
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ssad._images import ImageSet, Preprocessor, check_images
from ssad._persistence import TorchStateMixin
from ssad._training import seeded
from ssad.backbones import PRECISIONS, create_backbone, data_config
from ssad.base import DEVICE_CONSTRAINT, resolve_device
from ssad.features._embed import POOLINGS, backbone_features, embed_images, resolve_pooling

__all__ = ["DINOFeatures", "MAEFeatures", "TimmFeatures"]

logger = logging.getLogger(__name__)


class TimmFeatures(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, TorchStateMixin, BaseEstimator
):
    """Embeddings of images from a frozen timm backbone.

    A scikit-learn transformer: ``fit`` loads the model (it learns nothing
    from ``X``), ``transform`` maps images to a float32 ``(n, d)`` array, so
    it composes with the scorers in :mod:`ssad.scoring` in a
    :class:`~sklearn.pipeline.Pipeline`.

    Parameters
    ----------
    backbone : str
        A timm model name, with an optional pretrained tag
        (``"vit_small_patch16_224.dino"``).
    pretrained : bool, default=True
        Load the tag's pretrained weights (timm hub, or the local Hugging
        Face cache when offline).  Ignored when ``checkpoint_path`` is set.
    checkpoint_path : str or path-like, default=None
        Local weights file (.pth/.pt/.bin/.safetensors) to load instead.
    backbone_kwargs : dict, default=None
        Extra keyword arguments of :func:`timm.create_model`, e.g.
        ``{"patch_size": 4, "depth": 4}`` for a small ViT.  Images always
        reach the model as 3-channel RGB (grey images repeated), so
        ``in_chans`` must stay 3.
    pooling : {"auto", "cls", "mean", "cls+mean", "tokens"}, default="auto"
        How the output becomes one vector: the class token, the mean of the
        patch tokens (global average pooling for CNNs), both concatenated,
        every token flattened (the Gasoyan thesis' input to PCA; long
        vectors), or ``"auto"``: the class token when the model has one,
        else the mean.  See :data:`ssad.features.POOLINGS`.
    layers : list of int, default=None
        Pool the outputs of these blocks (negative = from the end) and
        concatenate them, instead of the final normalised output.  A
        non-empty list of ints within the model's blocks (a ValueError at
        ``fit`` otherwise).
    normalize : bool, default=False
        L2-normalise each embedding: the space of the detectors that score
        on the unit sphere (:class:`~ssad.ConvexMILDetector`,
        :class:`~ssad.SelfDistillNegDetector`), where Euclidean kNN ranks
        as cosine distance does.
    image_size : int or (int, int), default=None
        Model input size; default: the backbone's pretrained config.  Images
        are resized to it (no crop).
    batch_size : int, default=64
        Images per forward pass.
    num_workers : int, default=0
        Image files (inputs given as paths) are decoded and resized in this
        many :class:`torch.utils.data.DataLoader` worker processes, ahead of
        the model, while training and embedding; 0 decodes them in the
        calling process.  Arrays, tensors and PIL images are not affected.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Where the model runs; ``"auto"`` picks CUDA when available.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype; ``"auto"`` is bfloat16 on CUDA, float32 otherwise.
    random_state : int, RandomState or None, default=None
        Seeds the random initialisation of a model without pretrained
        weights (through a local generator; global RNGs are untouched), so
        ``pretrained=False`` features are reproducible.
    verbose : int, default=0
        Show a progress bar when > 0.

    Attributes
    ----------
    model_ : torch.nn.Module
        The backbone in eval mode, on ``device_``.
    device_ : torch.device
        The resolved device.
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation from the backbone's timm data config.
    n_features_out_ : int
        Embedding dimension.

    See Also
    --------
    DINOFeatures : defaults of the DINO ViT-S/16.
    MAEFeatures : defaults of the MAE ViT-B/16.
    ssad.scoring.GaussianScorer : a scorer to put behind it.

    Notes
    -----
    Features are computed by :func:`ssad.features.embed_images`, the one
    embedding loop of ssad, under :func:`torch.inference_mode` with the model
    in eval mode.  Accepted image forms are those of
    :func:`ssad._images.check_images`: uint8 or [0, 1] float arrays
    ``(n, H, W[, C])``, tensors ``(n, C, H, W)``, lists of PIL images or of
    file paths.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad import TimmFeatures
    >>> X = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> feats = TimmFeatures("test_vit", pretrained=False, image_size=32).fit(X)
    >>> feats.transform(X).shape
    (4, 64)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "backbone": [str],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "backbone_kwargs": [dict, None],
        "pooling": [StrOptions(set(POOLINGS))],
        "layers": [list, tuple, None],
        "normalize": ["boolean"],
        "image_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left")],
        "device": DEVICE_CONSTRAINT,
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str,
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        pooling: str = "auto",
        layers: list[int] | None = None,
        normalize: bool = False,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device = "auto",
        precision: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.backbone_kwargs = backbone_kwargs
        self.pooling = pooling
        self.layers = layers
        self.normalize = normalize
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    def _create(self, pretrained: bool, checkpoint_path: Any) -> nn.Module:
        return create_backbone(
            self.backbone,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            image_size=self.image_size,
            **(self.backbone_kwargs or {}),
        )

    def _build_modules(self) -> dict[str, nn.Module]:
        with torch.random.fork_rng(devices=[]):  # architecture only: leave the global RNG alone
            return {"model_": self._create(pretrained=False, checkpoint_path=None)}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> TimmFeatures:
        """Load the backbone; ``X`` is only validated.

        Parameters
        ----------
        X : images
            Any accepted image form.
        y : None
            Ignored.

        Returns
        -------
        self : TimmFeatures
            The fitted transformer.
        """
        images = check_images(X)
        self.device_ = resolve_device(self.device)
        with seeded(self.random_state, self.device_):
            model = self._create(self.pretrained, self.checkpoint_path)
        resolve_pooling(model, self.pooling)  # fail early on a pooling the model cannot do
        self.model_ = model.to(self.device_).eval()
        self.preprocessor_ = Preprocessor.from_data_config(data_config(model), self.image_size)
        _check_layers(self.layers)
        try:
            self.n_features_out_ = int(self._embed(images.subset([0]), progress=False).shape[1])
        except AssertionError as exc:  # timm's check of the block indices
            raise ValueError(
                f"layers={self.layers!r} does not fit {self.backbone!r}: {exc}"
            ) from exc
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embed images.

        Parameters
        ----------
        X : images
            Any accepted image form.

        Returns
        -------
        ndarray of shape (n_images, ``n_features_out_``), dtype float32
            The embeddings.
        """
        check_is_fitted(self)
        return self._embed(check_images(X), progress=self.verbose > 0)

    @property
    def _n_features_out(self) -> int:
        return self.n_features_out_

    def _embed(self, images: ImageSet, progress: bool) -> np.ndarray:
        layers = _check_layers(self.layers)
        return embed_images(
            images,
            lambda x: backbone_features(self.model_, x, self.pooling, layers),
            self.preprocessor_,
            batch_size=self.batch_size,
            device=self.device_,
            num_workers=self.num_workers,
            precision=self.precision,
            normalize=self.normalize,
            verbose=int(progress),
            desc=type(self).__name__,
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


class DINOFeatures(TimmFeatures):
    """Class-token embeddings of a self-supervised DINO ViT.

    :class:`TimmFeatures` with the model of the Gasoyan thesis: the DINO
    ViT-S/16 (``vit_small_patch16_224.dino``, 224 px input, ImageNet
    mean/std).  The default pooling is the 384-d class token DINO trains; the
    thesis flattens every output token (``pooling="tokens"``).

    Parameters
    ----------
    backbone : str, default="vit_small_patch16_224.dino"
        Any DINO checkpoint in timm works too, e.g. ``vit_base_patch16_224.dino``.
    pretrained, checkpoint_path, backbone_kwargs, pooling, layers, normalize, \
image_size, batch_size, num_workers, device, precision, random_state, verbose
        As in :class:`TimmFeatures`; ``pooling`` defaults to ``"cls"``, the
        representation DINO trains (the Gasoyan thesis flattens every token:
        ``pooling="tokens"``, see :func:`ssad.detectors.make_thesis_pipeline`).

    Attributes
    ----------
    model_, device_, preprocessor_, n_features_out_
        As in :class:`TimmFeatures`.

    See Also
    --------
    TimmFeatures, MAEFeatures

    References
    ----------
    .. [1] M. Caron et al., "Emerging Properties in Self-Supervised Vision
       Transformers", ICCV 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad import DINOFeatures
    >>> X = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    >>> DINOFeatures("test_vit", pretrained=False, image_size=32).fit_transform(X).shape
    (4, 64)
    """

    def __init__(
        self,
        backbone: str = "vit_small_patch16_224.dino",
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        pooling: str = "cls",
        layers: list[int] | None = None,
        normalize: bool = False,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device = "auto",
        precision: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            backbone,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            backbone_kwargs=backbone_kwargs,
            pooling=pooling,
            layers=layers,
            normalize=normalize,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )


class MAEFeatures(TimmFeatures):
    """Mean patch-token embeddings of a masked-autoencoder (MAE) ViT.

    :class:`TimmFeatures` with the MAE ViT-B/16 (``vit_base_patch16_224.mae``,
    768-d).  Pooling defaults to the mean of the patch tokens because MAE's
    pre-training never trains the class token.

    Parameters
    ----------
    backbone : str, default="vit_base_patch16_224.mae"
        Also ``vit_large_patch16_224.mae`` or ``vit_huge_patch14_224.mae``
        (the Gasoyan thesis' model).
    pretrained, checkpoint_path, backbone_kwargs, layers, normalize, image_size, \
batch_size, num_workers, device, precision, random_state, verbose
        As in :class:`TimmFeatures`.
    pooling : {"auto", "cls", "mean", "cls+mean", "tokens"}, default="mean"
        See above.

    Attributes
    ----------
    model_, device_, preprocessor_, n_features_out_
        As in :class:`TimmFeatures`.

    See Also
    --------
    TimmFeatures, DINOFeatures

    References
    ----------
    .. [1] K. He et al., "Masked Autoencoders Are Scalable Vision Learners",
       CVPR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad import MAEFeatures
    >>> X = np.random.default_rng(0).random((4, 32, 32, 3))
    >>> MAEFeatures("test_vit", pretrained=False, image_size=32).fit_transform(X).shape
    (4, 64)
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch16_224.mae",
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        pooling: str = "mean",
        layers: list[int] | None = None,
        normalize: bool = False,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        device: str | torch.device = "auto",
        precision: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            backbone,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            backbone_kwargs=backbone_kwargs,
            pooling=pooling,
            layers=layers,
            normalize=normalize,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )


def _check_layers(layers: Any) -> list[int] | None:
    """``layers`` as a list of ints, or a ValueError saying what was expected."""
    if layers is None:
        return None
    if len(layers) == 0 or not all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in layers
    ):
        raise ValueError(
            "The 'layers' parameter of TimmFeatures must be None or a non-empty list of ints "
            f"(block indices, negative from the end). Got {layers!r} instead."
        )
    return [int(i) for i in layers]
