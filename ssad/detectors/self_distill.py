"""SSL-SDN: self-distillation (DINO) with negative samples, scored by cosine similarity."""

from __future__ import annotations

import logging
import numbers
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ssad._distributed import all_reduce_sum
from ssad._images import ImageSet, check_images
from ssad._training import cosine_schedule, train
from ssad.augment import (
    SHIFTING_TRANSFORMS,
    MultiCropTransform,
    ViewTransform,
    make_shifting_transform,
)
from ssad.augment._views import check_crop_scale
from ssad.backbones import create_backbone, data_config
from ssad.base import BaseDetector
from ssad.detectors._base import ImageDetector
from ssad.features import backbone_features
from ssad.nn import DINOHead, DINOLoss, UniformLoss, update_ema
from ssad.scoring import CosineKernelScorer, GaussianScorer, KNNScorer

__all__ = ["SelfDistillNegDetector"]

logger = logging.getLogger(__name__)

#: DINO's local/global crop size ratio (96 / 224), used to derive ``local_crop_size``.
LOCAL_TO_GLOBAL = 96 / 224

_Size = tuple[int, int]


def _pair(size: int | tuple[int, int] | list[int]) -> _Size:
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    h, w = size
    return (int(h), int(w))


class _DINONet(nn.Module):
    """Backbone + DINO head; views of equal size go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, v in enumerate(views):
            groups.setdefault(tuple(v.shape[1:]), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(views)
        for indices in groups.values():
            x = torch.cat([views[i] for i in indices])
            logits = self.head(backbone_features(self.backbone, x, "auto"))
            for i, chunk in zip(indices, logits.split([len(views[i]) for i in indices])):
                out[i] = chunk
        return [o for o in out if o is not None]


class _CyclingSampler:
    """Batches of auxiliary images, drawn in shuffled passes over the set (a local generator)."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self.queue = np.empty(0, dtype=np.int64)

    def take(self, k: int) -> np.ndarray:
        while len(self.queue) < k:
            self.queue = np.concatenate([self.queue, self.rng.permutation(self.n)])
        idx, self.queue = self.queue[:k], self.queue[k:]
        return idx


