"""Multi-instance learning with convex representations, and the mean-shifted contrastive loss.

The pieces of the anomaly-discriminative learning of ConvexMIL [1]_, as small
functions on a batch of L2-normalised embeddings ``z`` of shape ``(b, d)``,
with the equation numbers of the paper:

=====================================  ==========================================
:func:`pseudo_normality`               eq. 2: mean similarity to the K nearest
                                       neighbours in ``M = z z^T`` (eq. 1)
:func:`split_candidates`               eq. 3: lowest-scored share = abnormal
                                       candidates, the rest = normal candidates
:func:`sampling_probabilities`         eq. 4: soft sampling within each set
:func:`sample_convex`                  eq. 5: Dirichlet(1)-weighted average of
                                       ``C`` sampled embeddings
:func:`convex_loss`                    eq. 6: an anchor is nearer ``z+`` than ``z-``
:class:`ConvexMILLoss`                 eqs. 1-6 on one batch (eq. 6 with a convex
                                       or an instance anchor)
:func:`mean_shifted_loss`              eqs. 7-8: mean-shifted contrastive loss
                                       and (weighted) angular centre loss (MSAD [2]_)
=====================================  ==========================================

Nothing here needs gradients through the selection: similarities, scores and
sampling probabilities are computed on detached embeddings; the loss flows
through the anchors and the sampled embeddings.

References
----------
.. [1] "Learn discrimination from contaminated data: multi-instance learning
   with convex representation for unsupervised anomaly detection" (no public code).
.. [2] T. Reiss and Y. Hoshen, "Mean-Shifted Contrastive Loss for Anomaly
   Detection", AAAI 2023; code: github.com/talreiss/Mean-Shifted-Anomaly-Detection.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ANCHORS",
    "SAMPLINGS",
    "Candidates",
    "ConvexMILLoss",
    "ConvexSample",
    "convex_loss",
    "dirichlet_weights",
    "mean_shifted_loss",
    "pseudo_normality",
    "sample_convex",
    "sampling_probabilities",
    "split_candidates",
]

#: Choices of the abnormal-set sampling weights (see :func:`sampling_probabilities`).
SAMPLINGS = ("paper", "inverse")


def pseudo_normality(similarity: torch.Tensor, n_neighbors: int) -> torch.Tensor:
    """Pseudo normality of each sample: mean similarity to its K nearest neighbours (eq. 2).

    ``s_i = (1 / K) * sum of the K largest M_ij over j != i``: a sample in a
    dense region of the batch scores high, an isolated one low.

    Parameters
    ----------
    similarity : Tensor of shape (b, b)
        Similarity matrix of the batch, e.g. ``M = z @ z.T`` of L2-normalised
        embeddings (eq. 1).
    n_neighbors : int
        K; capped at ``b - 1`` (a sample is never its own neighbour).

    Returns
    -------
    Tensor of shape (b,)
        The scores (zeros when ``b == 1``).
    """
    b = similarity.shape[0]
    if similarity.ndim != 2 or similarity.shape[1] != b:
        raise ValueError(
            f"similarity must be a square (b, b) matrix; got {tuple(similarity.shape)}."
        )
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1; got {n_neighbors}.")
    k = min(n_neighbors, b - 1)
    if k == 0:
        return similarity.new_zeros(b)
    eye = torch.eye(b, dtype=torch.bool, device=similarity.device)
    others = similarity.masked_fill(eye, float("-inf"))
    return others.topk(k, dim=1).values.mean(dim=1)


def split_candidates(
    scores: torch.Tensor, abnormal_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch by pseudo normality into normal and abnormal candidate sets (eq. 3).

    The ``round(abnormal_fraction * b)`` lowest-scored samples (at least 1 and
    at most ``b - 1``, so that neither set is empty) are the abnormal
    candidates; the others are the normal candidates.  Ties are broken by
    index (a stable sort).

    Parameters
    ----------
    scores : Tensor of shape (b,)
        Pseudo normality (:func:`pseudo_normality`); ``b >= 2``.
    abnormal_fraction : float in (0, 1)
        Share of the batch put into the abnormal set.

    Returns
    -------
    normal_idx, abnormal_idx : Tensor of int64
        Sorted indices into the batch.
    """
    b = scores.shape[0]
    if b < 2:
        raise ValueError(f"Splitting a batch needs at least 2 samples; got {b}.")
    if not 0.0 < abnormal_fraction < 1.0:
        raise ValueError(f"abnormal_fraction must be in (0, 1); got {abnormal_fraction}.")
    n_abnormal = min(max(round(abnormal_fraction * b), 1), b - 1)
    order = torch.sort(scores, stable=True).indices
    abnormal_idx = torch.sort(order[:n_abnormal]).values
    normal_idx = torch.sort(order[n_abnormal:]).values
    return normal_idx, abnormal_idx


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    weights = weights.clamp_min(0.0)
    total = weights.sum()
    if not torch.isfinite(total) or total <= 0:  # degenerate: every weight 0 -> uniform
        return torch.full_like(weights, 1.0 / weights.numel())
    return weights / total


def sampling_probabilities(
    scores: torch.Tensor,
    normal_idx: torch.Tensor,
    abnormal_idx: torch.Tensor,
    sampling: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-sampling probabilities over the normal and the abnormal candidate sets (eq. 4).

    Normal set: ``p+_j = s_j / sum_{k in N} s_k``.  Abnormal set:

    - ``"paper"``: ``p-_j = s_j / sum_{k in A} s_k``, eq. 4 as printed: the
      *more normal* abnormal candidates are drawn more often;
    - ``"inverse"``: ``p-_j = (1 - s_j) / sum_{k in A} (1 - s_k)``: weights
      proportional to pseudo abnormality (cosine distance ``1 - s`` for
      similarities in [-1, 1]), so the most abnormal candidates are drawn
      most often.

    Proportional weights need ``s >= 0``: negative weights are clipped to 0,
    and a set whose weights are all 0 is sampled uniformly.

    Parameters
    ----------
    scores : Tensor of shape (b,)
        Pseudo normality of the batch.
    normal_idx, abnormal_idx : Tensor of int64
        The candidate sets (:func:`split_candidates`).
    sampling : {"paper", "inverse"}, default="paper"
        Weights of the abnormal set.

    Returns
    -------
    p_normal, p_abnormal : Tensor of shape (b,)
        Probabilities over the whole batch, zero outside the respective set;
        each sums to 1.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}; got {sampling!r}.")
    scores = scores.detach().float()
    p_normal = torch.zeros_like(scores)
    p_abnormal = torch.zeros_like(scores)
    p_normal[normal_idx] = _normalised(scores[normal_idx])
    s_abn = scores[abnormal_idx]
    p_abnormal[abnormal_idx] = _normalised(s_abn if sampling == "paper" else 1.0 - s_abn)
    return p_normal, p_abnormal


def dirichlet_weights(
    n: int,
    n_convex: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``n`` independent draws from Dirichlet(1, ..., 1) of dimension ``n_convex``.

    Drawn as normalised Exponential(1) variables (the flat Dirichlet is the
    uniform distribution on the simplex).

    Returns
    -------
    Tensor of shape (n, n_convex)
        Non-negative rows that sum to 1.
    """
    e = torch.empty(n, n_convex, device=device).exponential_(1.0, generator=generator)
    return e / e.sum(dim=1, keepdim=True)


class ConvexSample(NamedTuple):
    """What :func:`sample_convex` draws."""

    representation: torch.Tensor
    """(n, d): the convex representations ``sum_c w_c z_{j_c}``."""
    indices: torch.Tensor
    """(n, C) int64: which embeddings were drawn (``j_c``)."""
    weights: torch.Tensor
    """(n, C): the Dirichlet(1) weights (``w_c``), each row on the simplex."""


def sample_convex(
    embeddings: torch.Tensor,
    probabilities: torch.Tensor,
    n: int,
    n_convex: int,
    *,
    generator: torch.Generator | None = None,
) -> ConvexSample:
    """Draw ``n`` convex representations of one candidate set (eq. 5).

    Each representation averages ``n_convex`` (C) embeddings drawn with
    replacement according to ``probabilities``, with weights from a flat
    Dirichlet: a random point of the convex hull of the drawn instances.

    Parameters
    ----------
    embeddings : Tensor of shape (b, d)
        The batch embeddings the instances are taken from (gradients flow
        through them).
    probabilities : Tensor of shape (b,)
        Sampling probabilities (:func:`sampling_probabilities`), zero outside
        the candidate set.
    n : int
        Number of representations (one per anchor).
    n_convex : int
        C, instances per representation.
    generator : torch.Generator, optional
        Source of randomness (default: torch's global RNG).

    Returns
    -------
    ConvexSample
        Representations, drawn indices and weights.
    """
    if n_convex < 1:
        raise ValueError(f"n_convex must be >= 1; got {n_convex}.")
    probs = probabilities.detach().float().to(embeddings.device)
    indices = torch.multinomial(probs, n * n_convex, replacement=True, generator=generator)
    indices = indices.view(n, n_convex)
    weights = dirichlet_weights(n, n_convex, generator=generator, device=embeddings.device)
    representation = (weights.unsqueeze(-1) * embeddings.float()[indices]).sum(dim=1)
    return ConvexSample(representation, indices, weights)


def convex_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Convex-representation discrimination loss (eq. 6).

    ``-mean_i log( e^{cos(z_i, z+_i)/t} / (e^{cos(z_i, z+_i)/t} + e^{cos(z_i, z-_i)/t}) )``:
    each anchor (a normal candidate) is pulled towards its normal convex
    representation ``z+_i`` and pushed from its abnormal one ``z-_i``.
    Convex combinations of unit vectors are shorter than 1, so they are
    compared by cosine similarity.

    Parameters
    ----------
    anchors, positives, negatives : Tensor of shape (n, d)
        ``z_i``, ``z+_i`` and ``z-_i``.
    temperature : float, default=1.0
        ``t``; 1.0 is the loss without temperature.

    Returns
    -------
    Tensor
        The scalar loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    pos = F.cosine_similarity(anchors, positives, dim=1)
    neg = F.cosine_similarity(anchors, negatives, dim=1)
    # -log(e^a / (e^a + e^b)) = softplus(b - a)
    return F.softplus((neg - pos) / temperature).mean()


class Candidates(NamedTuple):
    """The candidate split of a batch (eqs. 1-3) and its sampling probabilities (eq. 4)."""

    scores: torch.Tensor
    """(b,): pseudo normality ``s_i`` (eq. 2)."""
    normal: torch.Tensor
    """int64 indices of the normal candidates."""
    abnormal: torch.Tensor
    """int64 indices of the abnormal candidates."""
    p_normal: torch.Tensor
    """(b,): sampling probabilities of the normal set (zero outside it)."""
    p_abnormal: torch.Tensor
    """(b,): sampling probabilities of the abnormal set (zero outside it)."""


#: Choices of the eq. 6 anchor (see :class:`ConvexMILLoss`).
ANCHORS = ("convex", "instance")


class ConvexMILLoss(nn.Module):
    """Anomaly-discriminative learning on one batch (eqs. 1-6).

    :meth:`candidates` computes, without gradients, ``M = z z^T`` (eq. 1) of
    the embeddings that choose the sets, the pseudo normality (eq. 2), the
    candidate split (eq. 3) and the sampling probabilities (eq. 4).  The loss
    then draws, per normal candidate, convex representations (eq. 5) from the
    *bag* embeddings and compares them (eq. 6):

    - ``anchor="convex"`` (eq. 6 as printed): the anchor is itself a convex
      representation of the normal set, ``sim(z+_i, z+_j)`` against
      ``sim(z+_i, z-_k)``;
    - ``anchor="instance"``: the anchor is the normal candidate's own
      embedding ``z_i`` (pulled towards ``z+``, pushed from ``z-``).

    Parameters
    ----------
    n_neighbors : int, default=5
        K of eq. 2.
    abnormal_fraction : float in (0, 1), default=0.1
        Share of the batch in the abnormal candidate set.
    n_convex : int, default=5
        C, instances per convex representation.
    sampling : {"paper", "inverse"}, default="paper"
        Abnormal-set sampling weights; see :func:`sampling_probabilities`.
    temperature : float, default=1.0
        Temperature of eq. 6.
    anchor : {"convex", "instance"}, default="convex"
        The eq. 6 anchor (see above).
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        abnormal_fraction: float = 0.1,
        n_convex: int = 5,
        sampling: str = "paper",
        temperature: float = 1.0,
        anchor: str = "convex",
    ) -> None:
        super().__init__()
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {list(ANCHORS)}; got {anchor!r}.")
        self.n_neighbors = n_neighbors
        self.abnormal_fraction = abnormal_fraction
        self.n_convex = n_convex
        self.sampling = sampling
        self.temperature = temperature
        self.anchor = anchor

    def extra_repr(self) -> str:
        return (
            f"n_neighbors={self.n_neighbors}, abnormal_fraction={self.abnormal_fraction}, "
            f"n_convex={self.n_convex}, sampling={self.sampling!r}, "
            f"temperature={self.temperature}, anchor={self.anchor!r}"
        )

    @torch.no_grad()
    def candidates(self, selection: torch.Tensor) -> Candidates:
        """Eqs. 1-4 on L2-normalised embeddings ``selection`` (b, d); no gradients."""
        z = selection.detach().float()
        scores = pseudo_normality(z @ z.T, self.n_neighbors)
        normal, abnormal = split_candidates(scores, self.abnormal_fraction)
        p_normal, p_abnormal = sampling_probabilities(scores, normal, abnormal, self.sampling)
        return Candidates(scores, normal, abnormal, p_normal, p_abnormal)

    def forward(
        self,
        z: torch.Tensor,
        bags: torch.Tensor | None = None,
        *,
        candidates: Candidates | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Loss of a batch.

        Parameters
        ----------
        z : Tensor of shape (b, d)
            L2-normalised embeddings of the anchors (``anchor="instance"``).
        bags : Tensor of shape (b, d), optional
            Embeddings the convex representations are drawn from (row ``j``
            is the same image as ``z[j]``); default ``z``.
        candidates : Candidates, optional
            The split (:meth:`candidates`); default: computed from ``z``.
        generator : torch.Generator, optional
            Source of randomness (default: torch's global RNG).

        Returns
        -------
        Tensor
            The scalar loss; an exact zero that keeps the graph when ``b < 2``.
        """
        bags = z if bags is None else bags
        z, bags = z.float(), bags.float()
        if z.shape[0] < 2:
            return z.sum() * 0.0
        split = candidates if candidates is not None else self.candidates(z)
        n = split.normal.shape[0]
        positives = sample_convex(bags, split.p_normal, n, self.n_convex, generator=generator)
        negatives = sample_convex(bags, split.p_abnormal, n, self.n_convex, generator=generator)
        if self.anchor == "convex":
            anchors = sample_convex(bags, split.p_normal, n, self.n_convex, generator=generator)
            anchor_z = anchors.representation
        else:
            anchor_z = z[split.normal]
        return convex_loss(
            anchor_z, positives.representation, negatives.representation, self.temperature
        )


def mean_shifted_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    center: torch.Tensor,
    *,
    temperature: float = 0.25,
    angular: float = 1.0,
    negatives: torch.Tensor | None = None,
    pulled: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-shifted contrastive loss with the angular centre loss (eqs. 7-8; MSAD).

    The L2-normalised embeddings of two views are shifted by the (unit)
    centre ``c`` of the training embeddings and normalised again,
    ``u = (z - c) / ||z - c||`` (eq. 8); the first term of eq. 7 is the
    NT-Xent loss on ``u`` over the ``2b`` views (the other view of the same
    image is the positive, every other view a negative; temperature 0.25 as
    in MSAD).  Its second term, the angular centre loss, pulls the
    embeddings towards the centre; it is added as MSAD's code does with its
    ``--angular`` option (off by default there), ``angular * (mean
    ||z1 - c||^2 + mean ||z2 - c||^2)``, which is ``2 - 2 cos(z, c)`` per
    view for unit ``z`` and ``c``.  At ``angular=1`` that is four times eq. 7
    as printed, ``-z^T c`` averaged over the ``2b`` views like the
    contrastive term; ``angular=0.25`` is eq. 7 as printed.

    Parameters
    ----------
    z1, z2 : Tensor of shape (b, d)
        L2-normalised embeddings of two views of the same ``b`` images.
    center : Tensor of shape (d,)
        Unit-norm mean of the training embeddings.
    temperature : float, default=0.25
        NT-Xent temperature (MSAD's value).
    angular : float >= 0, default=1.0
        Weight of the angular centre term; 0 leaves the mean-shifted
        contrastive term alone (MSAD's default), 0.25 is eq. 7 as printed.
    negatives : Tensor of shape (m, d), optional
        L2-normalised embeddings of further views that are negatives of
        every view and anchors of none (shifted by the same centre); CSI's
        shifted instances, e.g. the rotated views of the batch.  They add
        columns to the NT-Xent logits and nothing to the centre term.
    pulled : bool Tensor of shape (b,), optional
        The images the centre term pulls (both views of each), averaged over
        them; default every image.  ConvexMIL's
        ``mean_shift_pull="normal_candidates"`` leaves its abnormal
        candidates out.  The contrastive term always covers all ``b``.

    Returns
    -------
    Tensor
        The scalar loss.
    """
    z1, z2, center = z1.float(), z2.float(), center.float().to(z1.device)
    b = z1.shape[0]
    d1, d2 = z1 - center, z2 - center
    u = F.normalize(torch.cat([d1, d2]), dim=1)
    columns = u
    if negatives is not None:
        shifted = F.normalize(negatives.float().to(u.device) - center, dim=1)
        columns = torch.cat([u, shifted])
    logits = (u @ columns.T) / temperature
    self_pairs = torch.eye(2 * b, columns.shape[0], dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(u.device)
    loss = F.cross_entropy(logits, target)
    if angular:
        if pulled is not None:
            pulled = torch.as_tensor(pulled, dtype=torch.bool, device=u.device)
            if pulled.shape != (b,):
                raise ValueError(
                    f"pulled must be a bool mask of shape ({b},), one entry per image; "
                    f"got shape {tuple(pulled.shape)}."
                )
            d1, d2 = d1[pulled], d2[pulled]
        if len(d1):
            loss = loss + angular * ((d1**2).sum(dim=1).mean() + (d2**2).sum(dim=1).mean())
    return loss
