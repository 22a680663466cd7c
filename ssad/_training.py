"""THE training loop of ssad: the only place where an optimiser steps.

A detector supplies ``loss_fn(batch) -> Tensor`` (the batch is a float tensor
``(b, 3, h, w)`` in ``[0, 1]`` on the training device) and, optionally, hooks:
a per-step learning-rate / weight-decay schedule and an ``after_step``
callback (e.g. an EMA teacher update).  The loop owns train/eval mode, device
transfer, autocast, gradient clipping, the non-finite-loss check, the
progress bar, the loss curve and, when validation images are given, the
choice of the best epoch on them.

Train/eval mode is set here and nowhere else.  During the optimiser steps the
module is in train mode except the ``frozen`` submodules, which stay in eval
mode: an EMA or frozen teacher, and the BatchNorm layers of a backbone that
starts from pretrained weights (:func:`batchnorm_layers`), whose running
statistics would otherwise be re-estimated on augmented training views and
no longer match the weights.  Outside the steps (``before_epoch``,
validation, and after training) the whole module is in eval mode.

Under ``torchrun`` (a process group of several processes, see
:mod:`ssad._distributed`) the same loop runs data-parallel, as DINO's
``main_dino.py`` does: the step (``loss_fn`` and every module it calls) is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, so gradients
are averaged across processes during the backward pass; each process draws
the same shuffled order (the same ``rng`` on every rank) and takes its share
of every batch (``batch[rank::world_size]``, what a ``DistributedSampler``
gives), so ``batch_size`` stays the number of images per optimiser step over
all processes; the epoch losses are summed over processes, so the loss curve
is the same on every rank; buffers (batch-norm statistics) are copied from
rank 0 at every step and epoch; only rank 0 logs and shows progress.
Parameters stay equal on every rank (same start, same averaged gradients),
so an EMA teacher updated from them in ``after_step`` stays equal too.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ssad import _distributed
from ssad._images import ImageSet
from ssad.backbones import autocast

__all__ = [
    "TrainResult",
    "batchnorm_layers",
    "cosine_schedule",
    "evaluating",
    "seeded",
    "steps_per_epoch",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    loss_curve : list of float
        Mean training loss per epoch.
    validation_curve : list of float
        Mean validation loss per epoch (empty without validation images).
    best_epoch : int
        0-based epoch whose weights were kept (the last one without validation).
    n_epochs : int
        Epochs run (fewer than asked when training stopped early).
    """

    loss_curve: list[float] = field(default_factory=list)
    validation_curve: list[float] = field(default_factory=list)
    best_epoch: int = -1
    n_epochs: int = 0


@contextlib.contextmanager
def seeded(random_state: Any, device: torch.device | None = None) -> Iterator[int]:
    """Run a block with torch's RNGs seeded from ``random_state``, then restore them.

    Weight initialisation, dropout and random augmentations inside the block
    are reproducible, while the global RNG state seen outside the block is
    left exactly as it was (it is forked, never re-seeded for the caller).
    Yields the integer seed used.
    """
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield seed


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, start_warmup: float = 0.0
) -> Callable[[int], float]:
    """Linear warm-up from ``start_warmup`` to ``base``, then cosine decay to ``final``.

    Returns a function of the global step (as in DINO's ``cosine_scheduler``).
    The warm-up takes at most ``total_steps - 1`` steps, so the schedule
    always reaches ``base``: a fit whose warm-up would outlast it still takes
    its last step at the peak (and a fit of one step is not taken at
    ``start_warmup``, typically 0).
    """
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def value(step: int) -> float:
        if step < warmup_steps:
            return start_warmup + (base - start_warmup) * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))

    return value


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``module`` (what ``frozen`` keeps in eval mode for a
    pretrained backbone)."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _set_train_mode(module: nn.Module, frozen: Sequence[nn.Module]) -> None:
    module.train()
    for m in frozen:
        m.eval()


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode and without gradients, then restore its modes.

    For a detector that needs eval-mode features of a batch in the middle of
    a training step (e.g. clean-image embeddings that choose the step's
    candidate sets) without touching train/eval modes itself.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, mode in modes:
            m.training = mode


