"""Random views of image batches, with an independent draw per image.

Every transform takes a float batch ``(b, 3, h, w)`` in ``[0, 1]`` on any
device and returns one of the same kind; randomness comes from torch's RNG
(fit methods seed it through :func:`ssad._training.seeded`).  Crops of a
whole batch are one :func:`torchvision.ops.roi_align` call, so views are made
on the GPU when the batch is there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = [
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Solarize",
    "ViewTransform",
]


class ViewTransform:
    """Base class: a callable ``batch -> batch`` with a readable ``repr``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def check_crop_scale(scale: Sequence[float], name: str, owner: str) -> None:
    """Raise ValueError unless ``scale`` is an area share ``(low, high)``, 0 < low <= high <= 1."""
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(
            f"The {name!r} parameter of {owner} must be a pair (low, high) with "
            f"0 < low <= high <= 1. Got {scale!r} instead."
        )


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.rand(x.shape[0], device=x.device) < p


@dataclass(repr=False)
class RandomResizedCrop(ViewTransform):
    """Crop a random area share in ``scale`` with aspect ratio in ``ratio``, resize to ``size``.

    Parameters
    ----------
    size : int or (int, int)
        Output size.
    scale : (float, float), default=(0.08, 1.0)
        Range of the crop's share of the image area, ``0 < low <= high <= 1``.
        A crop whose drawn share and aspect ratio make it wider or taller
        than the image is cut to the image's side, so its area falls below
        the drawn share (torchvision redraws such crops instead); even
        ``(1.0, 1.0)`` then crops unless the drawn ratio is exactly the
        image's.
    ratio : (float, float), default=(3/4, 4/3)
        Range of the crop's aspect ratio (log-uniform).
    """

    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        check_crop_scale(self.scale, "scale", "RandomResizedCrop")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        out = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        dev = x.device
        area = torch.empty(b, device=dev).uniform_(*self.scale) * h * w
        log_r = torch.empty(b, device=dev).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1])
        )
        r = torch.exp(log_r)
        cw = torch.sqrt(area * r).clamp(1, w)
        ch = torch.sqrt(area / r).clamp(1, h)
        x0 = torch.rand(b, device=dev) * (w - cw)
        y0 = torch.rand(b, device=dev) * (h - ch)
        boxes = torch.stack(
            [torch.arange(b, device=dev, dtype=x.dtype), x0, y0, x0 + cw, y0 + ch], 1
        )
        return roi_align(x, boxes.to(x.dtype), output_size=out, aligned=True, sampling_ratio=-1)


@dataclass(repr=False)
class RandomHorizontalFlip(ViewTransform):
    """Mirror each image left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flip = _chosen(x, self.p).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)


def _grey(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images ``(b, 3, h, w)`` by ``shift`` ``(b,)`` turns (batched)."""
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * h, 6.0)
        out.append(maxc - maxc * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, dim=1)


@dataclass(repr=False)
class ColorJitter(ViewTransform):
    """Random brightness, contrast, saturation and hue, applied with probability ``p``.

    Factors are drawn per image as in torchvision's ``ColorJitter``
    (``[max(0, 1 - v), 1 + v]``; hue shift in ``[-hue, hue]``), in that fixed order.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        on = _chosen(x, self.p).view(-1, 1, 1, 1)

        def factor(v: float) -> torch.Tensor:
            return torch.empty(b, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - v), 1 + v)

        y = (x * factor(self.brightness)).clamp(0, 1)
        mean = _grey(y).mean(dim=(2, 3), keepdim=True)
        y = (mean + factor(self.contrast) * (y - mean)).clamp(0, 1)
        g = _grey(y)
        y = (g + factor(self.saturation) * (y - g)).clamp(0, 1)
        if self.hue > 0:
            y = _shift_hue(y, torch.empty(b, device=x.device).uniform_(-self.hue, self.hue))
        return torch.where(on, y, x)


@dataclass(repr=False)
class RandomGrayscale(ViewTransform):
    """Replace an image by its luminance (on all three channels) with probability ``p``."""

    p: float = 0.2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        on = _chosen(x, self.p).view(-1, 1, 1, 1)
        return torch.where(on, _grey(x).expand_as(x), x)


@dataclass(repr=False)
class GaussianBlur(ViewTransform):
    """Blur with sigma drawn in ``sigma`` with probability ``p`` (kernel ~ 10 % of the size)."""

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(x.shape[0], device=x.device) < self.p
        n = int(chosen.sum())
        if n == 0:
            return x
        _, c, h, w = x.shape
        k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
        sigma = torch.empty(n, device=x.device).uniform_(*self.sigma)
        grid = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
        kernel = torch.exp(-(grid.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        sel = x[chosen].reshape(1, n * c, h, w)
        pad = k // 2
        mode = "reflect" if min(h, w) > pad else "replicate"
        sel = F.pad(sel, (pad, pad, pad, pad), mode=mode)
        # at the batch's own precision: a training step's autocast would run the
        # convolutions in bfloat16/float16 and hand back a dtype the batch does not have
        with torch.autocast(x.device.type, enabled=False):
            sel = F.conv2d(sel, kernel.view(n * c, 1, k, 1), groups=n * c)
            sel = F.conv2d(sel, kernel.view(n * c, 1, 1, k), groups=n * c)
        out = x.clone()
        out[chosen] = sel.reshape(n, c, h, w)
        return out


@dataclass(repr=False)
class Solarize(ViewTransform):
    """Invert pixels above ``threshold`` with probability ``p``."""

    p: float = 0.2
    threshold: float = 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        on = _chosen(x, self.p).view(-1, 1, 1, 1)
        return torch.where(on & (x >= self.threshold), 1.0 - x, x)


class Compose(ViewTransform):
    """Apply transforms in order.

    Parameters
    ----------
    transforms : sequence of callables
        Each maps a batch to a batch.
    """

    def __init__(self, transforms: Sequence[ViewTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x
