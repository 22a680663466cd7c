"""ConvexMIL: multi-instance learning with convex representations on contaminated data."""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ssad._distributed import all_reduce_sum
from ssad._images import ImageSet
from ssad._training import cosine_schedule, evaluating, steps_per_epoch, train
from ssad.augment._views import (
    ColorJitter,
    Compose,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    check_crop_scale,
)
from ssad.backbones import create_backbone, data_config, freeze_early_layers
from ssad.detectors._base import ImageDetector
from ssad.features import backbone_features
from ssad.nn.mil import ANCHORS, SAMPLINGS, ConvexMILLoss, mean_shifted_loss
from ssad.scoring import FilteredFit, GMMOutlierFilter, KNNScorer

__all__ = ["ConvexMILDetector"]

logger = logging.getLogger(__name__)

#: Rotations by 0, 90, 180 and 270 degrees: the shifting transformation (CSI).
N_ROTATIONS = 4


def _n_features(model: nn.Module) -> int:
    return int(getattr(model, "num_features"))  # noqa: B009 - timm attribute, untyped


class ConvexMILDetector(ImageDetector):
    """ConvexMIL: discrimination learnt from contaminated data with convex representations.

    An encoder trained from scratch maps each image to an L2-normalised
    embedding ``z`` (the backbone's globally pooled features).  Training sees
    the unlabeled, possibly contaminated images and minimises, per mini-batch,

    ``L = L_conv + lambda_mean * L_mean + lambda_rot * L_rot``   (eq. 10)

    - ``L_conv`` (anomaly-discriminative learning, eqs. 1-6): the batch is a
      bag; each image gets a pseudo normality, the mean cosine similarity to
      its ``n_neighbors`` nearest images in the batch; the lowest-scored
      ``abnormal_fraction`` form the abnormal candidate set, the rest the
      normal one.  For every normal candidate, ``n_convex`` embeddings are
      soft-sampled from each set and averaged with Dirichlet(1) weights into
      a normal and an abnormal *convex representation*; the candidate is
      pulled towards the first and pushed from the second.
    - ``L_mean`` (eqs. 7-8): the mean-shifted contrastive loss of MSAD with
      its angular centre term, switched on from epoch
      ``mean_shift_start_epoch``.
    - ``L_rot`` (eq. 9): a linear head predicts which of the four rotations
      (0, 90, 180, 270 degrees; the shifting transformation of CSI) an image
      underwent.

    The score (eq. 11) is the maximum cosine similarity of an image's
    embedding to the training embeddings (minus 1: a kNN scorer with
    ``k = 1`` on cosine distances); higher = more normal.

    Parameters
    ----------
    backbone : str, default="resnet18"
        timm encoder (the paper: ResNet-18 trained from scratch).
    pretrained : bool, default=False
        Start from the backbone's pretrained weights instead of a random
        initialisation (not in the paper).
    checkpoint_path : str or path-like, default=None
        Local weights file to start from (see :func:`ssad.backbones.create_backbone`).
    n_trainable_blocks : int or None, default=None
        Train only the last ``n_trainable_blocks`` blocks of the encoder's
        trunk (and what follows them); the stem and earlier blocks keep their
        starting weights, as Mean-Shifted CL does with its pretrained ResNet
        (:func:`ssad.backbones.freeze_early_layers`).  None trains everything;
        at least 1, since the score (eq. 11) reads the encoder alone.
    freeze_batchnorm : "auto" or bool, default="auto"
        Keep the encoder's BatchNorm layers in eval mode while training, so
        their running statistics are not re-estimated on augmented views;
        ``"auto"`` does so when the encoder starts from pretrained weights.
    n_batch_neighbors : int, default=5
        K of the pseudo normality (eq. 2): neighbours within the mini-batch
        (capped at ``batch_size - 1``).  Not a parameter of the score.
    abnormal_fraction : float in (0, 1), default=0.1
        Share of each mini-batch put into the abnormal candidate set (the
        paper's 10 %); also the share the memory filter drops unless
        ``memory_fraction`` says otherwise.  Matching it to a known gamma
        of 2 % did not help the full method (see the ConvexMIL guide for
        the measurement).
    n_convex : int, default=5
        C, the instances averaged into a convex representation (eq. 5).
    candidate_view : {"clean", "augmented"}, default="clean"
        Which embeddings choose the candidate sets (eqs. 1-4): those of the
        clean images with the encoder in eval mode (an extra forward pass per
        step, no gradients), or those of the first augmented training view
        in train mode.  The paper does not say; with augmented views the
        pseudo normality mostly ranks how strongly each image was augmented.
    anchor : {"convex", "instance"}, default="convex"
        The anchor of eq. 6: a convex representation of the normal set, as
        printed, or the normal candidate's own embedding.
    memory_filter : {None, "pseudo_normality", "gmm"}, default=None
        Beyond the paper: drop the ``memory_fraction`` of the training
        images that look least normal from the reference set of the score
        (eq. 11), so that contaminating anomalies do not vouch for test
        anomalies.  ``"pseudo_normality"``: eq. 2 over the whole training set
        on the learned embeddings (mean cosine similarity to the
        ``memory_neighbors`` nearest training images, each image left out of
        its own neighbours); ``"gmm"``: a Gaussian mixture chosen by BIC
        (:class:`~ssad.scoring.GMMOutlierFilter`).
    memory_neighbors : int, "sqrt" or None, default=None
        K of the ``"pseudo_normality"`` memory filter (unused by the other
        filters).  None: the
        ``n_batch_neighbors`` of eq. 2.  ``"sqrt"``: the square root of the
        number of training images, so that the neighbourhood outgrows the
        groups of contaminating anomalies of one kind, which a fixed K lets
        vouch for each other as the training set grows (see the ConvexMIL
        guide for the measurements).
    memory_filter_features : {"trained", "frozen"}, default="trained"
        The embeddings the memory filter judges the training images on.
        ``"trained"``: the learned ones, those eq. 11 scores against.
        ``"frozen"``: the backbone's before training (the
        :meth:`frozen_features` of ``knn-frozen``, L2-normalised; one extra
        pass over the training images before the first epoch).  ``L_mean``
        pulls every training image, the contaminating anomalies too, towards
        the centre, so the trained embeddings can hide from the filter the
        very images it should drop.  On Fashion-MNIST 5 % with 1000 images
        per class and ``memory_neighbors="sqrt"`` it lifted the full
        method by 0.9 points; at 10 % with 300 images per class it cost
        0.2 with K = 5 and added 0.35 with ``memory_neighbors="sqrt"``.
        On MNIST-5k (300 images per class), "frozen" with
        ``memory_neighbors="sqrt"`` cost the full method 0.2 to 0.5 at
        every gamma against eq. 2 with K = 5 on the trained embeddings
        (at 2 %, 0.33 of it this option, the rest K), so it is not the
        default (one seed each; the ConvexMIL guide, "Where the full
        method loses").  Unused without ``memory_filter``.
    score_neighbors : int >= 1, default=1
        K of the score.  1: eq. 11, the cosine similarity to the nearest
        training embedding (of the memory the filter keeps).  K > 1 (beyond
        the paper): the sum of the cosine similarities to the K nearest, so
        a handful of contaminating anomalies in the memory vouch for a test
        anomaly only where K of them lie near it.  On Fashion-MNIST 5 %
        with 1000 images per class, K = 10 (chosen on other classes)
        lifted both the full method and its rotation-only ablation by 1.3
        to 3.0 points with the ``"pseudo_normality"`` filter
        (``memory_neighbors="sqrt"``), mostly through the contaminating
        images the filter kept; against a memory without them it helped
        little or cost.  It does not favour the full method: in six of
        the seven settings measured it did more for the ablation (the
        ConvexMIL guide has the measurements).
    memory_fraction : float in (0, 0.5] or None, default=None
        Share of the training images the memory filter drops.  None: the
        ``abnormal_fraction`` of the candidate sets.  The two are separate
        choices: lowering ``abnormal_fraction`` towards a known low
        contamination also lowers the share filtered, unless this is set.
    sampling : {"paper", "inverse"}, default="paper"
        Soft-sampling weights of the abnormal set (eq. 4).  ``"paper"``:
        proportional to the pseudo normality ``s_j``, as printed;
        ``"inverse"``: proportional to ``1 - s_j``, so the most abnormal
        candidates are drawn most often.  The normal set is always sampled
        proportionally to ``s_j``.  See :func:`ssad.nn.mil.sampling_probabilities`.
    convex_temperature : float, default=1.0
        Temperature of ``L_conv`` (eq. 6); 1.0 = none, as in the paper.
        0.25 (``L_mean``'s) did not bring the full method level with its
        rotation-only ablation on Fashion-MNIST 5 % with 1000 images per
        class (see the ConvexMIL guide for the measurement).
    lambda_mean : float >= 0, default=1.0
        Weight ``lambda_1`` of the mean-shifted loss; 0 switches it off.
        The paper does not give it; its effect depends on the data (the
        ConvexMIL guide measures 1.0 and 0.1 on MNIST-5k and
        Fashion-MNIST).
    lambda_rot : float >= 0, default=1.0
        Weight ``lambda_2`` of the rotation loss; 0 switches it off (and the
        rotation head is not built).  Under Adam only the weights' ratio
        matters: 10 puts ``L_conv`` and ``L_mean`` at a tenth of it.  On
        Fashion-MNIST 5 % with 1000 images per class, a weight of 10
        (chosen on other classes) narrowed the full method's gap to its
        rotation-only ablation on Pullover, Shirt and Bag without closing
        it (two seeds; the ConvexMIL guide has the measurement).
    use_convex : bool, default=True
        Include ``L_conv``; False for the ablations.
    mean_shift_start_epoch : int, default=15
        First (0-based) epoch with ``L_mean`` (paper: 15).
    projection_dim : int or None, default=None
        None: ``L_conv``, ``L_mean`` and the candidate sets (eqs. 1-8) work
        on the normalised pooled features themselves, as the paper writes
        ``Z = f(X)``.  An int puts CSI's projection head between them (a
        two-layer MLP, ``Linear(d, d)``, ReLU, ``Linear(d, projection_dim)``;
        CSI uses 128), so the contrastive terms shape the head's output and
        reach the encoder through it; the rotation head and the score
        (eq. 11) still read the pooled features.  Not in the paper (see
        Notes).
    mean_shift_center : {"running", "fixed"}, default="running"
        The centre ``c`` of ``L_mean``.  ``"running"``: the normalised mean of
        the previous epoch's training-view embeddings, updated every epoch
        (the paper's "mean representation of all samples" while the encoder
        trains from scratch).  ``"fixed"``: the first such centre, that of
        the epoch before ``L_mean`` starts, kept to the end, as MSAD keeps
        the centre of its pretrained encoder (see Notes).
    mean_shift_angular : float >= 0, default=1.0
        Weight of the angular centre term of ``L_mean`` (eq. 7's second
        term, which pulls every embedding towards the centre), in the form
        of MSAD's code: ``||z1 - c||^2 + ||z2 - c||^2``.  1.0 as MSAD's
        ``--angular`` option, 0.25 is eq. 7 as printed, 0 leaves the
        mean-shifted contrastive term alone (MSAD's default).  See
        :func:`ssad.nn.mil.mean_shifted_loss` and, for its effect under
        contamination, the ConvexMIL guide.
    mean_shift_negatives : {"views", "rotations"}, default="views"
        The negatives of ``L_mean``'s contrastive term (eq. 7's
        ``X^-``, "augmented copies from different instances").
        ``"views"``: the other images' views, as MSAD.  ``"rotations"``:
        also the rotated views (90, 180 and 270 degrees) of every image of
        the batch, CSI's shifted instances, which the paper takes its
        rotations from; they are computed for ``L_rot`` anyway, so this
        costs no forward pass while the rotation loss is on (with
        ``lambda_rot=0`` each step embeds the rotations for it, and
        BatchNorm in train mode sees them, as with the rotation loss).
    mean_shift_pull : {"all", "normal_candidates"}, default="all"
        Which images the angular centre term of ``L_mean`` pulls towards the
        centre.  ``"all"``: every image of the batch, as eq. 7 is printed.
        ``"normal_candidates"`` (beyond the paper): the normal candidates
        of eqs. 1-2 only, so that the images eq. 2 marks as abnormal are not
        drawn into the normal cluster the scores compare with (they stay in
        the contrastive term; the candidates are split as for ``L_conv``,
        also when ``use_convex=False``).  See the ConvexMIL guide for the
        measurement.
    n_epochs : int, default=200
        Training epochs (paper: 200).
    warmup_epochs : int, default=10
        Linear learning-rate warm-up before the cosine decay (paper: 10);
        capped so that the last step runs at ``learning_rate`` when
        ``n_epochs`` is smaller.
    batch_size : int >= 2, default=64
        Images per training step (each step forwards up to 5 views of each)
        and per inference batch.  A training batch is the bag that is split
        into candidate sets.
    num_workers : int, default=0
        Image files (inputs given as paths) are decoded and resized in this
        many :class:`torch.utils.data.DataLoader` worker processes, ahead of
        the model, while training and embedding; 0 decodes them in the
        calling process.  Arrays, tensors and PIL images are not affected.
    crop_scale : (float, float), default=(0.08, 1.0)
        Area share of the random resized crops of the training views (the
        paper's inception crop; Mean-Shifted CL, which adapts a pretrained
        encoder, crops (0.2, 1.0)).
    learning_rate : float, default=1e-3
        Peak Adam learning rate (paper: 1e-3).
    encoder_lr_scale : float in (0, 1], default=1.0
        The encoder's learning rate as a fraction of ``learning_rate`` (the
        heads keep ``learning_rate``); below 1 a pretrained encoder moves
        less while the rotation and projection heads, trained from scratch,
        learn at the full rate.  Mean-Shifted CL adapts its pretrained
        encoder at a small learning rate (SGD, 1e-5); 1.0 is the paper's
        single learning rate.
    image_size : int or (int, int), default=32
        Input size (the paper's CIFAR / MNIST resolution); None takes the
        backbone's timm data config.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``; see :class:`ssad.base.BaseDetector`.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Where the networks run.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype; ``"auto"`` is bfloat16 on CUDA, float32 elsewhere.
        The losses are computed in float32.
    random_state : int, RandomState or None, default=None
        Seeds the initialisation, the shuffling, the views and the sampling
        (through local generators).
    verbose : int, default=0
        Progress bars when > 0.

    Attributes
    ----------
    encoder_ : torch.nn.Module
        The trained backbone (no classifier).
    rotation_head_ : torch.nn.Linear or None
        The rotation classifier ``g`` (None when ``lambda_rot == 0``).
    projection_head_ : torch.nn.Sequential or None
        The projection head of ``projection_dim`` (None without it).
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation from the backbone's data config.
    scorer_ : ssad.scoring.KNNScorer or ssad.scoring.FilteredFit
        Cosine kNN (``k = 1``) on the training embeddings (behind the memory
        filter when ``memory_filter`` is set).
    center_ : ndarray of shape (n_features,) or (projection_dim,), or None
        Unit-norm centre used by ``L_mean`` in the last epoch (None when
        ``L_mean`` never ran), in the projection head's space when there is
        one.
    abnormal_candidates_ : ndarray of shape (n_train,), dtype bool
        The training images placed in an abnormal candidate set during the
        last epoch (all False without ``L_conv`` unless
        ``mean_shift_pull="normal_candidates"``); with known contamination
        labels, the share of anomalies among them measures eqs. 1-3.
    loss_curve_ : list of float
        Mean training loss per epoch.
    device_ : torch.device
        The resolved device.
    world_size_ : int
        Number of processes that trained together: the ``torchrun``
        processes, 1 without ``torchrun``.
    offset_ : float
        Threshold on ``score_samples``.

    See Also
    --------
    ssad.scoring.KNNScorer : The score on the embeddings.
    ssad.nn.mil : The losses and the multi-instance pieces.

    Notes
    -----
    There is no public code of the paper; its parts come from CSI (rotation
    as shifting transformation, rotation head) and MSAD (mean-shifted
    contrastive loss).  Interpretations and deviations, all deliberate:

    - **Encoder.** Any timm backbone with its own stem: timm's ``resnet18``
      has the ImageNet stem (7x7 stride-2 convolution and max-pool), not the
      3x3 CIFAR stem of CSI's ResNet-18, so at 32 px its last feature map is
      1x1.  ``z`` is the pooled feature (global average pooling; the class
      token for ViTs) divided by its norm; there is no projection head by
      default, as the paper writes ``Z = f(X)``.  CSI, whose parts the
      method takes, contrasts the output of a projection head (a two-layer
      MLP to 128 dimensions) and keeps the rotation head on the pooled
      features; ``projection_dim`` does the same for ``L_conv``,
      ``L_mean`` and eqs. 1-4, while eq. 11 still scores the pooled
      features.
    - **Views.** Random resized crop (``crop_scale``: 0.08-1, CSI's default), horizontal
      flip, colour jitter (0.4, 0.4, 0.4, 0.1 with p=0.8) and grayscale
      (p=0.2), drawn independently per image (paper section 4.1).  Each
      image gets up to five views per step: its four rotations, each
      augmented independently (rotation before augmentation, as in CSI), and
      a second unrotated view.  The unrotated views are "view 1" and "view 2".
    - **L_rot** (eq. 9) is the cross-entropy of the rotation head over all
      four rotations of every image; the head reads the unnormalised pooled
      features (CSI's penultimate features).
    - **Candidate sets** (eqs. 1-3; the paper does not say from which view):
      by default from the *clean* images of each mini-batch, embedded with
      the encoder in eval mode and without gradients
      (``candidate_view="clean"``); ``"augmented"`` takes the detached view-1
      embeddings.  Measured on MNIST-5k class 0 with 10 % contamination, the
      augmented views in train mode caught 15 of 190 true anomalies (chance
      about 18) and the clean eval-mode embeddings 72 of 191.  K is capped at
      ``b - 1``; the abnormal set has ``round(abnormal_fraction * b)`` images,
      at least 1 and at most ``b - 1``.  The last incomplete batch of an epoch
      is dropped (when there is more than one batch).
    - **Sampling** (eq. 4): eq. 4 as printed weights the abnormal set by
      ``s_j``, which favours its most *normal* members and needs ``s >= 0``;
      it is the default (``sampling="paper"``), with negative weights clipped
      to 0 (a set of all-zero weights is sampled uniformly).
      ``sampling="inverse"`` weights it by ``1 - s_j`` instead.
    - **Convex representations** (eq. 5): one triple per normal candidate,
      each representation averaging ``n_convex`` instances drawn *with
      replacement* (the abnormal set can be smaller than C) from the view-2
      embeddings.  Gradients flow through anchors and bag instances.
    - **L_conv** (eq. 6): ``-log(e^{a/t} / (e^{a/t} + e^{b/t}))`` with
      ``a = cos(anchor, z+)`` and ``b = cos(anchor, z-)`` (cosine, since
      convex combinations of unit vectors are shorter than 1).  The anchor is
      a third convex representation of the normal set, as eq. 6 is printed
      (``anchor="convex"``); ``anchor="instance"`` uses the normal
      candidate's own view-1 embedding instead (a deviation kept for
      comparison).
    - **L_mean** (eqs. 7-8): NT-Xent at temperature 0.25 on the mean-shifted
      views ``(z - c) / ||z - c||`` plus ``||z1 - c||^2 + ||z2 - c||^2`` (as
      MSAD's code with its ``--angular`` option; MSAD's default leaves this
      centre term out), weighted by ``mean_shift_angular``.  MSAD computes
      the centre ``c`` once from a pretrained encoder, in the eval mode it
      also trains in; here the encoder may start
      from scratch, so ``c`` follows it: it is the normalised mean of the
      previous epoch's training-view embeddings ``z1`` (and ``z2``), the very
      views and mode the loss shifts.  ``L_mean`` is off before
      ``mean_shift_start_epoch`` and in the first epoch (no previous epoch).
      ``mean_shift_center="fixed"`` keeps the first centre to the end, the
      MSAD recipe for a pretrained start (there from clean images before
      any training; here from the training views of the epoch before
      ``L_mean`` starts).
      Eq. 7's negatives ``X^-`` are "augmented copies from different
      instances": by default the other images' views (MSAD);
      ``mean_shift_negatives="rotations"`` adds the rotated views of the
      batch, the shifted instances of CSI (see the ConvexMIL guide for the
      measurement).  Eq. 7's centre term pulls every image, the
      contaminating anomalies too, towards the centre;
      ``mean_shift_pull="normal_candidates"`` spares the abnormal
      candidates of eqs. 1-2 (beyond the paper).
    - **Memory filtering** (``memory_filter``, beyond the paper): eq. 11
      compares a test image with *every* training image, contaminating
      anomalies included, so a test anomaly like one of them scores as
      normal; the filter drops ``memory_fraction`` (by default
      ``abnormal_fraction``) of the training images
      from that reference set (``offset_`` still comes from every training
      image: leave-one-out scores for the kept ones).  With eq. 2's K over a
      large training set, a handful of contaminating images of one kind are
      each other's nearest neighbours and look normal;
      ``memory_neighbors="sqrt"`` grows K with the training set.  The
      filter judges the trained embeddings, or with
      ``memory_filter_features="frozen"`` the untrained ones, which
      ``L_mean`` has not drawn towards the centre.
    - **Optimiser**: Adam without weight decay; the learning rate rises
      linearly from 0 over ``warmup_epochs`` and then follows a cosine to 0 at
      the end of ``n_epochs``, updated per step.  No epoch is chosen on test
      data: the last epoch is kept.
    - **Score** (eq. 11): ``max_j cos(z, z_j) - 1`` over the training
      embeddings (:class:`~ssad.scoring.KNNScorer`, ``metric="cosine"``,
      ``n_neighbors=1``); the ranking is that of eq. 11.  ``score_neighbors``
      > 1 sums the similarities to that many nearest instead.  ``offset_`` comes
      from leave-one-out training scores (each training image against the
      others), so ``predict`` flags about ``contamination`` of new normal
      images.
    - **Defaults** the paper does not give, this implementation's choices:
      K = 5 batch neighbours (``n_batch_neighbors``), C = 5 convex
      candidates (``n_convex``), ``lambda_mean = lambda_rot = 1``,
      ``batch_size=64``, eq. 7's tau = 0.25 (MSAD's), eq. 7's centre term
      in the form of MSAD's code at weight 1 (``mean_shift_angular=1``,
      four times the term as printed), no temperature in
      eq. 6 (as printed: ``convex_temperature=1.0``), ``L_mean`` from epoch
      15 of 200 (``mean_shift_start_epoch``) and eqs. 1-4 on the clean
      images in eval mode (``candidate_view="clean"``).
    - **Rotation-only variant** (the benchmarks' ``rotation-only`` ablation):
      ``use_convex=False, lambda_mean=0, lambda_rot=1``: the encoder learns
      only to predict the rotation of augmented views, and scores with the
      same eq. 11.
    - **Where the full method wins at a CPU budget**: from ImageNet
      EfficientNet-Lite0 (BatchNorm and early stages frozen) at 96 px, with
      ``mean_shift_negatives="rotations"`` and
      ``memory_filter="pseudo_normality"``; on contaminated MNIST it leads
      kNN on pixels and the paper's figures, and its rotation-only ablation
      at 10 % (at 5 % too with every training image; level at 2 %); on
      contaminated Fashion-MNIST it is within 0.3 of the ablation at 300
      images per class, 1.3 behind it at 1000, ahead of the isolation forest
      on pixels in both (the ConvexMIL guide, "Which to use").
      ``ssad.benchmarks.make_estimator("convex-mil-pretrained-96")`` returns
      that configuration.

    References
    ----------
    .. [1] "Learn discrimination from contaminated data: multi-instance
       learning with convex representation for unsupervised anomaly
       detection".
    .. [2] J. Tack, S. Mo, J. Jeong and J. Shin, "CSI: Novelty Detection via
       Contrastive Learning on Distributionally Shifted Instances", NeurIPS
       2020; code: github.com/alinlab/CSI.
    .. [3] T. Reiss and Y. Hoshen, "Mean-Shifted Contrastive Loss for Anomaly
       Detection", AAAI 2023; code: github.com/talreiss/Mean-Shifted-Anomaly-Detection.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.detectors.convex_mil import ConvexMILDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    >>> det = ConvexMILDetector("test_resnet", n_epochs=1, batch_size=8,
    ...                         random_state=0).fit(X)
    >>> det.score_samples(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **ImageDetector._parameter_constraints,
        "freeze_batchnorm": [StrOptions({"auto"}), "boolean"],
        "n_trainable_blocks": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_batch_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "abnormal_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_convex": [Interval(numbers.Integral, 1, None, closed="left")],
        "candidate_view": [StrOptions({"clean", "augmented"})],
        "anchor": [StrOptions(set(ANCHORS))],
        "memory_filter": [StrOptions({"pseudo_normality", "gmm"}), None],
        "memory_neighbors": [
            Interval(numbers.Integral, 1, None, closed="left"),
            StrOptions({"sqrt"}),
            None,
        ],
        "memory_filter_features": [StrOptions({"trained", "frozen"})],
        "memory_fraction": [Interval(numbers.Real, 0, 0.5, closed="right"), None],
        "score_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "sampling": [StrOptions(set(SAMPLINGS))],
        "convex_temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "lambda_mean": [Interval(numbers.Real, 0, None, closed="left")],
        "lambda_rot": [Interval(numbers.Real, 0, None, closed="left")],
        "use_convex": ["boolean"],
        "mean_shift_start_epoch": [Interval(numbers.Integral, 0, None, closed="left")],
        "mean_shift_center": [StrOptions({"running", "fixed"})],
        "mean_shift_angular": [Interval(numbers.Real, 0, None, closed="left")],
        "mean_shift_negatives": [StrOptions({"views", "rotations"})],
        "mean_shift_pull": [StrOptions({"all", "normal_candidates"})],
        "projection_dim": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "n_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "warmup_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "encoder_lr_scale": [Interval(numbers.Real, 0, 1, closed="right")],
        "crop_scale": [tuple, list],
    }

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        pretrained: bool = False,
        checkpoint_path: str | os.PathLike[str] | None = None,
        freeze_batchnorm: str | bool = "auto",
        n_trainable_blocks: int | None = None,
        n_batch_neighbors: int = 5,
        abnormal_fraction: float = 0.1,
        n_convex: int = 5,
        candidate_view: str = "clean",
        anchor: str = "convex",
        memory_filter: str | None = None,
        memory_neighbors: int | str | None = None,
        memory_filter_features: str = "trained",
        memory_fraction: float | None = None,
        score_neighbors: int = 1,
        sampling: str = "paper",
        convex_temperature: float = 1.0,
        lambda_mean: float = 1.0,
        lambda_rot: float = 1.0,
        use_convex: bool = True,
        mean_shift_start_epoch: int = 15,
        mean_shift_center: str = "running",
        mean_shift_angular: float = 1.0,
        mean_shift_negatives: str = "views",
        mean_shift_pull: str = "all",
        projection_dim: int | None = None,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        n_epochs: int = 200,
        warmup_epochs: int = 10,
        batch_size: int = 64,
        num_workers: int = 0,
        learning_rate: float = 1e-3,
        encoder_lr_scale: float = 1.0,
        image_size: int | tuple[int, int] | None = 32,
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
        self.n_trainable_blocks = n_trainable_blocks
        self.n_batch_neighbors = n_batch_neighbors
        self.abnormal_fraction = abnormal_fraction
        self.n_convex = n_convex
        self.candidate_view = candidate_view
        self.anchor = anchor
        self.memory_filter = memory_filter
        self.memory_neighbors = memory_neighbors
        self.memory_filter_features = memory_filter_features
        self.memory_fraction = memory_fraction
        self.score_neighbors = score_neighbors
        self.sampling = sampling
        self.convex_temperature = convex_temperature
        self.lambda_mean = lambda_mean
        self.lambda_rot = lambda_rot
        self.use_convex = use_convex
        self.mean_shift_start_epoch = mean_shift_start_epoch
        self.mean_shift_center = mean_shift_center
        self.mean_shift_angular = mean_shift_angular
        self.mean_shift_negatives = mean_shift_negatives
        self.mean_shift_pull = mean_shift_pull
        self.projection_dim = projection_dim
        self.crop_scale = crop_scale
        self.n_epochs = n_epochs
        self.warmup_epochs = warmup_epochs
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.learning_rate = learning_rate
        self.encoder_lr_scale = encoder_lr_scale
        self.image_size = image_size
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # -- modules ---------------------------------------------------------------
    def _build_modules(self) -> dict[str, nn.Module]:
        encoder = create_backbone(self.backbone, pretrained=False, image_size=self.image_size)
        modules: dict[str, nn.Module] = {"encoder_": encoder}
        if self.lambda_rot > 0:
            modules["rotation_head_"] = nn.Linear(_n_features(encoder), N_ROTATIONS)
        if self.projection_dim is not None:
            modules["projection_head_"] = self._projection_head(_n_features(encoder))
        return modules

    def _projection_head(self, n_features: int) -> nn.Sequential:
        """CSI's projection head (its ``simclr_layer``): Linear, ReLU, Linear."""
        return nn.Sequential(
            nn.Linear(n_features, n_features),
            nn.ReLU(),
            nn.Linear(n_features, int(self.projection_dim)),  # type: ignore[arg-type]
        )

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        """Unit vectors the contrastive terms and eqs. 1-4 work on."""
        if self.projection_head_ is not None:
            h = self.projection_head_(h)
        return F.normalize(h.float(), dim=1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, unnormalised features of a float batch in [0, 1] (differentiable)."""
        return backbone_features(self.encoder_, self.preprocessor_(x), "auto")

    # -- the contract ----------------------------------------------------------
    _normalize_embeddings = True  # eq. 11 compares unit vectors

    def _embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        return backbone_features(self.encoder_, x, "auto")

    def _make_scorer(self) -> KNNScorer | FilteredFit:
        knn = KNNScorer(metric="cosine", n_neighbors=self.score_neighbors)  # eq. 11 with 1
        if self.memory_filter is None:
            return knn
        fraction = self.abnormal_fraction if self.memory_fraction is None else self.memory_fraction
        if self.memory_filter == "gmm":
            memory_filter: Any = GMMOutlierFilter(contamination=fraction, random_state=0)
        else:  # eq. 2 over the training set: mean cosine similarity to the K nearest
            k = self.n_batch_neighbors if self.memory_neighbors is None else self.memory_neighbors
            memory_filter = KNNScorer(
                n_neighbors=k,
                metric="cosine",
                aggregate="mean",
                contamination=fraction,
            )
        return FilteredFit(memory_filter, knn)

    def _min_train_images(self) -> int:
        # the score's K nearest are searched among the other kept images
        n_score = self.score_neighbors + 1
        if not self.memory_filter:
            return max(2, n_score)
        fraction = self.abnormal_fraction if self.memory_fraction is None else self.memory_fraction
        n_score = math.ceil(n_score / (1 - fraction))
        if self.memory_filter == "gmm":
            return max(2, n_score)
        if self.memory_neighbors is not None:
            k = 1 if self.memory_neighbors == "sqrt" else int(self.memory_neighbors)
            return max(2, k + 1, n_score)
        return max(2, self.n_batch_neighbors + 1, n_score)

    def _check_objective(self) -> None:
        check_crop_scale(self.crop_scale, "crop_scale", "ConvexMILDetector")
        # L_mean needs the centre of a previous epoch: it never runs in the first one
        first_mean_shift_epoch = max(self.mean_shift_start_epoch, 1)
        mean_shift_runs = self.lambda_mean > 0 and first_mean_shift_epoch < self.n_epochs
        if not (self.use_convex or self.lambda_rot > 0 or mean_shift_runs):
            raise ValueError(
                "ConvexMILDetector has nothing to train: use_convex=False, lambda_rot=0 and "
                f"lambda_mean={self.lambda_mean}, which runs from epoch "
                f"{first_mean_shift_epoch} (mean_shift_start_epoch={self.mean_shift_start_epoch}, "
                f"never the first) of n_epochs={self.n_epochs}. Switch on at least one loss term "
                "or train for more epochs."
            )

    def _fit_model(self, X: ImageSet, rng: np.random.Generator) -> None:
        self._check_objective()
        encoder = create_backbone(
            self.backbone,
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            image_size=self.image_size,
        )
        if self.n_trainable_blocks is not None:
            freeze_early_layers(encoder, self.n_trainable_blocks)
        self.encoder_ = encoder.to(self.device_)
        self.preprocessor_ = self._preprocessor(data_config(encoder))
        self.rotation_head_: nn.Linear | None = None
        if self.lambda_rot > 0:
            self.rotation_head_ = nn.Linear(_n_features(encoder), N_ROTATIONS).to(self.device_)
        self.projection_head_: nn.Sequential | None = None
        if self.projection_dim is not None:
            head = self._projection_head(_n_features(encoder))
            self.projection_head_ = head.to(self.device_)
        self.center_: np.ndarray | None = None
        self.loss_curve_: list[float] = []
        self._untrained_embeddings: np.ndarray | None = None
        if self.memory_filter is not None and self.memory_filter_features == "frozen":
            # what frozen_features() gives, from this very encoder before its first step
            for part in (self.encoder_, self.rotation_head_, self.projection_head_):
                if part is not None:
                    part.eval()
            self._untrained_embeddings = self._embed(X, "embed untrained")
        self._train(X, rng)

    def _fit_scorer(self, X: ImageSet, rng: np.random.Generator) -> np.ndarray:
        """Eq. 11's reference set, the memory filter fed the untrained embeddings if asked."""
        untrained, self._untrained_embeddings = self._untrained_embeddings, None
        if untrained is None:
            return super()._fit_scorer(X, rng)
        self.scorer_ = self._make_scorer().fit(self._embed(X, "embed"), X_filter=untrained)
        train_scores: np.ndarray = self.scorer_.train_scores_
        return train_scores

    def _train(self, X: ImageSet, rng: np.random.Generator) -> None:
        module = nn.ModuleDict({"encoder": self.encoder_})
        if self.rotation_head_ is not None:
            module["rotation_head"] = self.rotation_head_
        if self.projection_head_ is not None:
            module["projection_head"] = self.projection_head_
        n, bs = len(X), self.batch_size
        n_steps = steps_per_epoch(n, bs, drop_last=True)
        lr_schedule = cosine_schedule(
            self.learning_rate,
            0.0,
            total_steps=self.n_epochs * n_steps,
            warmup_steps=self.warmup_epochs * n_steps,
        )
        low, high = self.crop_scale
        views = Compose(
            [
                RandomResizedCrop(self.preprocessor_.size, scale=(float(low), float(high))),
                RandomHorizontalFlip(0.5),
                ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
                RandomGrayscale(0.2),
            ]
        )
        convex = ConvexMILLoss(
            n_neighbors=self.n_batch_neighbors,
            abnormal_fraction=self.abnormal_fraction,
            n_convex=self.n_convex,
            sampling=self.sampling,
            temperature=self.convex_temperature,
            anchor=self.anchor,
        )
        # the mean-shift centre: the normalised mean of the previous epoch's training
        # embeddings, taken from the views and in the mode the loss itself uses
        state: dict[str, Any] = {"center": None, "sum": None}
        self.abnormal_candidates_ = np.zeros(n, dtype=bool)

        def before_epoch(epoch: int) -> None:
            total = state["sum"]
            if total is not None:  # under torchrun: every process's embeddings
                total = all_reduce_sum(total)
            mean_shift = self.lambda_mean > 0 and epoch >= self.mean_shift_start_epoch
            center = None
            if mean_shift and self.mean_shift_center == "fixed" and state["center"] is not None:
                center = state["center"]
            elif mean_shift and total is not None:
                center = F.normalize(total, dim=0)
                self.center_ = center.cpu().numpy()
            state.update(center=center, sum=None)
            self.abnormal_candidates_[:] = False

        def loss_fn(batch: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            loss, z, abnormal = self._loss(batch, views, convex, state["center"])
            total = z.detach().float().sum(dim=0)
            state["sum"] = total if state["sum"] is None else state["sum"] + total
            if abnormal is not None:
                self.abnormal_candidates_[idx[abnormal.cpu().numpy()]] = True
            return loss

        result = train(
            module,
            loss_fn,
            X,
            optimizer=torch.optim.Adam(self._param_groups(module), lr=self.learning_rate),
            n_epochs=self.n_epochs,
            batch_size=bs,
            num_workers=self.num_workers,
            device=self.device_,
            rng=rng,
            precision=self.precision,
            image_size=self.preprocessor_.size,
            interpolation=self.preprocessor_.interpolation,
            lr_schedule=lr_schedule,
            before_epoch=before_epoch,
            frozen=self._frozen_batchnorm(self.encoder_),
            drop_last=True,
            pass_indices=True,
            verbose=self.verbose,
            desc="ConvexMIL",
        )
        self.loss_curve_ = result.loss_curve
        # under torchrun each process marked the candidates of its share of the batches
        marks = torch.from_numpy(self.abnormal_candidates_.astype(np.float64))
        self.abnormal_candidates_ = all_reduce_sum(marks).numpy() > 0

    def _param_groups(self, module: nn.ModuleDict) -> list[dict[str, Any]]:
        """The encoder's trainable parameters at ``encoder_lr_scale``, the heads' at 1."""
        groups = []
        for name, part in module.items():
            scale = self.encoder_lr_scale if name == "encoder" else 1.0
            params = [p for p in part.parameters() if p.requires_grad]
            groups.append({"params": params, "lr": self.learning_rate * scale, "lr_scale": scale})
        return [g for g in groups if g["params"]]

    def _loss(
        self,
        batch: torch.Tensor,
        views: Callable[[torch.Tensor], torch.Tensor],
        convex: ConvexMILLoss,
        center: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Eq. 10 on one batch (``center`` is None while L_mean is off).

        Returns the loss, the unit embeddings of the unrotated training views,
        and the batch positions of the abnormal candidates (None without L_conv).
        """
        b = batch.shape[0]
        rotated_negatives = center is not None and self.mean_shift_negatives == "rotations"
        n_rot = N_ROTATIONS if self.rotation_head_ is not None or rotated_negatives else 1
        two_views = self.use_convex or center is not None
        parts = [views(torch.rot90(batch, k, dims=(2, 3))) for k in range(n_rot)]
        if two_views:
            parts.append(views(batch))
        h = self._features(torch.cat(parts))
        z1 = self._project(h[:b])
        z2 = self._project(h[-b:]) if two_views else z1
        loss = z1.sum() * 0.0  # keeps the graph when no term is active this epoch
        abnormal = candidates = None
        pull_normal = center is not None and self.mean_shift_pull == "normal_candidates"
        if self.use_convex or pull_normal:
            if self.candidate_view == "clean":  # eqs. 1-4 on the clean images, eval mode
                with evaluating(self.encoder_):
                    selection = self._project(self._features(batch))
            else:
                selection = z1
            candidates = convex.candidates(selection)
            abnormal = candidates.abnormal
        if self.use_convex:
            loss = loss + convex(z1, z2, candidates=candidates)
        if center is not None:
            shifted = self._project(h[b : n_rot * b]) if rotated_negatives else None
            pulled = None
            if pull_normal:
                pulled = torch.ones(b, dtype=torch.bool, device=z1.device)
                pulled[abnormal] = False
            ms = mean_shifted_loss(
                z1,
                z2,
                center,
                angular=self.mean_shift_angular,
                negatives=shifted,
                pulled=pulled,
            )
            loss = loss + self.lambda_mean * ms
        if self.rotation_head_ is not None:
            logits = self.rotation_head_(h[: N_ROTATIONS * b]).float()
            labels = torch.arange(N_ROTATIONS, device=logits.device).repeat_interleave(b)
            loss = loss + self.lambda_rot * F.cross_entropy(logits, labels)
        return loss, torch.cat([z1, z2]) if two_views else z1, abnormal
