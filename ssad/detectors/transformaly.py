"""Transformaly: a pretrained feature space and a teacher-student discrepancy space."""

from __future__ import annotations

import copy
import logging
import numbers
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ssad._images import ImageSet
from ssad._training import train
from ssad.backbones import capture_blocks, create_backbone, data_config, trunk_blocks
from ssad.base import BaseDetector
from ssad.detectors._base import ImageDetector
from ssad.features import backbone_features, tokens_to_grid
from ssad.scoring import GaussianScorer, GMMOutlierFilter, KNNScorer, SumScorer

__all__ = ["Transformaly", "TransformalyDetector"]

logger = logging.getLogger(__name__)


def _reinit_(module: nn.Module) -> None:
    """Random initialisation of the reference code: Xavier-uniform linear weights,
    N(0, 1e-6) biases; other layers (norms, convolutions) reset to their defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=1e-6)
        elif m is not module and callable(getattr(m, "reset_parameters", None)):
            getattr(m, "reset_parameters")()  # noqa: B009


def _make_students(blocks: list[nn.Module], init: str, dropout: float) -> nn.ModuleList:
    students = nn.ModuleList(copy.deepcopy(b) for b in blocks)
    if init == "random":
        for student in students:
            _reinit_(student)
    for m in students.modules():
        if isinstance(m, nn.Dropout):
            m.p = dropout
    for p in students.parameters():
        p.requires_grad_(True)
    return students


class TransformalyDetector(ImageDetector):
    """Transformaly: two feature spaces, pretrained and teacher-student, are better than one.

    A frozen pretrained backbone (the teacher) gives the *pretrained* space
    ``z_p``: its class token after the final norm (CNNs: global average
    pooling).  For each of its last ``n_student_blocks`` blocks a student block
    of the same architecture is trained, on normal images only, to reproduce the
    teacher block's output from the teacher's input to that block (teacher
    forcing); one teacher forward per batch feeds every student.  The
    *fine-tuned* space ``z_f`` holds, per block, the squared L2 discrepancy
    between student and teacher outputs averaged over tokens and channels.
    A Gaussian is fitted in each space (``z_p`` after PCA whitening) and

    ``score_samples = log p(z_p) + log p(z_f)``   (higher = more normal; paper eq. 5).

    ``scorer`` changes the density of the *pretrained* space only, as the
    paper's Tables 4 and 6 do (kNN with ``n_neighbors`` k, or a Gaussian
    mixture of ``n_components``); ``z_f`` always has the paper's Gaussian.
    When the two densities are not both Gaussians (a one-component mixture
    is one) their scores are on
    different scales, so each is standardised by the mean and standard
    deviation of its training scores before they are added
    (:class:`~ssad.scoring.SumScorer`).

    With students (``feature_space`` other than ``"pretrained"``) the
    detector localises: :meth:`anomaly_map` keeps the per-position
    discrepancy that ``z_f`` averages away.  At each position of a student
    block's output (a patch token of a ViT, a cell of a CNN stage) the
    squared error is averaged over channels and divided by that block's mean
    discrepancy on the training images (the mean of ``z_f``), so that every
    block counts alike; the blocks' grids are upsampled to the finest one
    and *averaged*.

    Parameters
    ----------
    backbone : str, default="vit_base_patch16_384.orig_in21k_ft_in1k"
        timm teacher.  The default is the paper's ViT-B/16, pretrained on
        ImageNet-21k and fine-tuned on ImageNet-1k at 384 px, the weights the
        reference code uses.  Any timm model whose trunk is a sequence of
        blocks works (:func:`ssad.backbones.trunk_blocks`): ViT ``blocks``,
        ResNet stages, EfficientNet stages.
    pretrained : bool, default=True
        Load the backbone's pretrained weights.
    checkpoint_path : str or path-like, default=None
        Local weights file used instead of the hub.
    n_student_blocks : int, default=10
        Number m of final teacher blocks that get a student (paper: 10 of 12).
    student_init : {"random", "copy"}, default="random"
        Students start from a random initialisation (as in the reference code)
        or from a copy of the teacher block.  A copy reproduces its teacher
        block exactly unless the block has active dropout, so ``"copy"`` makes
        ``z_f`` vanish for timm's ViTs (no dropout): it is for experiments.
    variance : float in (0, 1], default=0.9
        Explained variance kept by the PCA whitening of ``z_p``.
    feature_space : {"both", "pretrained", "finetuned"}, default="both"
        Which log-likelihoods enter the score (the paper's table 3 ablation).
        ``"pretrained"`` trains no students.
    scorer : {"gaussian", "knn", "gmm"}, default="gaussian"
        Density of the pretrained space: a full-covariance Gaussian after PCA
        whitening (the paper), minus the summed distance to the
        ``n_neighbors`` nearest training embeddings, or a full-covariance
        Gaussian mixture of ``n_components`` after the same whitening (paper
        Tables 4 and 6: k in {2, 5}, n in {1, 5, 20}).
    n_neighbors : int, default=2
        k of ``scorer="knn"``.
    metric : {"l2", "cosine"}, default="l2"
        Distance of ``scorer="knn"``: Euclidean (the reference code's) or
        the cosine distance ``1 - cos`` (:class:`~ssad.scoring.KNNScorer`'s
        ``metric``).  Unused by the other scorers.
    n_components : int, default=5
        Mixture components of ``scorer="gmm"``.
    dropout : float in [0, 1), default=0.1
        Dropout rate of the students' dropout layers during training (the
        paper's ViT has 0.1).  It sets the ``p`` of every ``nn.Dropout`` in
        the student blocks (timm ViT blocks: attention, projection and MLP
        dropout); blocks without dropout layers (CNN stages) are unaffected.
    n_epochs : int, default=30
        Most student training epochs.
    n_iter_no_change : int or None, default=None
        Stop training once the validation loss has not improved for this many
        epochs (needs ``validation_fraction``); None trains ``n_epochs``.
    batch_size : int, default=32
        Images per training step and per inference batch.
    num_workers : int, default=0
        Image files (inputs given as paths) are decoded and resized in this
        many :class:`torch.utils.data.DataLoader` worker processes, ahead of
        the model, while training and embedding; 0 decodes them in the
        calling process.  Arrays, tensors and PIL images are not affected.
    learning_rate : float, default=1e-4
        Adam learning rate.
    validation_fraction : float in (0, 1) or None, default=0.1
        Share of the training images held out to choose the best epoch by the
        students' validation loss; ``None`` keeps the last epoch and uses every
        image for training.
    image_size : int or (int, int), default=None
        Input size; default: the teacher's pretrained config.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``; see :class:`ssad.base.BaseDetector`.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Where the networks run.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype; ``"auto"`` is bfloat16 on CUDA, float32 elsewhere.
    random_state : int, RandomState or None, default=None
        Seeds the validation split, the shuffling and the student
        initialisation (through local generators).
    verbose : int, default=0
        Progress bars when > 0.

    Attributes
    ----------
    teacher_ : torch.nn.Module
        The frozen backbone.
    students_ : torch.nn.ModuleList or None
        The trained student blocks (None when ``feature_space="pretrained"``).
    student_blocks_ : list of int
        Indices of the teacher blocks that have a student.
    n_pretrained_features_ : int
        Width of ``z_p`` (0 when the pretrained space is not used); the
        embeddings of :meth:`transform` are ``[z_p, z_f]``.
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation from the teacher's data config.
    scorer_ : ssad.scoring.SumScorer
        The densities of the spaces used, parts ``"pretrained"`` and
        ``"finetuned"`` (``scorer_.score_parts(transform(X))`` gives each).
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_curve_ : list of float
        Mean validation loss per epoch (empty without validation).
    best_epoch_ : int
        Epoch whose student weights were kept (0-based; -1 without students).
    n_epochs_ : int
        Epochs trained (fewer than ``n_epochs`` after early stopping).
    device_ : torch.device
        The resolved device.
    world_size_ : int
        Number of processes that trained together: the ``torchrun``
        processes, 1 without ``torchrun``.
    offset_ : float
        Threshold on ``score_samples``.

    See Also
    --------
    Transformaly : the same class under its short name.
    ssad.GaussianScorer : the density of each space.

    Notes
    -----
    Deviations from the reference code (github MatanCohen1/Transformaly) and
    the paper, all deliberate:

    - The reference code picks the best training epoch by the loss on normal
      *test* images.  Here ``validation_fraction`` of the *training* images is
      held out for that choice (``None`` disables it); test data is never seen
      in ``fit``.
    - The reference code sets the PCA dimension to the index of the first
      eigenvalue whose cumulative share exceeds ``variance`` (one component
      fewer than needed); here scikit-learn's ``PCA(n_components=variance)``
      keeps the smallest number of components reaching it.
    - Students train with ``dropout`` (0.1, the paper's ViT).  The reference
      code also runs the *teacher* in train mode, so its targets carry
      dropout noise; here the teacher is always in eval mode (deterministic
      targets, and the BatchNorm statistics of CNN teachers stay those of the
      pretrained weights).
    - No training augmentation is applied (the reference code's training
      loader has none either); images are resized to the input size without
      a centre crop.
    - Beyond the paper, CNN teachers work: their blocks are the trunk's stages
      and ``z_p`` is the global-average-pooled final feature map.
    - ``z_f`` uses the squared discrepancy as it is (the reference code negates
      it, which a Gaussian does not see).
    - ``scorer="knn"`` / ``"gmm"`` (``n_components > 1``) standardise each
      space's score by its training scores before adding them (the paper
      does not say how it combines a kNN score with a log-likelihood).

    References
    ----------
    .. [1] M. J. Cohen and S. Avidan, "Transformaly - Two (Feature Spaces) Are
       Better Than One", CVPR Workshops 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad import Transformaly
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    >>> det = Transformaly(backbone="test_vit", pretrained=False, image_size=32,
    ...                    n_student_blocks=2, n_epochs=1, random_state=0).fit(X)
    >>> det.score_samples(X[:3]).shape
    (3,)
    >>> det.anomaly_map(X[:3]).shape  # per pixel, higher = more anomalous
    (3, 32, 32)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **ImageDetector._parameter_constraints,
        "n_student_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "student_init": [StrOptions({"random", "copy"})],
        "variance": [Interval(numbers.Real, 0, 1, closed="right")],
        "feature_space": [StrOptions({"both", "pretrained", "finetuned"})],
        "scorer": [StrOptions({"gaussian", "knn", "gmm"})],
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric": [StrOptions({"l2", "cosine"})],
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
    }

    def __init__(
        self,
        backbone: str = "vit_base_patch16_384.orig_in21k_ft_in1k",
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        n_student_blocks: int = 10,
        student_init: str = "random",
        variance: float = 0.9,
        feature_space: str = "both",
        scorer: str = "gaussian",
        n_neighbors: int = 2,
        metric: str = "l2",
        n_components: int = 5,
        dropout: float = 0.1,
        n_epochs: int = 30,
        n_iter_no_change: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        learning_rate: float = 1e-4,
        validation_fraction: float | None = 0.1,
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
        self.n_student_blocks = n_student_blocks
        self.student_init = student_init
        self.variance = variance
        self.feature_space = feature_space
        self.scorer = scorer
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.n_components = n_components
        self.dropout = dropout
        self.n_epochs = n_epochs
        self.n_iter_no_change = n_iter_no_change
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.image_size = image_size
        self.contamination = contamination
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # -- modules ---------------------------------------------------------------
    def _build_modules(self) -> dict[str, nn.Module]:
        teacher = create_backbone(self.backbone, pretrained=False, image_size=self.image_size)
        modules: dict[str, nn.Module] = {"teacher_": teacher.requires_grad_(False)}
        if self.feature_space != "pretrained":
            blocks = trunk_blocks(teacher)
            modules["students_"] = _make_students(
                [blocks[i] for i in self.student_blocks_], "copy", self.dropout
            )
        return modules

    def _teacher_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        """One teacher forward: ``z_p`` and the (input, output) of every student's block."""
        blocks = trunk_blocks(self.teacher_)
        watched = [blocks[i] for i in self.student_blocks_] if self.students_ is not None else []
        with torch.no_grad(), capture_blocks(watched) as io:
            z_p = backbone_features(self.teacher_, x, "auto")
        return z_p, [io[id(block)] for block in watched]

    def _discrepancies(self, block_io: list[Any]) -> torch.Tensor:
        """(b, m): per-block squared error averaged over tokens / positions and channels."""
        assert self.students_ is not None
        cols = []
        for student, (inp, target) in zip(self.students_, block_io):
            err = (student(inp).float() - target.float()) ** 2
            cols.append(err.flatten(1).mean(dim=1))
        return torch.stack(cols, dim=1)

    def _has_anomaly_map(self) -> bool:
        return self.feature_space != "pretrained"

    def _map_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(b, h, w): per-position discrepancy / its training mean, averaged over blocks."""
        assert self.students_ is not None
        _, block_io = self._teacher_pass(x)
        parts = {name: scorer for name, scorer, _ in self.scorer_.scorers_}
        scales = np.maximum(parts["finetuned"].location_, np.finfo(np.float32).tiny)
        grids = []
        for student, (inp, target), scale in zip(self.students_, block_io, scales):
            err = (student(inp).float() - target.float()) ** 2
            grids.append(tokens_to_grid(self.teacher_, err).mean(dim=1, keepdim=True) / scale)
        size = max((g.shape[-2:] for g in grids), key=lambda hw: hw[0] * hw[1])
        grids = [F.interpolate(g, size=size, mode="bilinear", align_corners=False) for g in grids]
        return torch.cat(grids, dim=1).mean(dim=1)

    def _embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        z_p, block_io = self._teacher_pass(x)
        parts = [z_p.float()] if self.feature_space != "finetuned" else []
        if self.students_ is not None:
            parts.append(self._discrepancies(block_io))
        return torch.cat(parts, dim=1)

    def _density(self, space: str) -> BaseDetector:
        if space == "finetuned":  # m-dim discrepancies: no PCA, as in the reference code
            return GaussianScorer(variance=None, whiten=False)
        if self.scorer == "knn":
            return KNNScorer(n_neighbors=self.n_neighbors, metric=self.metric)
        if self.scorer == "gaussian":
            return GaussianScorer(variance=self.variance, whiten=True)
        gmm = GMMOutlierFilter(
            n_components=[self.n_components],
            covariance_types=("full",),
            random_state=self.random_state,
        )
        return make_pipeline(PCA(n_components=self.variance, whiten=True, svd_solver="full"), gmm)

    def _make_scorer(self) -> SumScorer:
        d_p = self.n_pretrained_features_
        parts = []
        if self.feature_space != "finetuned":
            parts.append(("pretrained", self._density("pretrained"), slice(0, d_p)))
        if self.feature_space != "pretrained":
            parts.append(("finetuned", self._density("finetuned"), slice(d_p, None)))
        # a one-component mixture is a Gaussian: the paper's sum of log-likelihoods
        gaussian = self.scorer == "gaussian" or (self.scorer == "gmm" and self.n_components == 1)
        return SumScorer(parts, standardize=not gaussian and len(parts) > 1)

    def _min_train_images(self) -> int:
        n_val = (
            1 if self.validation_fraction is not None and self.feature_space != "pretrained" else 0
        )
        n_scorer = self.n_neighbors + 1 if self.scorer == "knn" else 2
        return n_scorer + n_val

    # -- the contract ----------------------------------------------------------
    def _fit_model(self, X: ImageSet, rng: np.random.Generator) -> None:
        if self.n_iter_no_change is not None and self.validation_fraction is None:
            raise ValueError(
                f"n_iter_no_change={self.n_iter_no_change} stops on the validation loss, "
                "which needs validation_fraction; got validation_fraction=None. Set both or "
                "neither."
            )
        teacher = create_backbone(
            self.backbone,
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            image_size=self.image_size,
        )
        self.teacher_ = teacher.requires_grad_(False).to(self.device_).eval()
        self.preprocessor_ = self._preprocessor(data_config(teacher))
        blocks = trunk_blocks(teacher)
        if self.n_student_blocks > len(blocks):
            raise ValueError(
                f"n_student_blocks={self.n_student_blocks} but {self.backbone!r} has only "
                f"{len(blocks)} trunk blocks; use n_student_blocks <= {len(blocks)}."
            )
        self.student_blocks_ = list(range(len(blocks) - self.n_student_blocks, len(blocks)))
        self.n_pretrained_features_ = (
            0 if self.feature_space == "finetuned" else int(getattr(teacher, "num_features"))  # noqa: B009
        )
        self.students_: nn.ModuleList | None = None
        self.loss_curve_: list[float] = []
        self.validation_curve_: list[float] = []
        self.best_epoch_ = -1
        self.n_epochs_ = 0
        if self.feature_space != "pretrained":
            self._train_students(X, blocks, rng)

    def _train_students(
        self, X: ImageSet, blocks: list[nn.Module], rng: np.random.Generator
    ) -> None:
        train_set, val_set = X, None
        if self.validation_fraction is not None:
            n_val = min(max(1, int(self.validation_fraction * len(X))), len(X) - 1)
            order = rng.permutation(len(X))
            val_set, train_set = X.subset(order[:n_val]), X.subset(order[n_val:])
        students = _make_students(
            [blocks[i] for i in self.student_blocks_], self.student_init, self.dropout
        )
        self.students_ = students.to(self.device_)

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            _, block_io = self._teacher_pass(self.preprocessor_(batch))
            return self._discrepancies(block_io).mean()

        result = train(
            self.students_,
            loss_fn,
            train_set,
            optimizer=torch.optim.Adam(self.students_.parameters(), lr=self.learning_rate),
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device_,
            rng=rng,
            precision=self.precision,
            image_size=self.preprocessor_.size,
            interpolation=self.preprocessor_.interpolation,
            validation_images=val_set,
            n_iter_no_change=self.n_iter_no_change,
            verbose=self.verbose,
            desc="Transformaly students",
        )
        self.loss_curve_ = result.loss_curve
        self.validation_curve_ = result.validation_curve
        self.best_epoch_ = result.best_epoch
        self.n_epochs_ = result.n_epochs
        if result.loss_curve and max(result.loss_curve) == 0.0:
            logger.warning(
                "The Transformaly students reproduce their teacher blocks exactly (training "
                "loss 0, as with student_init='copy' and no active dropout): z_f is constant "
                "and the fine-tuned space carries no information."
            )


#: Short name of :class:`TransformalyDetector`.
Transformaly = TransformalyDetector
