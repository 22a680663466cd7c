"""Self-distillation losses: DINO's centred cross-entropy and the uniform (negative) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssad._distributed import all_reduce_sum

__all__ = ["DINOLoss", "UniformLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between a centred, sharpened teacher and the student, over views.

    For every view ``t`` the teacher sees and every view ``s`` the student
    sees, except ``s == t`` (the same view), the loss term is the
    cross-entropy ``-sum_k P_t[k] log P_s[k]`` with

    - ``P_t = softmax((teacher_t - center) / teacher_temperature)`` (no gradient),
    - ``P_s = softmax(student_s / student_temperature)``,

    averaged over the images of the batch and then over the view pairs.
    After each call the ``center`` buffer moves towards the mean teacher
    output of the batch: ``center <- m * center + (1 - m) * mean(teacher)``.

    Parameters
    ----------
    out_dim : int
        Number of soft classes K.
    student_temperature : float, default=0.1
        Student softmax temperature.
    center_momentum : float, default=0.9
        Momentum ``m`` of the centre's moving average.

    Attributes
    ----------
    center : torch.Tensor of shape (1, out_dim)
        The running centre of the teacher outputs (a buffer, saved in the
        state dict).

    Notes
    -----
    View ``i`` of ``teacher_output`` must be the same view (the same crops)
    as view ``i`` of ``student_output``: the teacher sees the first
    ``len(teacher_output)`` views (DINO: the two global crops).

    Examples
    --------
    >>> import torch
    >>> from ssad.nn import DINOLoss
    >>> loss_fn = DINOLoss(8)
    >>> teacher = [torch.randn(4, 8) for _ in range(2)]
    >>> student = [torch.randn(4, 8) for _ in range(5)]
    >>> loss = loss_fn(student, teacher, teacher_temperature=0.04)
    >>> loss.ndim, bool(loss_fn.center.abs().sum() > 0)
    (0, True)
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, *, student_temperature: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        student_output: Sequence[torch.Tensor],
        teacher_output: Sequence[torch.Tensor],
        teacher_temperature: float,
    ) -> torch.Tensor:
        """The mean cross-entropy over view pairs; updates :attr:`center`.

        Parameters
        ----------
        student_output : sequence of Tensor (b, out_dim)
            Student logits, one tensor per view.
        teacher_output : sequence of Tensor (b, out_dim)
            Teacher logits of the first ``len(teacher_output)`` views.
        teacher_temperature : float
            Teacher softmax temperature (scheduled by the caller).

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        if len(teacher_output) == 0 or len(student_output) < 2:
            raise ValueError(
                "DINOLoss needs at least one teacher view and two student views; got "
                f"{len(teacher_output)} and {len(student_output)}."
            )
        log_p = [
            F.log_softmax(s.float() / self.student_temperature, dim=-1) for s in student_output
        ]
        with torch.no_grad():
            center = self.center.to(teacher_output[0].device)
            probs = [
                F.softmax((t.float() - center) / teacher_temperature, dim=-1)
                for t in teacher_output
            ]
        terms = [
            torch.sum(-q * log_p[v], dim=-1).mean()
            for iq, q in enumerate(probs)
            for v in range(len(log_p))
            if v != iq
        ]
        loss = torch.stack(terms).mean()
        self.update_center(torch.cat([t.detach() for t in teacher_output]))
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """Move the centre towards the mean of ``teacher_output`` ``(n, out_dim)``.

        Under ``torchrun`` the mean is over the teacher outputs of every
        process (an all-reduce of their sum and count, as DINO does), so the
        centre stays the same on every rank.
        """
        total = teacher_output.float().sum(dim=0, keepdim=True).to(self.center.device)
        count = torch.tensor(float(len(teacher_output)), device=self.center.device)
        batch_center = all_reduce_sum(total) / all_reduce_sum(count)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class UniformLoss(nn.Module):
    """Cross-entropy of the student's softmax against the uniform distribution over K classes.

    ``L = -(1/K) sum_k log softmax(z / student_temperature)[k]``, averaged over the
    rows of ``z``.  It equals ``log K + KL(uniform || P)``, so it is minimal
    (``log K``) exactly when the student's softmax is uniform: negative
    samples are pushed to "no soft class" (Rafiee et al., 2022).

    Parameters
    ----------
    student_temperature : float, default=0.1
        Student softmax temperature.

    Examples
    --------
    >>> import math, torch
    >>> from ssad.nn import UniformLoss
    >>> round(float(UniformLoss()(torch.zeros(3, 10))), 6) == round(math.log(10), 6)
    True
    """

    def __init__(self, *, student_temperature: float = 0.1) -> None:
        super().__init__()
        self.student_temperature = student_temperature

    def forward(self, student_output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean uniform cross-entropy of logits ``(n, K)`` (or a sequence of them, concatenated)."""
        z = (
            student_output
            if isinstance(student_output, torch.Tensor)
            else torch.cat(list(student_output))
        )
        log_p = F.log_softmax(z.float() / self.student_temperature, dim=-1)
        return -log_p.mean(dim=-1).mean()
