"""Exponential moving averages of network weights (momentum teachers)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["update_ema"]


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """Move the teacher's parameters towards the student's, in place.

    ``theta_teacher <- momentum * theta_teacher + (1 - momentum) * theta_student``
    for every parameter, matched by name.  Buffers (batch-norm running
    statistics) are copied from the student: the teacher never runs in train
    mode (ssad's training loop keeps it in eval mode), so it cannot estimate
    them itself, while DINO's teacher, left in train mode, re-estimates them
    on its own batches.  A student whose batch norms are frozen (a pretrained
    backbone) keeps its buffers, so the teacher's stay the pretrained ones.

    Parameters
    ----------
    teacher, student : torch.nn.Module
        Networks of the same architecture (same parameter names and shapes).
    momentum : float in [0, 1]
        1 keeps the teacher, 0 copies the student.

    Raises
    ------
    ValueError
        If the parameter names of the two networks differ, or ``momentum``
        is outside [0, 1].

    Examples
    --------
    >>> import torch
    >>> from ssad.nn import update_ema
    >>> t, s = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> update_ema(t, s, 0.0)
    >>> torch.equal(t.weight, s.weight)
    True
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1]; got {momentum}.")
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:5]
        raise ValueError(
            f"Teacher and student parameters differ (e.g. {missing}); "
            "update_ema needs two networks of the same architecture."
        )
    for name, t in t_params.items():
        t.mul_(momentum).add_(s_params[name].detach().to(t.dtype), alpha=1.0 - momentum)
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        if name in s_buffers:
            buf.copy_(s_buffers[name])
