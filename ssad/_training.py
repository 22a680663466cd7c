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
"""

from __future__ import annotations

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
from tqdm.auto import tqdm

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
    """

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
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in images.iter_batches(batch_size, device=device, **load):
            with autocast(device, precision):
                loss = loss_fn(batch)
            total += float(loss) * len(batch)
            count += len(batch)
    return total / max(count, 1)


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
    after_step: Callable[[int], None] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    frozen: Sequence[nn.Module] = (),
    validation_images: ImageSet | None = None,
    n_iter_no_change: int | None = None,
    drop_last: bool = False,
    pass_indices: bool = False,
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
        for groups whose ``weight_decay`` is non-zero).
    clip_grad_norm : float, optional
        Clip the global gradient norm to this value.
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
        With ``validation_images``: stop early once the validation loss has
        not improved for this many epochs (scikit-learn's name for patience).
    drop_last : bool, default=False
        Drop the last incomplete batch of each epoch (when there is more than one).
    pass_indices : bool, default=False
        Call ``loss_fn(batch, indices)`` during training steps, with the
        positions of the batch's images in ``images`` (validation batches
        still get ``loss_fn(batch)``).
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
        When the loss becomes NaN or infinite.
    """
    result = TrainResult()
    n = len(images)
    n_steps = steps_per_epoch(n, batch_size, drop_last)
    scaler = torch.amp.GradScaler(device.type) if _is_fp16(precision) else None
    load: dict[str, Any] = {"size": image_size, "interpolation": interpolation}
    best_loss, best_state = math.inf, None
    step = 0
    with tqdm(total=n_epochs * n_steps, disable=verbose <= 0, desc=desc) as bar:
        for epoch in range(n_epochs):
            module.eval()
            if before_epoch is not None:
                before_epoch(epoch)
            _set_train_mode(module, frozen)
            order = rng.permutation(n)
            total, count = 0.0, 0
            for b in range(n_steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                batch = images.load(idx, device=device, **load)
                _apply_schedules(optimizer, step, lr_schedule, weight_decay_schedule)
                with autocast(device, precision):
                    loss = loss_fn(batch, idx) if pass_indices else loss_fn(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"The training loss is {float(loss)} at epoch {epoch}, step {step}; "
                        "try a lower learning_rate or precision='float32'."
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if after_step is not None:
                    after_step(step)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{total / count:.4g}")
            result.loss_curve.append(total / max(count, 1))
            if validation_images is not None:
                module.eval()
                val = _mean_loss(loss_fn, validation_images, batch_size, load, device, precision)
                result.validation_curve.append(val)
                if val < best_loss:
                    best_loss, result.best_epoch = val, epoch
                    best_state = copy.deepcopy(module.state_dict())
            result.n_epochs = epoch + 1
            logger.debug("%s epoch %d: loss %.5g", desc, epoch, result.loss_curve[-1])
            if (
                n_iter_no_change is not None
                and validation_images is not None
                and epoch - result.best_epoch >= n_iter_no_change
            ):
                logger.info(
                    "%s: validation loss has not improved for %d epochs; stopped after epoch %d",
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
            group["lr"] = lr_schedule(step)
        if weight_decay_schedule is not None and group.get("weight_decay", 0.0) != 0.0:
            group["weight_decay"] = weight_decay_schedule(step)