def steps_per_epoch(n_samples: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimiser steps per epoch of :func:`train` (for per-step schedules)."""
    if drop_last and n_samples > batch_size:
        return n_samples // batch_size
    return math.ceil(n_samples / batch_size)


def _mean_loss(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    batch_size: int,
    load: dict[str, Any],
    device: torch.device,
    precision: str,
) -> float:
    """Mean of ``loss_fn`` over ``images`` (each process takes its share; summed over all)."""
    world, rank = _distributed.world_size(), _distributed.rank()
    mine = np.arange(rank, len(images), world)
    batches = (mine[start : start + batch_size] for start in range(0, len(mine), batch_size))
    sums = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for _, batch in images.load_batches(batches, device=device, **load):
            with autocast(device, precision):
                loss = loss_fn(batch)
            sums += torch.tensor([float(loss) * len(batch), len(batch)], dtype=torch.float64)
    total, count = _reduce(sums)
    return total / max(count, 1)


def _reduce(sums: torch.Tensor) -> tuple[float, float]:
    """``sums`` summed over processes, as two floats."""
    total, count = _distributed.all_reduce_sum(sums).tolist()
    return float(total), float(count)


class _Step(nn.Module):
    """One training step's forward pass, ``loss_fn(batch[, indices])``, as a module.

    DistributedDataParallel averages the gradients of the parameters of the
    module it wraps, during the backward pass of what that module's forward
    returned; wrapping the loss (and through ``module`` every network
    ``loss_fn`` calls) lets detectors keep calling their networks directly.
    """

    def __init__(self, module: nn.Module, loss_fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch: torch.Tensor, indices: np.ndarray | None = None) -> torch.Tensor:
        return self.loss_fn(batch) if indices is None else self.loss_fn(batch, indices)


def train(
    module: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    images: ImageSet,
    *,
    optimizer: torch.optim.Optimizer,
    n_epochs: int,
    batch_size: int,
    device: torch.device,
    rng: np.random.Generator,
    precision: str = "auto",
    image_size: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    lr_schedule: Callable[[int], float] | None = None,
    weight_decay_schedule: Callable[[int], float] | None = None,
    clip_grad_norm: float | None = None,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int], None] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    frozen: Sequence[nn.Module] = (),
    validation_images: ImageSet | None = None,
    n_iter_no_change: int | None = None,
    drop_last: bool = False,
    pass_indices: bool = False,
    num_workers: int = 0,
    verbose: int = 0,
    desc: str = "train",
) -> TrainResult:
    """Train ``module`` by minimising ``loss_fn`` over shuffled mini-batches of ``images``.

    Parameters
    ----------
    module : torch.nn.Module
        Holds every trainable parameter (and anything else whose train/eval
        mode must follow the loop); already on ``device``.
    loss_fn : callable
        ``loss_fn(batch) -> scalar tensor``; ``batch`` is float ``(b, 3, h, w)``
        in ``[0, 1]`` on ``device``.
    images : ImageSet
        Training images.
    optimizer : torch.optim.Optimizer
        Over the trainable parameters of ``module``.
    n_epochs, batch_size : int
        Passes over the data; images per step.
    device : torch.device
        Where batches go.
    rng : numpy.random.Generator
        Shuffles the data (local generator; global RNGs are untouched).
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype (see :func:`ssad.backbones.autocast`); float16 uses a
        gradient scaler.
    image_size : (int, int), optional
        Size batches are loaded at (needed for images of different sizes).
    interpolation : str, default="bilinear"
        Resampling used when loading at ``image_size``.
    lr_schedule, weight_decay_schedule : callable, optional
        Global step -> value for every parameter group (``weight_decay`` only
        for groups whose ``weight_decay`` is non-zero).  A group with an
        ``"lr_scale"`` entry gets ``lr_schedule(step) * lr_scale`` (e.g. a
        pretrained encoder at a tenth of its heads' learning rate).
    clip_grad_norm : float, optional
        Clip the global gradient norm to this value.
    before_step : callable, optional
        Called with the global step after the backward pass, before gradient
        clipping and the optimiser step (e.g. to drop the gradients of a layer
        that is frozen for the first steps, as DINO does; setting
        ``requires_grad`` instead would hide it from DistributedDataParallel).
    after_step : callable, optional
        Called with the global step after each optimiser step (EMA updates).
    before_epoch : callable, optional
        Called with the epoch number at the start of each epoch, with the
        module in eval mode (e.g. to recompute a centre of the training
        embeddings with the embedder).
    frozen : sequence of torch.nn.Module, default=()
        Submodules that stay in eval mode during the optimiser steps: an EMA
        teacher, or the :func:`batchnorm_layers` of a pretrained backbone
        (their running statistics are then not updated).
    validation_images : ImageSet, optional
        After each epoch, the mean ``loss_fn`` on them (eval mode, no
        gradients) is recorded, and the weights of the best epoch are restored
        at the end.
    n_iter_no_change : int, optional
        Stop early once the validation loss has not improved for this many
        epochs (scikit-learn's name for patience); needs ``validation_images``.
    drop_last : bool, default=False
        Drop the last incomplete batch of each epoch (when there is more than one).
    pass_indices : bool, default=False
        Call ``loss_fn(batch, indices)`` during training steps, with the
        positions of the batch's images in ``images`` (validation batches
        still get ``loss_fn(batch)``).
    num_workers : int, default=0
        Image files are decoded and resized in this many DataLoader worker
        processes, a few steps ahead (:meth:`ssad._images.ImageSet.load_batches`).
    verbose : int, default=0
        Progress bar when > 0.
    desc : str
        Progress-bar label.

    Returns
    -------
    TrainResult
        Loss curves and the kept epoch.

    Raises
    ------
    FloatingPointError
        When the training or validation loss becomes NaN or infinite.
    ValueError
        Under ``torchrun``, when there are fewer images than processes; when
        ``n_iter_no_change`` comes without ``validation_images``.

    Notes
    -----
    Under ``torchrun`` (see the module documentation) each process computes
    ``loss_fn`` on its share of the batch; the gradient of the average over
    processes, with the shares weighted by their sizes, is that of the whole
    batch when ``loss_fn`` is a mean over images.  Losses that compare the
    images of a batch with each other (in-batch neighbours, batch-norm
    statistics) see only the process's share, as in DINO.  A last batch
    with fewer images than processes is dropped.  Each process draws its
    random views from its own torch generator (seeded from ``rng`` and the
    rank), so the processes do not crop their images alike.
    """
    if n_iter_no_change is not None and validation_images is None:
        raise ValueError(
            f"n_iter_no_change={n_iter_no_change} stops on the validation loss; pass "
            "validation_images too."
        )
    result = TrainResult()
    n = len(images)
    world, rank = _distributed.world_size(), _distributed.rank()
    if n < world:
        raise ValueError(
            f"Distributed training over {world} processes needs at least {world} training "
            f"images (one per process); got {n}."
        )
    n_steps = steps_per_epoch(n, batch_size, drop_last)
    if world > 1 and n - (n_steps - 1) * batch_size < world:
        n_steps -= 1  # a last batch with fewer images than processes cannot be shared out
    scaler = torch.amp.GradScaler(device.type) if _is_fp16(precision) else None
    load: dict[str, Any] = {"size": image_size, "interpolation": interpolation}
    step_fn: nn.Module = _Step(module, loss_fn)
    if world > 1:
        gpus = None
        if device.type == "cuda":
            gpus = [device.index if device.index is not None else torch.cuda.current_device()]
        step_fn = DistributedDataParallel(step_fn, device_ids=gpus)

    def step_indices() -> Iterator[np.ndarray]:
        # read ahead by the loader's workers: an epoch's order may be drawn before the
        # previous epoch ends; nothing else draws from rng meanwhile
        for _ in range(n_epochs):
            order = rng.permutation(n)
            for b in range(n_steps):
                yield order[b * batch_size : (b + 1) * batch_size]

    best_loss, best_state = math.inf, None
    step = 0
    global_batches = step_indices()
    sizes: collections.deque[int] = collections.deque()  # global batches handed out

    def shares() -> Iterator[np.ndarray]:
        for idx in global_batches:
            sizes.append(len(idx))
            yield idx[rank::world]

    with (
        _rank_generator(rng, device, rank, world),
        contextlib.closing(
            images.load_batches(shares(), device=device, num_workers=num_workers, **load)
        ) as batches,
        tqdm(total=n_epochs * n_steps, disable=verbose <= 0 or rank != 0, desc=desc) as bar,
    ):
        for epoch in range(n_epochs):
            module.eval()
            if before_epoch is not None:
                before_epoch(epoch)
            _set_train_mode(module, frozen)
            sums = torch.zeros(2, dtype=torch.float64)
            for _ in range(n_steps):
                idx, batch = next(batches)
                global_size = sizes.popleft()
                _apply_schedules(optimizer, step, lr_schedule, weight_decay_schedule)
                with autocast(device, precision):
                    loss = step_fn(batch, idx if pass_indices else None)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"The training loss is {float(loss)} at epoch {epoch}, step {step}; "
                        "try a lower learning_rate or precision='float32'."
                    )
                # DDP averages the processes' gradients: weight each share by its size so
                # that the average is the gradient of the mean over the whole batch
                weighted = loss * (len(idx) * world / global_size) if world > 1 else loss
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(weighted).backward()
                    scaler.unscale_(optimizer)
                else:
                    weighted.backward()
                if before_step is not None:
                    before_step(step)
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if after_step is not None:
                    after_step(step)
                sums += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=sums.dtype)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{float(sums[0] / sums[1]):.4g}")
            _distributed.broadcast_buffers(module)
            total, count = _reduce(sums)
            result.loss_curve.append(total / max(count, 1))
            if validation_images is not None:
                module.eval()
                val = _mean_loss(loss_fn, validation_images, batch_size, load, device, precision)
                if not math.isfinite(val):
                    raise FloatingPointError(
                        f"The validation loss is {val} after epoch {epoch}; try a lower "
                        "learning_rate or precision='float32'."
                    )
                result.validation_curve.append(val)
                if val < best_loss:
                    best_loss, result.best_epoch = val, epoch
                    best_state = copy.deepcopy(module.state_dict())
            result.n_epochs = epoch + 1
            if rank == 0:
                logger.debug("%s epoch %d: loss %.5g", desc, epoch, result.loss_curve[-1])
            if n_iter_no_change is not None and epoch - result.best_epoch >= n_iter_no_change:
                if rank == 0:
                    logger.info(
                        "%s: validation loss has not improved for %d epochs; stopped after "
                        "epoch %d",
                        desc,
                        n_iter_no_change,
                        epoch,
                    )
                break
    module.eval()
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        result.best_epoch = n_epochs - 1
    return result


@contextlib.contextmanager
def _rank_generator(
    rng: np.random.Generator, device: torch.device, rank: int, world: int
) -> Iterator[None]:
    """Under torchrun: run the block with torch's generator seeded per rank, then restore it."""
    if world <= 1:
        yield
        return
    seed = int(rng.integers(np.iinfo(np.int32).max)) + rank
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _is_fp16(precision: str) -> bool:
    return precision == "float16"


def _apply_schedules(
    optimizer: torch.optim.Optimizer,
    step: int,
    lr_schedule: Callable[[int], float] | None,
    weight_decay_schedule: Callable[[int], float] | None,
) -> None:
    for group in optimizer.param_groups:
        if lr_schedule is not None:
            group["lr"] = lr_schedule(step) * group.get("lr_scale", 1.0)
        if weight_decay_schedule is not None and group.get("weight_decay", 0.0) != 0.0:
            group["weight_decay"] = weight_decay_schedule(step)