class SelfDistillNegDetector(ImageDetector):
    """Self-distillation with negative sampling (SSL-SDN, Rafiee et al., 2022).

    A student and a teacher network (the same timm backbone, each with a DINO
    head over ``out_dim`` soft classes) are trained from the normal images
    alone.  As in DINO, the teacher is a momentum (EMA) copy of the student,
    its outputs are centred and sharpened, and the student learns to predict,
    from every view of an image (2 global + ``n_local_crops`` local random
    crops), the teacher's soft class of the other global views.  In addition,
    *negative* views, made by a shifting transform (``negatives``: rotations,
    patch or pixel permutations) of the training images and/or of auxiliary
    images, are pushed to the uniform distribution over the soft classes:

    ``loss = L_DINO(positive views) + negative_weight * CE(uniform, student(negative views))``.

    After training, the teacher backbone (head dropped) embeds images: the
    class token of the full image, L2-normalised.  An image is normal when it
    is similar to the training images in that space; ``scorer`` chooses how:

    - ``"cosine_kernel"`` (paper eq. 6): ``log mean_i exp(cos(z, z_i) / T)``
      over all training embeddings ``z_i`` (:class:`~ssad.scoring.CosineKernelScorer`);
    - ``"max_cosine"`` (the medical follow-up, eq. 7): the cosine similarity
      to the nearest training embedding, minus 1 (:class:`~ssad.scoring.KNNScorer`);
    - ``"mahalanobis"``: the Gaussian log-density of the embedding
      (:class:`~ssad.scoring.GaussianScorer`, no PCA).

    Parameters
    ----------
    backbone : str, default="vit_small_patch16_224"
        timm architecture of the student and teacher (the paper: ViT-S/16).
        ViTs are created with ``dynamic_img_size=True`` so that they take the
        global and the local crop sizes.
    pretrained : bool, default=False
        Start the student (and so the teacher) from timm's pretrained weights
        (the medical chapter's ImageNet initialisation); the paper trains from
        scratch.
    checkpoint_path : str or path-like, default=None
        Local weights file to start from (see :func:`ssad.backbones.load_checkpoint`).
    freeze_batchnorm : "auto" or bool, default="auto"
        Keep the student backbone's BatchNorm layers in eval mode while
        training (their running statistics are then not re-estimated on
        augmented views); ``"auto"`` does so when it starts from pretrained
        weights.  The EMA teacher is always in eval mode and copies the
        student's statistics (:func:`ssad.nn.update_ema`).
    backbone_kwargs : dict, default=None
        Extra keyword arguments of :func:`timm.create_model`, e.g.
        ``{"patch_size": 4, "depth": 6}`` for a small ViT on small images.
    out_dim : int, default=4096
        Number K of soft classes of the DINO head.
    hidden_dim : int, default=2048
        Width of the head's hidden layers.
    bottleneck_dim : int, default=256
        Size of the head's L2-normalised bottleneck.
    norm_last_layer : bool, default=True
        Keep the norms of the head's weight-normalised last layer fixed at 1.
    n_local_crops : int, default=8
        Number N of local views per image (positives and each negative source).
    global_crop_size : int or (int, int), default=None
        Size of the global views; default: the model input size (``image_size``).
    local_crop_size : int or (int, int), default=None
        Size of the local views; default: DINO's ratio 96/224 of the global
        size, rounded to a multiple of the ViT patch size (at least one patch).
        For 32-pixel inputs and 16-pixel patches that is 16; for 224 it is 96.
    global_crop_scale : (float, float), default=(0.4, 1.0)
        Area share of the global crops.
    local_crop_scale : (float, float), default=(0.05, 0.4)
        Area share of the local crops.
    negatives : {"rot", "rot360", "perm4", "perm16", "pixel_shuffle"} or None, default="rot"
        Shifting transform that makes the negative views: a rotation by 90,
        180 or 270 degrees; a rotation by a uniform angle in [0, 360) (black
        corners); a random non-identity permutation of a 2x2 or 4x4 patch
        grid; a random permutation of the pixels.  ``None``: plain DINO
        (no negative loss).
    negative_source : {"in", "aux", "both"}, default="in"
        Images the negatives are made from: the training images, the
        auxiliary images passed as ``fit(X, X_aux=...)``, or both (one global
        and ``n_local_crops`` local negative views per image of each source).
    negative_weight : float >= 0, default=1.0
        Weight lambda of the negative (uniform) loss.
    student_temperature : float, default=0.1
        Student softmax temperature.
    teacher_temperature : float, default=0.055
        Teacher softmax temperature at the first epoch.
    teacher_temperature_end : float, default=0.01
        Teacher temperature at the end of the schedule.
    teacher_temperature_schedule : {"linear", "dino"}, default="linear"
        ``"linear"``: linear per epoch from ``teacher_temperature`` to
        ``teacher_temperature_end`` over the whole training (the paper).
        ``"dino"``: linear over ``teacher_temperature_warmup_epochs``, then constant
        (DINO's warm-up).
    teacher_temperature_warmup_epochs : int, default=30
        Warm-up length of the ``"dino"`` schedule.
    center_momentum : float, default=0.9
        Momentum of the teacher-output centre.
    teacher_momentum : float, default=0.996
        EMA momentum of the teacher, raised to 1 by a cosine schedule (below
        1: at 1 the teacher would never move from its starting weights).
    scorer : {"cosine_kernel", "max_cosine", "mahalanobis"}, default="cosine_kernel"
        How the teacher embeddings are scored (see above).
    kernel_temperature : float, default=0.04
        Temperature T of ``scorer="cosine_kernel"``.
    n_epochs : int, default=100
        Training epochs.
    batch_size : int, default=64
        Images per training step (each with ``2 + N`` positive and
        ``1 + N`` negative views per source) and per inference batch.
    num_workers : int, default=0
        Image files (inputs given as paths) are decoded and resized in this
        many :class:`torch.utils.data.DataLoader` worker processes, ahead of
        the model, while training and embedding; 0 decodes them in the
        calling process.  Arrays, tensors and PIL images are not affected.
    learning_rate : float, default=0.004
        AdamW peak learning rate for 256 images per step; the rate used is
        ``learning_rate * images_per_step / 256`` (DINO's linear scaling),
        reached after a linear warm-up and decayed by a cosine schedule.
    learning_rate_end : float, default=1e-6
        Learning rate at the end of the cosine schedule.
    warmup_epochs : int, default=10
        Epochs of learning-rate warm-up (capped so that the last step runs at
        the peak rate: :func:`ssad._training.cosine_schedule`).
    weight_decay : float, default=0.04
        AdamW weight decay at the start (weights only, not biases and norms).
    weight_decay_end : float, default=0.4
        Weight decay at the end (cosine schedule).
    clip_grad_norm : float or None, default=3.0
        Clip the student's gradient norm (None: no clipping).
    freeze_last_layer : int, default=1
        Epochs during which the head's last layer is not trained.
    drop_path_rate : float, default=0.1
        Stochastic depth of the student backbone (the teacher has none).
    image_size : int or (int, int), default=None
        Size images are resized to (training batches and scoring); default:
        the backbone's pretrained config (224 for ViT-S/16).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``; see :class:`ssad.base.BaseDetector`.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Where the networks run.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype; ``"auto"`` is bfloat16 on CUDA, float32 elsewhere.
    random_state : int, RandomState or None, default=None
        Seeds the initialisation, the shuffling and the views (local generators).
    verbose : int, default=0
        Progress bars when > 0.

    Attributes
    ----------
    teacher_ : torch.nn.Module
        The trained teacher backbone (eval mode), which embeds the images.
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation of the backbone's data config.
    scorer_ : CosineKernelScorer, KNNScorer or GaussianScorer
        Fitted on the L2-normalised teacher embeddings of the training images.
    global_crop_size_, local_crop_size_ : (int, int)
        The view sizes used.
    loss_curve_ : list of float
        Mean training loss per epoch.
    teacher_entropy_curve_ : list of float
        Mean entropy (nats) of the teacher's centred, sharpened output per
        epoch.  ``log(out_dim)`` means the teacher has collapsed to uniform
        outputs (every image alike); near 0, each image has one soft class.
    teacher_mean_entropy_curve_ : list of float
        Entropy (nats) of the teacher's mean output over each batch, averaged
        per epoch.  Near 0 means collapse onto one class (the same class for
        every image); with a low ``teacher_entropy_curve_`` it should stay
        well above 0: sharp outputs spread over many classes.
    n_steps_ : int
        Optimiser steps taken.
    device_ : torch.device
        The resolved device.
    world_size_ : int
        Number of processes that trained together: the ``torchrun``
        processes, 1 without ``torchrun``.
    offset_ : float
        Threshold on ``score_samples``.

    See Also
    --------
    ssad.scoring.CosineKernelScorer : The paper's score on embeddings.
    ssad.model_selection.sensitivity_score : The paper's anomaly-free model check.
    ssad.nn.DINOLoss, ssad.nn.UniformLoss, ssad.augment.MultiCropTransform :
        The parts.

    Notes
    -----
    Deviations from the paper and the reference code
    (github nimaous/SSLSDN-Anomaly-Detection), all deliberate:

    - **Loss weights.** Here ``L = L_pos + lambda * L_neg`` with ``L_neg``
      the mean uniform cross-entropy over all negative views (global and
      local, of every source pooled).  The reference averages over (teacher
      view, student view) pairs, so each negative view counts once per teacher
      view, weights each source 0.5 when both are used and multiplies by the
      number of data loaders (3).  That equals ``L_pos + 0.5 * (L_in + L_aux)``
      for both sources (what pooling gives for equal batch sizes) and
      ``1.5 * (L_pos + L_neg)`` for one source: ``lambda = 1`` up to a constant
      factor that AdamW barely sees.
    - **Centre.** It moves towards the mean of *all* positive teacher outputs
      of the batch (both global views), as in DINO.  The reference slices the
      first two rows of the teacher output (two images of the first view) and
      also runs the teacher on the negative global views, whose outputs are
      not used; here the teacher sees only the positive global views.
    - **Teacher temperature.** ``"linear"`` follows the paper (0.055 to 0.01);
      the reference README runs 0.04 to 0.01 over all epochs, DINO warms up
      then stays constant (``"dino"``).  Temperatures change per epoch.
    - **Defaults** follow the paper (ICANN 2022, section 4: AdamW, lr_base
      0.004 per 256 images, K = 4096); the rest come from the reference
      code's argument defaults (batch 64, 100 epochs, 10 warm-up epochs,
      drop path 0.1, ``norm_last_layer=True``), whose own lr default is 5e-4.
      The paper trains 500 epochs; the reference README's CIFAR-10 command
      uses 4 x 32 images per step, 30 warm-up epochs, local scale
      (0.15, 0.4), ``norm_last_layer=False``.
    - **Resolution.** The reference upsamples 32-pixel images to 256-pixel
      global views and 128-pixel local views.  Here images are loaded at
      ``image_size`` (default: the backbone's input size) and cropped to
      ``global_crop_size`` (default ``image_size``) and ``local_crop_size``
      (default 96/224 of it on the patch grid); set them for other choices.
    - **Augmentations** are batched tensor operations (``ssad.augment``):
      crops are resampled bilinearly by ``roi_align`` (PIL: bicubic); the
      blur's sigma scales with each view's own size, where the reference
      scales it by the global view size for every view (local views too);
      colour jitter applies brightness, contrast, saturation and hue in this
      fixed order, where torchvision draws a random order per image; the
      shifting transform is applied last to each view.  The reference rotates
      before flip / colour / blur and permutes after normalisation; for
      quarter turns and permutations the distribution of views is the same
      (flips compose with quarter turns within the same group, blur is
      isotropic, colour operations are per pixel).
    - **perm4 / perm16.** The reference shuffles the patch list and then
      applies a random non-identity permutation, so the composite is the
      identity for 1 in 24 ``perm4`` negatives (unshifted "negatives"); here
      the permutation is never the identity.  Sizes that are not a multiple
      of the grid, which fail in the reference, keep their remainder border.
    - **rot360** is the reference's ``RandomRotation((0, 360))``: a uniform
      angle, nearest-neighbour resampling, black corners; angles near 0 or 360
      give almost unshifted negatives, as there.
    - **Auxiliary images** (``X_aux``) are drawn in shuffled passes, one batch
      of the training batch size per step, loaded at ``image_size``.  The
      default ``negative_source="in"`` makes negatives from the training
      images only; the reference's main script combines in-distribution and
      auxiliary negatives (``"both"`` here).
    - **Gradient clipping** is on the global norm of the student's gradients
      (the shared loop); DINO clips each parameter's gradient norm.
      While ``freeze_last_layer`` lasts, the last layer's gradients are
      dropped (set to None) before the optimiser step, as DINO's cancelled gradients:
      AdamW skips the parameter (no update, no weight decay, no moment
      update).
    - **Score.** eq. 6 is used as its logarithm (same ranking, finite); the
      reference subtracts 0.1 from the cosine inside the exponential, which
      only shifts the log score.  The reference has no sensitivity-score code;
      see :func:`ssad.model_selection.sensitivity_score`.
    - The learning rate scales with the images actually in a step
      (``min(batch_size, n_samples)``); the last incomplete batch of an epoch
      is dropped, as in DINO.

    References
    ----------
    .. [1] N. Rafiee, R. Gholamipoor, N. Adaloglou, S. Jaxy, J. Ramakers and
       M. Kollmann, "Self-Supervised Anomaly Detection by Self-Distillation and
       Negative Sampling", ICANN 2022.
    .. [2] M. Caron, H. Touvron, I. Misra, H. Jegou, J. Mairal, P. Bojanowski
       and A. Joulin, "Emerging Properties in Self-Supervised Vision
       Transformers", ICCV 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.detectors.self_distill import SelfDistillNegDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    >>> det = SelfDistillNegDetector("test_vit", image_size=32, out_dim=64, hidden_dim=32,
    ...                              bottleneck_dim=16, n_local_crops=2, n_epochs=1,
    ...                              batch_size=8, random_state=0).fit(X)
    >>> det.score_samples(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **ImageDetector._parameter_constraints,
        "freeze_batchnorm": [StrOptions({"auto"}), "boolean"],
        "backbone_kwargs": [dict, None],
        "out_dim": [Interval(numbers.Integral, 2, None, closed="left")],
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "bottleneck_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "norm_last_layer": ["boolean"],
        "n_local_crops": [Interval(numbers.Integral, 0, None, closed="left")],
        "global_crop_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "local_crop_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "global_crop_scale": [tuple, list],
        "local_crop_scale": [tuple, list],
        "negatives": [StrOptions(set(SHIFTING_TRANSFORMS)), None],
        "negative_source": [StrOptions({"in", "aux", "both"})],
        "negative_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "student_temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "teacher_temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "teacher_temperature_end": [Interval(numbers.Real, 0, None, closed="neither")],
        "teacher_temperature_schedule": [StrOptions({"linear", "dino"})],
        "teacher_temperature_warmup_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "center_momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "teacher_momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "scorer": [StrOptions({"cosine_kernel", "max_cosine", "mahalanobis"})],
        "kernel_temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "learning_rate_end": [Interval(numbers.Real, 0, None, closed="left")],
        "warmup_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "weight_decay_end": [Interval(numbers.Real, 0, None, closed="left")],
        "clip_grad_norm": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "freeze_last_layer": [Interval(numbers.Integral, 0, None, closed="left")],
        "drop_path_rate": [Interval(numbers.Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        backbone: str = "vit_small_patch16_224",
        *,
        pretrained: bool = False,
        checkpoint_path: str | os.PathLike[str] | None = None,
        freeze_batchnorm: str | bool = "auto",
        backbone_kwargs: dict[str, Any] | None = None,
        out_dim: int = 4096,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        n_local_crops: int = 8,
        global_crop_size: int | tuple[int, int] | None = None,
        local_crop_size: int | tuple[int, int] | None = None,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        negatives: str | None = "rot",
        negative_source: str = "in",
        negative_weight: float = 1.0,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.055,
        teacher_temperature_end: float = 0.01,
        teacher_temperature_schedule: str = "linear",
        teacher_temperature_warmup_epochs: int = 30,
        center_momentum: float = 0.9,
        teacher_momentum: float = 0.996,
        scorer: str = "cosine_kernel",
        kernel_temperature: float = 0.04,
        n_epochs: int = 100,
        batch_size: int = 64,
        num_workers: int = 0,
        learning_rate: float = 0.004,
        learning_rate_end: float = 1e-6,
        warmup_epochs: int = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        clip_grad_norm: float | None = 3.0,
        freeze_last_layer: int = 1,
        drop_path_rate: float = 0.1,
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
        self.freeze_batchnorm = freeze_batchnorm
        self.backbone_kwargs = backbone_kwargs
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.norm_last_layer = norm_last_layer
        self.n_local_crops = n_local_crops
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size
        self.global_crop_scale = global_crop_scale
        self.local_crop_scale = local_crop_scale
        self.negatives = negatives
        self.negative_source = negative_source
        self.negative_weight = negative_weight
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.teacher_temperature_end = teacher_temperature_end
        self.teacher_temperature_schedule = teacher_temperature_schedule
        self.teacher_temperature_warmup_epochs = teacher_temperature_warmup_epochs
        self.center_momentum = center_momentum
        self.teacher_momentum = teacher_momentum
        self.scorer = scorer
        self.kernel_temperature = kernel_temperature
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.learning_rate = learning_rate
        self.learning_rate_end = learning_rate_end
        self.warmup_epochs = warmup_epochs
        self.weight_decay = weight_decay
        self.weight_decay_end = weight_decay_end
        self.clip_grad_norm = clip_grad_norm
        self.freeze_last_layer = freeze_last_layer
        self.drop_path_rate = drop_path_rate
        self.image_size = image_size
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # -- modules -----------------------------------------------------------------------------
    def _new_backbone(
        self,
        *,
        pretrained: bool,
        checkpoint_path: str | os.PathLike[str] | None,
        drop_path_rate: float,
    ) -> nn.Module:
        """A backbone; ViTs get ``dynamic_img_size=True``, options a model lacks are dropped."""
        optional: dict[str, Any] = {"dynamic_img_size": True}
        if drop_path_rate > 0:
            optional["drop_path_rate"] = drop_path_rate
        user = dict(self.backbone_kwargs or {})
        while True:
            try:
                return create_backbone(
                    self.backbone,
                    pretrained=pretrained,
                    checkpoint_path=checkpoint_path,
                    image_size=self.image_size,
                    **{**optional, **user},
                )
            except TypeError as exc:
                dropped = next((k for k in optional if k not in user and k in str(exc)), None)
                if dropped is None:
                    raise
                logger.debug("%s does not take %s; created without it", self.backbone, dropped)
                del optional[dropped]

    def _build_modules(self) -> dict[str, nn.Module]:
        teacher = self._new_backbone(pretrained=False, checkpoint_path=None, drop_path_rate=0.0)
        return {"teacher_": teacher.requires_grad_(False)}

    def _new_head(self, in_dim: int) -> DINOHead:
        return DINOHead(
            in_dim,
            self.out_dim,
            hidden_dim=self.hidden_dim,
            bottleneck_dim=self.bottleneck_dim,
            norm_last_layer=self.norm_last_layer,
        )

    def _crop_sizes(self, backbone: nn.Module) -> tuple[_Size, _Size]:
        size = self.preprocessor_.size
        glob = size if self.global_crop_size is None else _pair(self.global_crop_size)
        patch_embed = getattr(backbone, "patch_embed", None)
        patch = _pair(getattr(patch_embed, "patch_size", 1)) if patch_embed is not None else (1, 1)
        if self.local_crop_size is None:
            local = tuple(max(p, round(g * LOCAL_TO_GLOBAL / p) * p) for g, p in zip(glob, patch))
        else:
            local = _pair(self.local_crop_size)
        for name, view in (("global", glob), ("local", local)):
            if view[0] % patch[0] or view[1] % patch[1]:
                raise ValueError(
                    f"The {name} crop size {view} is not a multiple of the patch size {patch} "
                    f"of {self.backbone!r}; set image_size / {name}_crop_size to a multiple of it."
                )
        return glob, (int(local[0]), int(local[1]))

    # -- schedules ---------------------------------------------------------------------------
    def _teacher_temps(self) -> np.ndarray:
        start, end, n = self.teacher_temperature, self.teacher_temperature_end, self.n_epochs
        if self.teacher_temperature_schedule == "linear":
            return np.linspace(start, end, n)
        warm = min(self.teacher_temperature_warmup_epochs, n)
        return np.concatenate([np.linspace(start, end, warm), np.full(n - warm, end)])

    def _check_params(self, X_aux: Any) -> ImageSet | None:
        for name in ("global_crop_scale", "local_crop_scale"):
            check_crop_scale(getattr(self, name), name, "SelfDistillNegDetector")
        if self.weight_decay == 0 and self.weight_decay_end != 0:
            raise ValueError(
                "weight_decay=0 cannot be scheduled to weight_decay_end="
                f"{self.weight_decay_end}: the training loop schedules only non-zero weight "
                "decays. Use a small positive weight_decay, or weight_decay_end=0."
            )
        uses_aux = (
            self.negatives is not None
            and self.negative_weight > 0
            and self.negative_source in ("aux", "both")
        )
        if uses_aux and X_aux is None:
            raise ValueError(
                f"negative_source={self.negative_source!r} makes negatives from auxiliary "
                "images: pass them as fit(X, X_aux=...), or use negative_source='in'."
            )
        if X_aux is not None and not uses_aux:
            raise ValueError(
                "X_aux was passed but would not be used: auxiliary images make negatives only "
                "when negatives is set, negative_weight > 0 and negative_source is 'aux' or "
                f"'both' (got negatives={self.negatives!r}, negative_weight="
                f"{self.negative_weight}, negative_source={self.negative_source!r})."
            )
        return None if X_aux is None else check_images(X_aux, name="X_aux")

    # -- the contract ------------------------------------------------------------------------
    _normalize_embeddings = True  # the scores compare unit vectors (cosine)

    def _fit_model(self, X: ImageSet, rng: np.random.Generator, *, X_aux: Any = None) -> None:
        """Train student and teacher; ``X_aux``: images the auxiliary negatives come from."""
        aux = self._check_params(X_aux)
        student_backbone = self._new_backbone(
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            drop_path_rate=self.drop_path_rate,
        )
        self.preprocessor_ = self._preprocessor(data_config(student_backbone))
        self.global_crop_size_, self.local_crop_size_ = self._crop_sizes(student_backbone)
        in_dim = int(getattr(student_backbone, "num_features"))  # noqa: B009 - timm attribute
        student = _DINONet(student_backbone, self._new_head(in_dim))
        teacher_backbone = self._new_backbone(
            pretrained=False, checkpoint_path=None, drop_path_rate=0.0
        )
        teacher = _DINONet(teacher_backbone, self._new_head(in_dim))
        teacher.load_state_dict(student.state_dict())
        teacher.requires_grad_(False)
        student.to(self.device_)
        teacher.to(self.device_)
        self._train(student, teacher, X, aux, rng)
        self.teacher_ = teacher.backbone.eval()

    def _embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.teacher_, x, "auto")

    def _train(
        self,
        student: _DINONet,
        teacher: _DINONet,
        X: ImageSet,
        X_aux: ImageSet | None,
        rng: np.random.Generator,
    ) -> None:
        n = len(X)
        steps_per_epoch = n // self.batch_size if n > self.batch_size else 1
        total_steps = self.n_epochs * steps_per_epoch
        images_per_step = min(self.batch_size, n)
        lr_schedule = cosine_schedule(
            self.learning_rate * images_per_step / 256.0,
            self.learning_rate_end,
            total_steps,
            warmup_steps=self.warmup_epochs * steps_per_epoch,
        )
        wd_schedule = cosine_schedule(self.weight_decay, self.weight_decay_end, total_steps)
        momentum_schedule = cosine_schedule(self.teacher_momentum, 1.0, total_steps)
        teacher_temps = self._teacher_temps()

        # DINO's parameter groups: no weight decay on biases and norms
        decayed: list[nn.Parameter] = []
        not_decayed: list[nn.Parameter] = []
        for name, p in student.named_parameters():
            if not p.requires_grad:
                continue
            (not_decayed if name.endswith(".bias") or p.ndim == 1 else decayed).append(p)
        optimizer = torch.optim.AdamW(
            [
                {"params": decayed, "weight_decay": self.weight_decay},
                {"params": not_decayed, "weight_decay": 0.0},
            ],
            lr=lr_schedule(0),
        )
        last_layer = [p for p in student.head.last_layer.parameters() if p.requires_grad]
        freeze_steps = self.freeze_last_layer * steps_per_epoch

        pre = self.preprocessor_
        mean = torch.tensor(pre.mean, device=self.device_).view(1, -1, 1, 1)
        std = torch.tensor(pre.std, device=self.device_).view(1, -1, 1, 1)

        def views(n_global: int, shift: ViewTransform | None) -> MultiCropTransform:
            g_low, g_high = self.global_crop_scale
            l_low, l_high = self.local_crop_scale
            return MultiCropTransform(
                self.global_crop_size_,
                self.local_crop_size_,
                n_global_crops=n_global,
                n_local_crops=self.n_local_crops,
                global_scale=(float(g_low), float(g_high)),
                local_scale=(float(l_low), float(l_high)),
                shift=shift,
            )

        positive_views = views(2, None)
        use_negatives = self.negatives is not None and self.negative_weight > 0
        negative_views = (
            views(1, make_shifting_transform(str(self.negatives))) if use_negatives else None
        )
        sources = {"in": ("in",), "aux": ("aux",), "both": ("in", "aux")}[self.negative_source]
        aux_sampler = (
            _CyclingSampler(len(X_aux), np.random.default_rng(rng.integers(2**63)))
            if X_aux is not None
            else None
        )
        dino_loss = DINOLoss(
            self.out_dim,
            student_temperature=self.student_temperature,
            center_momentum=self.center_momentum,
        ).to(self.device_)
        uniform_loss = UniformLoss(student_temperature=self.student_temperature)
        state = {"step": 0}
        # per epoch: the teacher's mean per-image entropy and the entropy of its mean output
        entropies: list[list[tuple[float, float]]] = [[] for _ in range(self.n_epochs)]

        def normalise(views: list[torch.Tensor]) -> list[torch.Tensor]:
            return [(v - mean) / std for v in views]

        def aux_batch(k: int) -> torch.Tensor:
            assert X_aux is not None and aux_sampler is not None
            idx = aux_sampler.take(k)
            return X_aux.load(
                idx, size=pre.size, device=self.device_, interpolation=pre.interpolation
            )

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            epoch = min(state["step"] // steps_per_epoch, len(teacher_temps) - 1)
            positives = normalise(positive_views(batch))
            negatives: list[torch.Tensor] = []
            if negative_views is not None:
                for source in sources:
                    images = batch if source == "in" else aux_batch(len(batch))
                    negatives += normalise(negative_views(images))
            with torch.no_grad():
                teacher_out = teacher(positives[:2])
                # the centred, sharpened teacher: per-image entropy log(out_dim) = uniform
                # collapse; entropy of the batch-mean output near 0 = one prototype for all
                logits = (torch.cat(teacher_out).float() - dino_loss.center) / teacher_temps[epoch]
                probs = F.softmax(logits, dim=-1)
                entropy = -(probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()
                mean = probs.mean(0)
                spread = -(mean * mean.clamp_min(1e-12).log()).sum()
                entropies[epoch].append((float(entropy), float(spread)))
            student_out = student(positives + negatives)
            loss = dino_loss(
                student_out[: len(positives)], teacher_out, float(teacher_temps[epoch])
            )
            if negatives:
                loss = loss + self.negative_weight * uniform_loss(student_out[len(positives) :])
            return loss

        def before_step(step: int) -> None:
            # DINO's cancel_gradients_last_layer: the optimiser skips parameters
            # without gradients (no update, no weight decay, no moment update)
            if step < freeze_steps:
                for p in last_layer:
                    p.grad = None

        def after_step(step: int) -> None:
            update_ema(teacher, student, momentum_schedule(step))
            state["step"] = step + 1

        result = train(
            nn.ModuleDict({"student": student, "teacher": teacher}),
            loss_fn,
            X,
            optimizer=optimizer,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device_,
            rng=rng,
            precision=self.precision,
            image_size=pre.size,
            interpolation=pre.interpolation,
            lr_schedule=lr_schedule,
            weight_decay_schedule=wd_schedule,
            clip_grad_norm=self.clip_grad_norm,
            before_step=before_step,
            after_step=after_step,
            frozen=[teacher, *self._frozen_batchnorm(student.backbone)],
            drop_last=True,
            verbose=self.verbose,
            desc="SSL-SDN train",
        )
        self.loss_curve_ = result.loss_curve
        # under torchrun: the mean over every process's batches, the same on every rank
        sums = torch.tensor(
            [[*np.sum(e, axis=0), len(e)] for e in entropies if e], dtype=torch.float64
        ).reshape(-1, 3)
        all_reduce_sum(sums)
        self.teacher_entropy_curve_ = (sums[:, 0] / sums[:, 2]).tolist()
        self.teacher_mean_entropy_curve_ = (sums[:, 1] / sums[:, 2]).tolist()
        self.n_steps_ = state["step"]

    def _make_scorer(self) -> BaseDetector:
        if self.scorer == "cosine_kernel":
            return CosineKernelScorer(temperature=self.kernel_temperature)
        if self.scorer == "max_cosine":
            return KNNScorer(n_neighbors=1, metric="cosine")
        return GaussianScorer(variance=None)
