"""PatchCore: a coreset memory bank of locally aware patch features, nearest-neighbour search."""

from __future__ import annotations

import logging
import numbers
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ssad._images import ImageSet
from ssad.backbones import create_backbone, data_config
from ssad.detectors._base import ImageDetector
from ssad.features import feature_grids
from ssad.scoring import greedy_coreset
from ssad.scoring._knn import KNNScorer, index_rows

__all__ = ["PatchCoreDetector"]

logger = logging.getLogger(__name__)


class PatchCoreDetector(ImageDetector):
    """PatchCore: nearest-neighbour search in a coreset of normal patch features.

    Every training image is cut into *locally aware patch features*: the
    outputs of intermediate stages (``layers``) of a frozen pretrained timm
    backbone, each averaged over a ``neighborhood_size`` x
    ``neighborhood_size`` neighbourhood, upsampled to the finest of their
    grids and concatenated (``n_features`` wide at most: the channels of
    each stage are average-pooled to an equal share of it).  A greedy
    k-center *coreset* of all training patches (:func:`~ssad.scoring.greedy_coreset`,
    on a random projection to ``projection_dim`` dimensions) becomes the
    memory bank: ``coreset_ratio`` of the patches, or ``coreset_size`` of them.
    A test patch's anomaly score is its Euclidean distance to the nearest
    patch of the memory bank (a faiss search, exact by default; see
    ``index``), and

    ``score_samples = -max over the image's patches of that distance``

    (higher = more normal), optionally reweighted as in the paper's eq. 7
    (``n_reweight_neighbors``).  :meth:`anomaly_map` is the grid of patch
    distances, upsampled to the input resolution and smoothed.

    Memory does not grow with the training set beyond the coreset: the
    training images are embedded in chunks, and whenever the patches held
    would exceed ``pool_size`` they are reduced to the coreset size
    (merge-and-reduce), so at most ``max(pool_size, 2 * coreset size)``
    patch features (and their projections) are in memory during ``fit``,
    whatever the number of training images.  When every training patch fits
    in the pool, the coreset is the paper's single greedy pass.

    Parameters
    ----------
    backbone : str, default="wide_resnet50_2.tv_in1k"
        timm backbone.  The default is the paper's WideResNet-50 with the
        torchvision ImageNet weights; any timm model with
        ``forward_intermediates`` works (CNNs, ViTs).
    pretrained : bool, default=True
        Load the backbone's pretrained weights (needs the network or the
        local Hugging Face cache; see :func:`ssad.backbones.create_backbone`).
    checkpoint_path : str or path-like, default=None
        Local weights file used instead of the hub, e.g.
        :func:`ssad.backbones.efficientnet_lite0_checkpoint` with
        ``backbone="tf_efficientnet_lite0"``, the offline ImageNet weights.
    layers : tuple of int, default=(2, 3)
        Stages whose outputs make the patch features, as indices of timm's
        ``forward_intermediates``: for ResNets 2 and 3 are ``layer2`` and
        ``layer3`` (the paper), for EfficientNets the stages at strides 8 and
        16, for ViTs block indices.
    neighborhood_size : int, default=3
        Side ``p`` of the neighbourhood each position is averaged over (odd;
        the paper: 3).
    n_features : int or None, default=1024
        Most features per patch (the paper: 1024).  The channels of each
        stage wider than ``n_features / len(layers)`` are average-pooled, in
        groups of neighbouring channels, to that width; ``None`` keeps every
        channel.
    coreset_ratio : float in (0, 1], default=0.1
        Share of the training patches kept in the memory bank (the paper's
        main setting: 10 %; 1 % loses little).  1.0 keeps every patch: a
        brute-force patch kNN.
    coreset_size : int or None, default=None
        Number of patches kept, whatever the number of training images (it
        replaces ``coreset_ratio``): the memory bank then has a fixed size.
    projection_dim : int or None, default=128
        Dimension of the random projection the greedy coreset search runs on
        (the paper: 128); ``None`` searches the features as they are.
    n_reweight_neighbors : int or None, default=None
        ``b`` of the paper's eq. 7: the image score is multiplied by
        ``1 - exp(d*) / sum_b exp(d_b)``, where ``d*`` is the distance of the
        image's most anomalous patch to its nearest bank patch ``m*`` and
        ``d_b`` its distances to the ``b`` bank patches nearest to ``m*``
        (``m*`` among them, so ``b >= 2``: with ``b = 1`` the weight is 0).
        ``None``: no reweighting, as in the authors' code.  A memory bank of
        a single patch is not reweighted.
    pool_size : int, default=65536
        Most patch features held at once during ``fit`` (unless the memory
        bank alone takes more than half of it) and most test patches
        searched at once.  Smaller pools use less memory and, on CPUs, make
        the coreset search faster (its data stay in cache); larger ones keep
        the paper's single greedy pass for larger training sets.
    calibration_size : int or None, default=None
        Training images whose scores against the final memory bank set
        ``offset_`` (``train_scores_``).  ``None`` scores every training
        image; when the training patches exceed ``pool_size``, ``fit`` then
        embeds the images of every chunk but the last a second time.  An int
        draws that many training images at random and reduces them last, so
        that their patch features are still in memory when the memory bank is
        final: up to one chunk of images (``pool_size`` patches, less the
        bank) needs no second forward pass.
    index : {"flat", "ivf", "hnsw", "auto"}, default="flat"
        The faiss index the memory bank is searched with, as in
        :class:`~ssad.scoring.KNNScorer` (with its defaults otherwise):
        ``"flat"`` is exact (the paper); ``"ivf"`` (an inverted file,
        compressed with 4-bit product codes on CPUs, candidates re-ranked
        by their exact distances) and ``"hnsw"`` (a graph) search
        approximately and much faster for large memory banks; ``"auto"``
        switches to ``"ivf"`` from
        :data:`~ssad.scoring.AUTO_IVF_MIN_SAMPLES` bank patches on.
    n_probe : int, default=16
        IVF cells searched per patch (faiss' ``nprobe``) with
        ``index="ivf"``; more is slower and closer to exact.
    batch_size : int, default=32
        Images per forward pass.
    num_workers : int, default=0
        With image files as input: worker processes that decode and resize
        them (a :class:`torch.utils.data.DataLoader`); 0 reads them in the
        main process.
    image_size : int or (int, int), default=None
        Model input size; default: the backbone's pretrained config (224 for
        the default).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``; see :class:`ssad.base.BaseDetector`.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Where the backbone and the coreset search run.  The nearest-neighbour
        search runs with faiss: on the GPU when the device is CUDA and the
        installed faiss has GPU support (a ``faiss-gpu`` package), else on
        the CPU.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype of the backbone; ``"auto"`` is bfloat16 on CUDA,
        float32 elsewhere.
    random_state : int, RandomState or None, default=None
        Seeds the coreset search (its first patch and its projection).
    verbose : int, default=0
        Progress bars when > 0.

    Attributes
    ----------
    backbone_ : torch.nn.Module
        The frozen backbone.
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation from the backbone's data config.
    grid_shape_ : tuple of int
        ``(h, w)``: the patch grid of one image.
    n_features_ : int
        Features per patch.
    memory_bank_ : ndarray of shape (n_bank, d), dtype float32
        The coreset of training patch features (``d = n_features_``).
    n_patches_fit_ : int
        Training patches the coreset was drawn from.
    device_ : torch.device
        The resolved device.
    offset_ : float
        Threshold on ``score_samples``.
    train_scores_ : ndarray of shape (n_calibration,)
        ``score_samples`` of the training images that set ``offset_``: all of
        them, or ``calibration_size`` drawn at random.
    calibration_indices_ : ndarray of shape (n_calibration,), dtype int64
        Positions in the training set of the images ``train_scores_`` scores.

    See Also
    --------
    ssad.scoring.greedy_coreset : The coreset search.
    ssad.TransformalyDetector : Another detector with anomaly maps.

    Notes
    -----
    Deviations from the reference code (github amazon-science/patchcore-inspection)
    and the paper:

    - Images are resized to the input size; the reference code resizes to
      256 pixels and centre-crops 224.
    - The neighbourhood average ignores the zero padding at the border (the
      reference code averages it in).  Pooling on each stage's own grid and
      then upsampling gives the same features as the reference code's
      upsampling of unfolded neighbourhoods (both steps are linear).  The
      channel pooling to ``n_features`` gives, for WideResNet-50 ``layer2``
      + ``layer3``, the 512 + 512 features the reference code's two
      average-pooling steps produce.
    - The greedy search starts from one random patch (the paper's
      Algorithm 1); the reference code starts from the mean distance to 10
      random patches.  Its projection is a Gaussian matrix (the reference
      code: a randomly initialised linear layer).
    - Training sets of more than ``pool_size`` patches are reduced chunk by
      chunk (merge-and-reduce, see above), not in one pass, so that memory
      stays bounded; each reduction is a greedy k-center pass over the
      current memory bank and the next chunk.  ``fit`` then embeds the
      training images of every chunk but the last a second time, for their
      scores against the final memory bank (``offset_``), unless
      ``calibration_size`` limits those scores to a random sample of images
      that are reduced last (the paper and the reference code set no
      threshold, so they have no such pass).
    - ``offset_`` comes from ``score_samples`` of the training images, whose
      patches are compared with a memory bank drawn from them: with
      ``coreset_ratio=1`` every training image scores 0 and ``predict`` flags
      every image that differs from the training set.  Set the threshold on
      held-out normal images where it matters.

    References
    ----------
    .. [1] K. Roth, L. Pemula, J. Zepeda, B. Schölkopf, T. Brox and P. Gehler,
       "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.

    Examples
    --------
    >>> from ssad import PatchCoreDetector
    >>> from ssad.datasets import make_local_defect_images
    >>> X, y, masks = make_local_defect_images(30, 4, image_size=32, random_state=0)
    >>> det = PatchCoreDetector("test_resnet", pretrained=False, image_size=64,
    ...                         random_state=0).fit(X[y == 0])
    >>> det.score_samples(X[-4:]).shape, det.memory_bank_.shape[1] == det.n_features_
    ((4,), True)
    >>> det.anomaly_map(X[-4:]).shape  # per pixel, higher = more anomalous
    (4, 32, 32)
    """

    _search: KNNScorer | None

    _parameter_constraints: dict[str, list[Any]] = {
        **ImageDetector._parameter_constraints,
        "layers": [tuple, list],
        "neighborhood_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_features": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "coreset_ratio": [Interval(numbers.Real, 0, 1, closed="right")],
        "coreset_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "projection_dim": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_reweight_neighbors": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "pool_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "calibration_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "index": [StrOptions({"auto", "flat", "ivf", "hnsw"})],
        "n_probe": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        layers: tuple[int, ...] = (2, 3),
        neighborhood_size: int = 3,
        n_features: int | None = 1024,
        coreset_ratio: float = 0.1,
        coreset_size: int | None = None,
        projection_dim: int | None = 128,
        n_reweight_neighbors: int | None = None,
        pool_size: int = 65536,
        calibration_size: int | None = None,
        index: str = "flat",
        n_probe: int = 16,
        batch_size: int = 32,
        num_workers: int = 0,
        image_size: int | tuple[int, int] | None = None,
        contamination: str | float = "auto",
        device: str | torch.device = "auto",
        precision: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.layers = layers
        self.neighborhood_size = neighborhood_size
        self.n_features = n_features
        self.coreset_ratio = coreset_ratio
        self.coreset_size = coreset_size
        self.projection_dim = projection_dim
        self.n_reweight_neighbors = n_reweight_neighbors
        self.pool_size = pool_size
        self.calibration_size = calibration_size
        self.index = index
        self.n_probe = n_probe
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # -- patch features --------------------------------------------------------------------
    def _build_modules(self) -> dict[str, nn.Module]:
        backbone = create_backbone(self.backbone, pretrained=False, image_size=self.image_size)
        return {"backbone_": backbone.requires_grad_(False)}

    def _embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Locally aware patch features ``(b, n_features_, h, w)`` of a model-ready batch."""
        grids = feature_grids(self.backbone_, x, self.layers)
        size = max((g.shape[-2:] for g in grids), key=lambda hw: hw[0] * hw[1])
        share = None if self.n_features is None else max(1, self.n_features // len(grids))
        p = self.neighborhood_size
        parts = []
        for grid in grids:
            g = F.avg_pool2d(grid, p, stride=1, padding=p // 2, count_include_pad=False)
            if g.shape[-2:] != size:
                g = F.interpolate(g, size=tuple(size), mode="bilinear", align_corners=False)
            b, c, h, w = g.shape
            if share is not None and c > share:  # average groups of neighbouring channels
                flat = g.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
                g = F.adaptive_avg_pool1d(flat, share).reshape(b, h, w, share).permute(0, 3, 1, 2)
            parts.append(g)
        return torch.cat(parts, dim=1)

    def _patches(self, images: ImageSet, desc: str) -> np.ndarray:
        """Patch features of the images, one row per patch ``(n * h * w, n_features_)``."""
        grids = self._embed(images, desc)
        return np.ascontiguousarray(grids.transpose(0, 2, 3, 1).reshape(-1, grids.shape[1]))

    def _images_per_chunk(self) -> int:
        return max(1, self.pool_size // int(np.prod(self.grid_shape_)))

    def _chunks(self, n: int, step: int) -> list[np.ndarray]:
        return [np.arange(start, min(start + step, n)) for start in range(0, n, step)]

    # -- memory bank -----------------------------------------------------------------------
    def _bank_search(self) -> KNNScorer:
        """The faiss index of the memory bank: built lazily, never pickled (a fixed
        seed draws the sample IVF cells are trained on, so a reloaded detector
        builds the same index)."""
        search: KNNScorer | None = getattr(self, "_search", None)
        if search is None:
            search = index_rows(
                self.memory_bank_,
                n_neighbors=1,
                index=self.index,
                n_probe=self.n_probe,
                device="auto" if self.device_.type == "cuda" else "cpu",
                random_state=0,
            )
            self._search = search
        return search

    def _image_scores(self, patches: np.ndarray, n_images: int) -> np.ndarray:
        """Anomaly score of each image (higher = more anomalous) from its patch features."""
        distances, nearest = self._bank_search().kneighbors(patches, 1)
        distances = distances.reshape(n_images, -1)
        rows = np.arange(n_images)
        worst = distances.argmax(axis=1)
        scores = distances[rows, worst]
        if self.n_reweight_neighbors is not None and len(self.memory_bank_) > 1:
            # paper eq. 7: the most anomalous patch m_test, its nearest bank patch m*, and the
            # b bank patches nearest to m* (m* among them)
            m_test = patches.reshape(n_images, -1, patches.shape[1])[rows, worst]
            m_star = nearest.reshape(n_images, -1)[rows, worst]
            b = min(self.n_reweight_neighbors, self.memory_bank_.shape[0])
            _, support = self._bank_search().kneighbors(self.memory_bank_[m_star], b)
            d_b = np.linalg.norm(self.memory_bank_[support] - m_test[:, None], axis=2)
            top = d_b.max(axis=1, keepdims=True)  # log-sum-exp, stable
            log_total = top[:, 0] + np.log(np.exp(d_b - top).sum(axis=1))
            scores = scores * (1.0 - np.exp(scores - log_total))
        return scores

    def _coreset_target(self, n_patches: int) -> int:
        if self.coreset_size is not None:
            return min(int(self.coreset_size), n_patches)
        return max(1, min(n_patches, int(self.coreset_ratio * n_patches)))

    # -- the contract ----------------------------------------------------------------------
    def _min_train_images(self) -> int:
        return 1

    def _fit_model(self, X: ImageSet, rng: np.random.Generator) -> None:
        if self.neighborhood_size % 2 == 0:
            raise ValueError(
                "The 'neighborhood_size' parameter of PatchCoreDetector must be an odd int "
                f"(the neighbourhood is centred on each position). Got {self.neighborhood_size!r}."
            )
        if not self.layers or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in self.layers
        ):
            raise ValueError(
                "The 'layers' parameter of PatchCoreDetector must be a non-empty tuple of int "
                f"stage indices, e.g. (2, 3). Got {self.layers!r} instead."
            )
        backbone = create_backbone(
            self.backbone,
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            image_size=self.image_size,
        )
        self.backbone_ = backbone.requires_grad_(False).to(self.device_).eval()
        self.preprocessor_ = self._preprocessor(data_config(backbone))
        probe = torch.zeros((1, 3, *self.preprocessor_.size), device=self.device_)
        with torch.no_grad():  # a probe of the grid shape
            shape = self._embed_batch(probe).shape
        self.n_features_ = int(shape[1])
        self.grid_shape_ = (int(shape[2]), int(shape[3]))

    def _n_train_scores(self, n_train: int) -> int:
        if self.calibration_size is None:
            return n_train
        return min(int(self.calibration_size), n_train)

    def _fit_scorer(self, X: ImageSet, rng: np.random.Generator) -> np.ndarray:
        n = len(X)
        per_image = int(np.prod(self.grid_shape_))
        self.n_patches_fit_ = n * per_image
        target = self._coreset_target(self.n_patches_fit_)
        # the calibration images come last, so that the last chunk holds as many of them as fit
        n_calibration = self._n_train_scores(n)
        order = np.arange(n)
        if n_calibration < n:
            chosen = np.sort(rng.choice(n, n_calibration, replace=False))
            order = np.concatenate([rng.permutation(np.setdiff1d(order, chosen)), chosen])
        self.calibration_indices_ = order[n - n_calibration :]
        # a chunk fills the pool beside the memory bank, and is never smaller than the bank:
        # each reduction then drops at least half of the patches it searches
        step = max(1, max(self.pool_size - target, target) // per_image)
        step = -(-n // -(-n // step))  # chunks of even size, none larger than step
        chunks = self._chunks(n, step)
        bank: np.ndarray | None = None
        patches = np.empty((0, 0), dtype=np.float32)
        for i, idx in enumerate(chunks):
            patches = self._patches(X.subset(order[idx]), "fit")
            pool = patches if bank is None else np.concatenate([bank, patches])
            last = i == len(chunks) - 1
            if len(pool) > target and (last or len(pool) + len(idx) * per_image > self.pool_size):
                keep = greedy_coreset(
                    pool,
                    target,
                    projection_dim=self.projection_dim,
                    random_state=int(rng.integers(np.iinfo(np.int32).max)),
                    device=self.device_,
                )
                pool = pool[np.sort(keep)]
            bank = pool
        assert bank is not None
        self.memory_bank_ = np.ascontiguousarray(bank, dtype=np.float32)
        self._search = None
        logger.info(
            "PatchCore memory bank: %d of %d training patches (%d features).",
            len(bank),
            self.n_patches_fit_,
            self.n_features_,
        )
        if len(bank) == self.n_patches_fit_:  # every training patch is its own neighbour
            return np.zeros(n_calibration)
        # the last chunk's features are at hand; earlier calibration images are embedded again
        tail = len(chunks[-1])
        at_hand = min(n_calibration, tail)
        scores = np.empty(n_calibration, dtype=np.float64)
        scores[n_calibration - at_hand :] = -self._image_scores(patches, tail)[tail - at_hand :]
        if n_calibration > at_hand:
            again = order[n - n_calibration : n - tail]
            scores[: n_calibration - at_hand] = self._score_samples(X.subset(again))
        return scores

    def _score_samples(self, X: ImageSet) -> np.ndarray:
        scores = np.empty(len(X), dtype=np.float64)
        for idx in self._chunks(len(X), self._images_per_chunk()):
            scores[idx] = -self._image_scores(self._patches(X.subset(idx), "score"), len(idx))
        return scores

    def _has_anomaly_map(self) -> bool:
        return True

    def _grid_maps(self, images: ImageSet) -> np.ndarray:
        distances, _ = self._bank_search().kneighbors(self._patches(images, "map"), 1)
        return distances.reshape(len(images), *self.grid_shape_).astype(np.float32)

    def transform(self, X: Any) -> np.ndarray:
        """The locally aware patch features of each image, flattened.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts.

        Returns
        -------
        ndarray of shape (n_images, h * w * d), dtype float32
            Row ``i`` reshaped to ``(h, w, d)`` (``grid_shape_``, ``n_features_``)
            holds the patch features of image ``i``.
        """
        check_is_fitted(self)
        grids = self._embed(self._validate_input(X, reset=False), "embed")
        return np.ascontiguousarray(grids.transpose(0, 2, 3, 1).reshape(len(grids), -1))

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        return {**state, "_search": None} if "_search" in state else state
