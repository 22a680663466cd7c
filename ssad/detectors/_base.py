"""The skeleton every deep image detector shares on top of :class:`ssad.base.BaseDetector`."""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ssad import _distributed
from ssad._images import ImageSet, Preprocessor, check_images
from ssad._persistence import TorchStateMixin
from ssad._training import batchnorm_layers, seeded
from ssad.backbones import PRECISIONS
from ssad.base import DEVICE_CONSTRAINT, BaseDetector, resolve_device
from ssad.features import TimmFeatures, embed_images

__all__ = ["ImageDetector"]


class ImageDetector(TorchStateMixin, BaseDetector):
    """A :class:`~ssad.base.BaseDetector` on images: network -> embeddings -> scorer.

    ``fit(X, **fit_params)`` validates the images, resolves ``device_``, and
    inside one seeded block (:func:`ssad._training.seeded`) calls the
    subclass's ``_fit_model(X, rng, **fit_params)``, which builds and trains
    the networks and sets ``preprocessor_``; the training images are then
    embedded by the one embedder (:func:`ssad.features.embed_images` over
    ``_embed_batch``) and ``scorer_`` (from ``_make_scorer``) is fitted on
    the embeddings.  ``score_samples`` and ``transform`` go through the same
    embedder.  A subclass implements:

    ``_fit_model(X, rng, **fit_params) -> None``
        build and train; the names of the keyword arguments are the fit
        parameters the detector accepts (e.g. ``X_aux``);
    ``_embed_batch(x) -> Tensor (b, d)``
        embeddings of a model-ready batch (called under inference mode);
    ``_make_scorer() -> BaseDetector``
        an unfitted 2-D scorer (:mod:`ssad.scoring`);
    ``_build_modules() -> dict``
        the fitted modules' architecture, for unpickling.

    A detector with a spatial representation also implements
    ``_has_anomaly_map() -> bool`` (True) and ``_map_batch(x) -> Tensor (b, h,
    w)``, anomaly scores on its patch grid; :meth:`anomaly_map` then runs it
    through the embedder, upsamples the grids to the input resolution and
    smooths them.  A detector whose scorer is not a 2-D scorer on image
    embeddings overrides ``_fit_scorer`` and ``_score_samples``
    (:class:`~ssad.PatchCoreDetector`: a memory bank of patch features).

    The parameters every deep detector shares (backbone, weights, input size,
    batch size, loader workers, device, precision, seed, verbosity) are
    validated here.

    Under ``torchrun --nproc_per_node=N`` ``fit`` joins the process group
    (:func:`ssad._distributed.init_from_env`), trains data-parallel
    (:func:`ssad._training.train`) and records the number of processes in
    ``world_size_`` (1 without ``torchrun``); every process then embeds the
    training images and fits the same scorer, so each ends with the same
    fitted detector.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "backbone": [str],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "image_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left")],
        "device": DEVICE_CONSTRAINT,
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    #: L2-normalise the embeddings the scorer sees (set by detectors that score on the sphere).
    _normalize_embeddings = False

    # -- subclass hooks ------------------------------------------------------------------
    def _fit_model(self, X: ImageSet, rng: np.random.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    def _embed_batch(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _make_scorer(self) -> BaseDetector:  # pragma: no cover
        raise NotImplementedError

    def _min_train_images(self) -> int:
        """Fewest training images the detector (and its scorer) can fit on."""
        return 2

    def _has_anomaly_map(self) -> bool:
        """Whether the detector, with its parameters, has a spatial representation."""
        return False

    def _map_batch(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- the skeleton ----------------------------------------------------------------------
    def _validate_input(self, X: Any, *, reset: bool) -> ImageSet:
        return check_images(X)

    def _fit(self, X: ImageSet, **fit_params: Any) -> np.ndarray:
        accepted = [
            name
            for name, p in inspect.signature(self._fit_model).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        unknown = sorted(set(fit_params) - set(accepted))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.fit got unexpected fit parameter(s) {unknown}; "
                f"it accepts {accepted or 'none'}."
            )
        n_min = self._min_train_images()
        if len(X) < n_min:
            raise ValueError(
                f"{type(self).__name__} needs at least {n_min} training images with these "
                f"parameters; got {len(X)}."
            )
        _distributed.init_from_env()  # under torchrun: join the process group
        self.world_size_ = _distributed.world_size()
        self.device_ = resolve_device(self.device)
        with seeded(self.random_state, self.device_) as seed:
            rng = np.random.default_rng(seed)
            self._fit_model(X, rng, **fit_params)
            return self._fit_scorer(X, rng)

    def _fit_scorer(self, X: ImageSet, rng: np.random.Generator) -> np.ndarray:
        """Fit ``scorer_`` on the embeddings of the training images; the training scores."""
        self.scorer_ = self._make_scorer().fit(self._embed(X, "embed"))
        # the scorer's own training scores (leave-one-out for kNN) set the threshold
        train_scores: np.ndarray = self.scorer_.train_scores_
        return train_scores

    def _embed(
        self,
        images: ImageSet,
        desc: str,
        fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> np.ndarray:
        """``fn`` (default ``_embed_batch``) over the images, through the one embedder."""
        return embed_images(
            images,
            fn or self._embed_batch,
            self.preprocessor_,
            batch_size=self.batch_size,
            device=self.device_,
            precision=self.precision,
            normalize=self._normalize_embeddings,
            num_workers=self.num_workers,
            verbose=self.verbose,
            desc=f"{type(self).__name__} {desc}",
        )

    def _score_samples(self, X: ImageSet) -> np.ndarray:
        scores: np.ndarray = self.scorer_.score_samples(self._embed(X, "score"))
        return scores

    def transform(self, X: Any) -> np.ndarray:
        """The embeddings of the images: what ``scorer_`` scores.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts.

        Returns
        -------
        ndarray of shape (n_images, n_features), dtype float32
            One row per image.
        """
        check_is_fitted(self)
        return self._embed(self._validate_input(X, reset=False), "embed")

    # -- anomaly maps ----------------------------------------------------------------------
    def _check_anomaly_map(self) -> bool:
        if not self._has_anomaly_map():
            raise AttributeError(
                f"{type(self).__name__} with these parameters has no spatial representation, "
                "so no anomaly_map (see the class documentation)."
            )
        return True

    def _images_per_chunk(self) -> int:
        """Images whose maps are computed at once (bounds the memory of ``anomaly_map``)."""
        return int(self.batch_size)

    def _grid_maps(self, images: ImageSet) -> np.ndarray:
        """Anomaly scores ``(n, h, w)`` on the patch grid (higher = more anomalous)."""
        return self._embed(images, "map", self._map_batch)

    @available_if(_check_anomaly_map)
    def anomaly_map(self, X: Any, *, sigma: float | None = 4.0) -> np.ndarray:
        """Per-pixel anomaly scores at the resolution of the input images.

        The detector's scores on its patch grid are upsampled bilinearly to
        each image's size and smoothed by a Gaussian.  Only detectors with a
        spatial representation have this method (``hasattr(det,
        "anomaly_map")`` tells); see the detector's documentation for what its
        map measures.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts, all of one
            size.
        sigma : float or None, default=4.0
            Standard deviation of the Gaussian smoothing, in pixels of the
            model input (``preprocessor_.size``; scaled to the input
            resolution), as PatchCore smooths its maps (sigma 4 at 224
            pixels).  ``None`` or 0: no smoothing.

        Returns
        -------
        ndarray of shape (n_images, height, width), dtype float32
            Higher = more anomalous (the opposite orientation of
            ``score_samples``).

        Raises
        ------
        ValueError
            If the images differ in size, or ``sigma`` is negative.
        """
        check_is_fitted(self)
        if sigma is not None and (
            isinstance(sigma, bool)
            or not isinstance(sigma, numbers.Real)
            or not math.isfinite(sigma)
            or sigma < 0
        ):
            raise ValueError(
                f"The 'sigma' parameter of anomaly_map must be None or a finite float >= 0. "
                f"Got {sigma!r} instead."
            )
        images = self._validate_input(X, reset=False)
        height, width = images.common_size()
        out = np.empty((len(images), height, width), dtype=np.float32)
        step = self._images_per_chunk()
        for start in range(0, len(images), step):
            chunk = images.subset(np.arange(start, min(start + step, len(images))))
            grids = torch.from_numpy(np.ascontiguousarray(self._grid_maps(chunk)))
            maps = F.interpolate(
                grids[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
            )[:, 0].numpy()
            if sigma:
                h_in, w_in = self.preprocessor_.size
                spread = (0.0, sigma * height / h_in, sigma * width / w_in)
                maps = gaussian_filter(maps, sigma=spread)
            out[start : start + len(maps)] = maps
        return out

    # -- shared pieces -----------------------------------------------------------------------
    def _starts_pretrained(self) -> bool:
        """Whether the backbone starts from pretrained weights."""
        return bool(self.pretrained or self.checkpoint_path is not None)

    def _frozen_batchnorm(self, backbone: nn.Module) -> list[nn.Module]:
        """The BatchNorm layers of ``backbone`` to keep in eval mode while training.

        ``freeze_batchnorm="auto"`` freezes them when the backbone starts from
        pretrained weights: their running statistics describe the weights'
        training data, and re-estimating them on augmented views of a few
        images changes every embedding (tens of AUROC points with ImageNet
        EfficientNet-Lite0 even at a learning rate of 1e-12).
        """
        setting = getattr(self, "freeze_batchnorm", "auto")
        freeze = self._starts_pretrained() if setting == "auto" else bool(setting)
        return batchnorm_layers(backbone) if freeze else []

    def _preprocessor(self, config: dict[str, Any]) -> Preprocessor:
        return Preprocessor.from_data_config(config, self.image_size)

    def frozen_features(self) -> TimmFeatures:
        """Features of this detector's backbone *before* training.

        The same backbone, starting weights (pretrained, ``checkpoint_path``
        or the random initialisation of ``random_state``), image size and
        pooling, untrained: the input of the ``knn-frozen`` baseline, which
        answers whether the detector's training helps.

        Returns
        -------
        TimmFeatures
            An unfitted transformer.
        """
        return TimmFeatures(
            self.backbone,
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            backbone_kwargs=getattr(self, "backbone_kwargs", None),
            pooling="auto",
            image_size=self.image_size,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device,
            precision=self.precision,
            random_state=self.random_state,
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags
