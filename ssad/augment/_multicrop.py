"""DINO's multi-crop augmentation on batches: global and local views of every image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ssad.augment._views import (
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Solarize,
    ViewTransform,
    check_crop_scale,
)

__all__ = ["MultiCropTransform", "dino_view_transforms"]

Size = int | tuple[int, int]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def _side(size: Size) -> int:
    return size if isinstance(size, int) else min(size)


def dino_view_transforms(
    global_size: Size, local_size: Size
) -> tuple[list[BatchTransform], BatchTransform]:
    """DINO's photometric augmentations of the two global views and of the local views.

    All views: horizontal flip (p=0.5), colour jitter (brightness 0.4,
    contrast 0.4, saturation 0.2, hue 0.1; p=0.8), greyscale (p=0.2); then
    global view 1: Gaussian blur (p=1.0); global view 2: blur (p=0.1) and
    solarisation (p=0.2); local views: blur (p=0.5).  The blur's sigma range
    (0.1, 2.0) is for 224-pixel views and scales with each view's own size
    (the reference code of Rafiee et al. scales it by the global view size,
    for the local views too).  Colour jitter applies its four operations in
    a fixed order (torchvision draws a random order per image).

    Parameters
    ----------
    global_size, local_size : int or (int, int)
        View sizes (they scale the blur).

    Returns
    -------
    (list of two callables, callable)
        The global views' and the local views' transforms, batch to batch.
    """

    def common() -> list[ViewTransform]:
        return [
            RandomHorizontalFlip(0.5),
            ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
            RandomGrayscale(0.2),
        ]

    def sigma(size: Size) -> tuple[float, float]:
        f = _side(size) / 224.0
        return (0.1 * f, 2.0 * f)

    g1 = Compose([*common(), GaussianBlur(p=1.0, sigma=sigma(global_size))])
    g2 = Compose(
        [
            *common(),
            GaussianBlur(p=0.1, sigma=sigma(global_size)),
            Solarize(p=0.2, threshold=0.5),
        ]
    )
    local = Compose([*common(), GaussianBlur(p=0.5, sigma=sigma(local_size))])
    return [g1, g2], local


class MultiCropTransform:
    """Global and local random views of every image of a batch (DINO's multi-crop).

    ``transform(x)`` returns a list of ``n_global_crops + n_local_crops``
    batches: first the global views (random resized crops of an area share in
    ``global_scale``, resized to ``global_size``), then the local views (area
    share in ``local_scale``, resized to ``local_size``).  Each view gets
    DINO's photometric augmentations (:func:`dino_view_transforms`) and then,
    if given, the ``shift`` transform (negative views).

    Parameters
    ----------
    global_size, local_size : int or (int, int)
        Output sizes of the global and local views.
    n_global_crops : int, default=2
        Number of global views.  Global view ``i`` uses the ``i % 2``-th
        global augmentation; with a single global view, each image draws
        one of the two at random (as the reference code does for negatives).
    n_local_crops : int, default=8
        Number of local views (0 disables them).
    global_scale : (float, float), default=(0.4, 1.0)
        Area share of the global crops.
    local_scale : (float, float), default=(0.05, 0.4)
        Area share of the local crops.
    shift : callable, optional
        Applied to every view last (e.g. :class:`~ssad.augment.RotationTransform`).
    global_transforms : sequence of callables, optional
        Replace the global photometric augmentations (one per global view,
        cycled).  Default: DINO's.
    local_transform : callable, optional
        Replace the local photometric augmentation.  Default: DINO's.

    Examples
    --------
    >>> import torch
    >>> from ssad.augment import MultiCropTransform
    >>> views = MultiCropTransform(32, 16, n_local_crops=3)(torch.rand(5, 3, 40, 40))
    >>> [tuple(v.shape) for v in views][:3], len(views)
    ([(5, 3, 32, 32), (5, 3, 32, 32), (5, 3, 16, 16)], 5)
    """

    def __init__(
        self,
        global_size: Size,
        local_size: Size,
        *,
        n_global_crops: int = 2,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        shift: BatchTransform | None = None,
        global_transforms: Sequence[BatchTransform] | None = None,
        local_transform: BatchTransform | None = None,
    ) -> None:
        if n_global_crops < 1 or n_local_crops < 0:
            raise ValueError(
                "n_global_crops must be >= 1 and n_local_crops >= 0; got "
                f"{n_global_crops} and {n_local_crops}."
            )
        self.global_size = global_size
        self.local_size = local_size
        self.n_global_crops = n_global_crops
        self.n_local_crops = n_local_crops
        check_crop_scale(global_scale, "global_scale", "MultiCropTransform")
        check_crop_scale(local_scale, "local_scale", "MultiCropTransform")
        self.global_scale = (float(global_scale[0]), float(global_scale[1]))
        self.local_scale = (float(local_scale[0]), float(local_scale[1]))
        self.shift = shift
        default_global, default_local = dino_view_transforms(global_size, local_size)
        self.global_transforms = (
            list(global_transforms) if global_transforms is not None else default_global
        )
        self.local_transform = local_transform if local_transform is not None else default_local

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(global_size={self.global_size!r}, "
            f"local_size={self.local_size!r}, n_global_crops={self.n_global_crops}, "
            f"n_local_crops={self.n_local_crops}, global_scale={self.global_scale}, "
            f"local_scale={self.local_scale}, shift={self.shift!r})"
        )

    def _global(self, crop: torch.Tensor, i: int) -> torch.Tensor:
        transforms = self.global_transforms
        if self.n_global_crops > 1 or len(transforms) == 1:
            return transforms[i % len(transforms)](crop)
        pick = torch.randint(len(transforms), (crop.shape[0],), device=crop.device)
        out = torch.empty_like(crop)
        for j, transform in enumerate(transforms):
            sel = pick == j
            if bool(sel.any()):
                out[sel] = transform(crop[sel])
        return out

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Views of a batch ``(b, c, h, w)`` in [0, 1]: global views first, then local ones."""
        global_crop = RandomResizedCrop(self.global_size, scale=self.global_scale)
        local_crop = RandomResizedCrop(self.local_size, scale=self.local_scale)
        views = [self._global(global_crop(x), i) for i in range(self.n_global_crops)]
        views += [self.local_transform(local_crop(x)) for _ in range(self.n_local_crops)]
        if self.shift is not None:
            views = [self.shift(v) for v in views]
        return views
