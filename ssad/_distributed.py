"""torch.distributed plumbing of the training loop: one process per device under ``torchrun``.

``torchrun --nproc_per_node=N script.py`` starts N copies of a script and tells
each its place through environment variables (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).  :func:`init_from_env`
joins the process group they describe (NCCL between GPUs, gloo on CPUs) the
first time a detector is fitted, unless the script did so itself; the
training loop (:func:`ssad._training.train`) then runs data-parallel.
Without ``torchrun`` every function here is a no-op for one process.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_reduce_sum",
    "broadcast_buffers",
    "init_from_env",
    "is_distributed",
    "launched_world_size",
    "local_rank",
    "rank",
    "world_size",
]

logger = logging.getLogger(__name__)


def launched_world_size() -> int:
    """Number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 without ``torchrun``)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes training together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the group (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def init_from_env() -> None:
    """Join the process group ``torchrun`` describes, if there is one and it is not joined.

    The backend is NCCL when CUDA is available (each process then uses the GPU
    ``cuda:LOCAL_RANK``), gloo otherwise.  Does nothing without ``torchrun``
    (``WORLD_SIZE`` unset or 1) or when the script initialised the group itself.

    Raises
    ------
    RuntimeError
        If ``WORLD_SIZE > 1`` but this build of torch has no torch.distributed.
    """
    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={launched_world_size()} asks for distributed training, but this "
            "build of torch has no torch.distributed; run without torchrun."
        )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    logger.info(
        "Joined the process group: rank %d of %d (%s).",
        dist.get_rank(),
        dist.get_world_size(),
        dist.get_backend(),
    )


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over all processes, in place (``x`` itself without a group).

    CPU tensors travel through the GPU when the group's backend is NCCL.
    """
    if is_distributed():
        if dist.get_backend() == "nccl" and x.device.type != "cuda":
            on_gpu = x.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            x.copy_(on_gpu)
        else:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. batch-norm statistics) to every process."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
