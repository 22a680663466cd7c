"""Transformaly: a pretrained feature space and a teacher-student discrepancy space."""

from __future__ import annotations

import copy
import logging
import numbers
import os
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn
from tqdm.auto import tqdm

from ssad._images import ImageSet, Preprocessor
from ssad._training import seeded, train
from ssad.backbones import (
    autocast,
    create_backbone,
    data_config,
    forward_features,
    pool,
    trunk_blocks,
)
from ssad.base import resolve_device
from ssad.detectors._base import ImageDetector
from ssad.scoring import GaussianScorer, GMMOutlierFilter, KNNScorer

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


def _final_step(estimator: Any) -> Any:
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def _make_students(blocks: list[nn.Module], init: str) -> nn.ModuleList:
    students = nn.ModuleList(copy.deepcopy(b) for b in blocks)
    if init == "random":
        for student in students:
            _reinit_(student)
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

    ``score_samples = log p(z_p) + log p(z_f)``   (higher = more normal).

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
        Density in each space: a full-covariance Gaussian (the paper), minus
        the summed distance to the 2 nearest training embeddings, or a Gaussian
        mixture chosen by BIC (paper tables 4 and 6).
    n_epochs : int, default=30
        Student training epochs.
    batch_size : int, default=32
        Images per training step and per inference batch.
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
    preprocessor_ : ssad._images.Preprocessor
        Resize / normalisation from the teacher's data config.
    pretrained_scorer_, finetuned_scorer_ : estimator or None
        Fitted scorers of ``z_p`` and ``z_f`` (None when unused).
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_curve_ : list of float
        Mean validation loss per epoch (empty without validation).
    best_epoch_ : int
        Epoch whose student weights were kept (0-based; -1 without students).
    device_ : torch.device
        The resolved device.
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
    - The reference ViT has dropout 0.1 in every block; students here keep the
      dropout of the timm backbone's blocks (0 for timm's ViT weights).
    - No training augmentation is applied (the reference code's training
      loader has none either); images are resized to the input size without
      a centre crop.
    - Beyond the paper, CNN teachers work: their blocks are the trunk's stages
      and ``z_p`` is the global-average-pooled final feature map.
    - ``z_f`` uses the squared discrepancy as it is (the reference code negates
      it, which a Gaussian does not see).

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
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **ImageDetector._parameter_constraints,
        "n_student_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "student_init": [StrOptions({"random", "copy"})],
        "variance": [Interval(numbers.Real, 0, 1, closed="right")],
        "feature_space": [StrOptions({"both", "pretrained", "finetuned"})],
        "scorer": [StrOptions({"gaussian", "knn", "gmm"})],
        "n_epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
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
        n_epochs: int = 30,
        batch_size: int = 32,
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
        self.n_epochs = n_epochs
        self.batch_size = batch_size
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
            modules["students_"] = _make_students([blocks[i] for i in self.student_blocks_], "copy")
        return modules

    def _teacher_pass(
        self, x: torch.Tensor, with_blocks: bool
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One teacher forward: final features and (input, output) of every student block."""
        captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        handles = []
        if with_blocks:
            blocks = trunk_blocks(self.teacher_)
            for j, i in enumerate(self.student_blocks_):

                def hook(_m: nn.Module, inp: Any, out: torch.Tensor, j: int = j) -> None:
                    captured[j] = (inp[0], out)

                handles.append(blocks[i].register_forward_hook(hook))
        try:
            with torch.no_grad():
                feats = forward_features(self.teacher_, x)
        finally:
            for h in handles:
                h.remove()
        return feats, [captured[j] for j in range(len(captured))]

    def _discrepancies(self, block_io: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """(b, m): per-block squared error averaged over tokens / positions and channels."""
        assert self.students_ is not None
        cols = []
        for student, (inp, target) in zip(self.students_, block_io):
            err = (student(inp).float() - target.float()) ** 2
            cols.append(err.flatten(1).mean(dim=1))
        return torch.stack(cols, dim=1)

    def _embed(self, images: ImageSet, desc: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """z_p and z_f of every image (None for a space that is not used)."""
        use_p = self.feature_space in ("both", "pretrained")
        use_f = self.feature_space in ("both", "finetuned")
        zp, zf = [], []
        with (
            torch.inference_mode(),
            tqdm(total=len(images), disable=self.verbose <= 0, desc=desc, unit="img") as bar,
        ):
            for x in self.preprocessor_.batches(images, self.batch_size, self.device_):
                with autocast(self.device_, self.precision):
                    feats, block_io = self._teacher_pass(x, with_blocks=use_f)
                    if use_p:
                        zp.append(pool(self.teacher_, feats, "cls" if feats.ndim == 3 else "mean"))
                    if use_f:
                        zf.append(self._discrepancies(block_io))
                bar.update(len(x))
        as_np = lambda zs: torch.cat(zs).float().cpu().numpy().astype(np.float64) if zs else None  # noqa: E731
        return as_np(zp), as_np(zf)

    def _new_scorer(self, space: str) -> Any:
        if self.scorer == "knn":
            return KNNScorer(n_neighbors=2)
        if space == "finetuned":  # m-dim discrepancies: no PCA, as in the reference code
            return (
                GaussianScorer(variance=None, whiten=False)
                if self.scorer == "gaussian"
                else GMMOutlierFilter(covariance_types=("full",), max_components=5, random_state=0)
            )
        if self.scorer == "gaussian":
            return GaussianScorer(variance=self.variance, whiten=True)
        return make_pipeline(
            PCA(n_components=self.variance, whiten=True, svd_solver="full"),
            GMMOutlierFilter(covariance_types=("full",), max_components=5, random_state=0),
        )

    # -- the contract ----------------------------------------------------------
    def _fit(self, X: ImageSet) -> np.ndarray:
        self.device_ = resolve_device(self.device)
        with seeded(self.random_state, self.device_) as seed:
            return self._fit_seeded(X, np.random.default_rng(seed))

    def _fit_seeded(self, X: ImageSet, rng: np.random.Generator) -> np.ndarray:
        teacher = create_backbone(
            self.backbone,
            pretrained=self.pretrained,
            checkpoint_path=self.checkpoint_path,
            image_size=self.image_size,
        )
        teacher.requires_grad_(False)
        self.teacher_ = teacher.to(self.device_).eval()
        self.preprocessor_ = Preprocessor.from_data_config(data_config(teacher), self.image_size)
        blocks = trunk_blocks(teacher)
        if self.n_student_blocks > len(blocks):
            raise ValueError(
                f"n_student_blocks={self.n_student_blocks} but {self.backbone!r} has only "
                f"{len(blocks)} trunk blocks; use n_student_blocks <= {len(blocks)}."
            )
        self.student_blocks_ = list(range(len(blocks) - self.n_student_blocks, len(blocks)))
        self.students_: nn.ModuleList | None = None
        self.loss_curve_: list[float] = []
        self.validation_curve_: list[float] = []
        self.best_epoch_ = -1
        if self.feature_space != "pretrained":
            self._train_students(X, blocks, rng)

        zp, zf = self._embed(X, desc="Transformaly embed")
        self.pretrained_scorer_ = None if zp is None else self._new_scorer("pretrained").fit(zp)
        self.finetuned_scorer_ = None if zf is None else self._new_scorer("finetuned").fit(zf)
        # the scorers' own training scores (leave-one-out for kNN) set the threshold
        scorers = [s for s in (self.pretrained_scorer_, self.finetuned_scorer_) if s is not None]
        return np.sum([_final_step(s).train_scores_ for s in scorers], axis=0)

    def _train_students(
        self, X: ImageSet, blocks: list[nn.Module], rng: np.random.Generator
    ) -> None:
        train_set, val_set = X, None
        n_val = 0 if self.validation_fraction is None else int(self.validation_fraction * len(X))
        if n_val >= 1 and len(X) - n_val >= 1:
            order = rng.permutation(len(X))
            val_set, train_set = X.subset(order[:n_val]), X.subset(order[n_val:])
        elif self.validation_fraction is not None:
            logger.warning(
                "validation_fraction=%s leaves no validation image out of %d; keeping the last "
                "epoch.",
                self.validation_fraction,
                len(X),
            )
        students = _make_students([blocks[i] for i in self.student_blocks_], self.student_init)
        self.students_ = students.to(self.device_)

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            _, block_io = self._teacher_pass(self.preprocessor_(batch), with_blocks=True)
            return self._discrepancies(block_io).mean()

        result = train(
            self.students_,
            loss_fn,
            train_set,
            optimizer=torch.optim.Adam(self.students_.parameters(), lr=self.learning_rate),
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            device=self.device_,
            rng=rng,
            precision=self.precision,
            image_size=self.preprocessor_.size,
            interpolation=self.preprocessor_.interpolation,
            validation_images=val_set,
            verbose=self.verbose,
            desc="Transformaly students",
        )
        self.loss_curve_ = result.loss_curve
        self.validation_curve_ = result.validation_curve
        self.best_epoch_ = result.best_epoch

    def _combine(self, zp: np.ndarray | None, zf: np.ndarray | None) -> np.ndarray:
        score = np.zeros(len(zp if zp is not None else zf), dtype=np.float64)  # type: ignore[arg-type]
        for z, scorer in ((zp, self.pretrained_scorer_), (zf, self.finetuned_scorer_)):
            if z is not None and scorer is not None:
                score += scorer.score_samples(z)
        return score

    def _score_samples(self, X: ImageSet) -> np.ndarray:
        return self._combine(*self._embed(X, desc="Transformaly score"))

    def transform(self, X: Any) -> np.ndarray:
        """The two feature spaces of each image, side by side.

        Parameters
        ----------
        X : images
            Any form :func:`ssad._images.check_images` accepts.

        Returns
        -------
        ndarray of shape (n_images, d_p + m)
            ``z_p`` (teacher embedding) then ``z_f`` (per-block discrepancies);
            a space that is not used is left out.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        zp, zf = self._embed(self._validate_input(X, reset=False), desc="Transformaly embed")
        return np.hstack([z for z in (zp, zf) if z is not None])


#: Short name of :class:`TransformalyDetector`.
Transformaly = TransformalyDetector
