"""Shifting transforms: distribution shifts that turn normal images into negative samples.

Each transform takes a float batch ``(b, c, h, w)`` and returns a batch of the
same shape with an independent random draw per image (torch's RNG, seeded by
the fit methods through :func:`ssad._training.seeded`).  They are the
negative augmentations of Rafiee et al. (2022), table 2: rotations, patch
permutations and pixel permutations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ssad.augment._views import ViewTransform

__all__ = [
    "SHIFTING_TRANSFORMS",
    "PatchPermutationTransform",
    "PixelShuffleTransform",
    "RotationTransform",
    "make_shifting_transform",
]

#: Names accepted by :func:`make_shifting_transform`.
SHIFTING_TRANSFORMS = ("rot", "rot360", "perm4", "perm16", "pixel_shuffle")


def _non_identity_perms(b: int, n: int, device: torch.device) -> torch.Tensor:
    """``(b, n)`` random permutations of ``range(n)``, none of them the identity (n >= 2)."""
    perms = torch.rand(b, n, device=device).argsort(dim=1)
    identity = torch.arange(n, device=device)
    redo = (perms == identity).all(dim=1)
    while bool(redo.any()):
        k = int(redo.sum())
        perms[redo] = torch.rand(k, n, device=device).argsort(dim=1)
        redo = (perms == identity).all(dim=1)
    return perms


class RotationTransform(ViewTransform):
    """Rotate each image by an angle drawn from ``angles`` (counter-clockwise, degrees).

    Parameters
    ----------
    angles : sequence of int or "uniform", default=(90, 180, 270)
        Multiples of 90 are exact quarter turns (:func:`torch.rot90`, square
        images only; the negative ``"rot"`` of the paper).  ``"uniform"``
        draws any angle in [0, 360) and resamples the image on a rotated grid,
        filling the corners with ``fill`` (the ``"rot360"`` negative of the
        reference code, torchvision's ``RandomRotation((0, 360))``).
    fill : float, default=0.0
        Value of pixels rotated in from outside the image (``"uniform"`` only).
    interpolation : {"nearest", "bilinear"}, default="nearest"
        Resampling of ``"uniform"`` rotations (torchvision's default is nearest).

    Examples
    --------
    >>> import torch
    >>> from ssad.augment import RotationTransform
    >>> x = torch.rand(4, 3, 8, 8)
    >>> y = RotationTransform(angles=(90,))(x)
    >>> torch.equal(y, torch.rot90(x, 1, dims=(2, 3)))
    True
    """

    def __init__(
        self,
        angles: Sequence[int] | str = (90, 180, 270),
        *,
        fill: float = 0.0,
        interpolation: str = "nearest",
    ) -> None:
        if isinstance(angles, str):
            if angles != "uniform":
                raise ValueError(f"angles must be a sequence of ints or 'uniform'; got {angles!r}.")
        else:
            angles = tuple(int(a) for a in angles)
            if not angles or any(a % 90 for a in angles):
                raise ValueError(
                    f"angles must be non-empty multiples of 90 (or 'uniform'); got {angles!r}."
                )
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                f"interpolation must be 'nearest' or 'bilinear'; got {interpolation!r}."
            )
        self.angles = angles
        self.fill = fill
        self.interpolation = interpolation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.angles == "uniform":
            theta = torch.rand(x.shape[0], device=x.device) * 360.0
            return self._rotate_any(x, theta)
        assert not isinstance(self.angles, str)
        h, w = x.shape[-2:]
        if h != w:
            raise ValueError(f"Quarter-turn rotations need square images; got {h}x{w}.")
        choices = torch.tensor([(a // 90) % 4 for a in self.angles], device=x.device)
        k = choices[torch.randint(len(choices), (x.shape[0],), device=x.device)]
        out = x.clone()
        for turns in range(1, 4):
            sel = k == turns
            if bool(sel.any()):
                out[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
        return out

    def _rotate_any(self, x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
        """Rotate about the image centre by ``degrees`` (b,), counter-clockwise."""
        b, _, h, w = x.shape
        rad = degrees.to(torch.float32) * (math.pi / 180.0)
        cos, sin = torch.cos(rad), torch.sin(rad)
        # output pixel -> input pixel (normalised coordinates, y down); aspect-correct
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * h / w
        theta[:, 1, 0] = sin * w / h
        theta[:, 1, 1] = cos
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        ones = torch.ones_like(x[:, :1])
        sampled = F.grid_sample(
            torch.cat([x.float(), ones.float()], dim=1),
            grid,
            mode=self.interpolation,
            padding_mode="zeros",
            align_corners=False,
        )
        img, inside = sampled[:, :-1], sampled[:, -1:]
        return (img + (1.0 - inside) * self.fill).to(x.dtype)


class PatchPermutationTransform(ViewTransform):
    """Cut each image into a ``grid x grid`` array of patches and shuffle them.

    Every image gets its own random permutation of the ``grid**2`` patches,
    never the identity (``"perm4"``: ``grid=2``; ``"perm16"``: ``grid=4``).
    Patches are ``(h // grid) x (w // grid)`` pixels; when the size is not a
    multiple of ``grid`` the last ``h % grid`` rows and ``w % grid`` columns
    stay where they are.

    Parameters
    ----------
    grid : int, default=2
        Patches per side (>= 2).

    Examples
    --------
    >>> import torch
    >>> from ssad.augment import PatchPermutationTransform
    >>> x = torch.rand(2, 3, 8, 8)
    >>> y = PatchPermutationTransform(grid=2)(x)
    >>> y.shape == x.shape
    True
    >>> torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    True
    """

    def __init__(self, grid: int = 2) -> None:
        if int(grid) < 2:
            raise ValueError(f"grid must be >= 2; got {grid}.")
        self.grid = int(grid)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.grid
        ph, pw = h // g, w // g
        if ph == 0 or pw == 0:
            raise ValueError(f"Images of {h}x{w} are too small for a {g}x{g} patch grid.")
        region = x[..., : g * ph, : g * pw]
        patches = region.reshape(b, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, g * g, c, ph, pw)
        perms = _non_identity_perms(b, g * g, x.device)
        index = perms.view(b, g * g, 1, 1, 1).expand_as(patches)
        shuffled = torch.gather(patches, 1, index)
        shuffled = shuffled.reshape(b, g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
        out = x.clone()
        out[..., : g * ph, : g * pw] = shuffled.reshape(b, c, g * ph, g * pw)
        return out


class PixelShuffleTransform(ViewTransform):
    """Randomly permute the pixel positions of each image (all channels alike).

    Every image gets its own random permutation of its ``h * w`` positions
    (never the identity); the channels of a pixel move together, so the set
    of pixel colours is kept (the ``"pixel_shuffle"`` negative; "Pix. Perm"
    in the paper's table 2).

    Examples
    --------
    >>> import torch
    >>> from ssad.augment import PixelShuffleTransform
    >>> x = torch.rand(2, 3, 4, 4)
    >>> PixelShuffleTransform()(x).shape
    torch.Size([2, 3, 4, 4])
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h * w < 2:
            return x.clone()
        perms = _non_identity_perms(b, h * w, x.device)
        flat = x.reshape(b, c, h * w)
        index = perms.unsqueeze(1).expand(b, c, h * w)
        return torch.gather(flat, 2, index).reshape(b, c, h, w)


def make_shifting_transform(name: str) -> ViewTransform:
    """The shifting transform of a negative-sampling name.

    Parameters
    ----------
    name : {"rot", "rot360", "perm4", "perm16", "pixel_shuffle"}
        ``"rot"``: a quarter turn of 90, 180 or 270 degrees;
        ``"rot360"``: a rotation by a uniform angle in [0, 360) with black
        corners; ``"perm4"`` / ``"perm16"``: a shuffled 2x2 / 4x4 patch grid;
        ``"pixel_shuffle"``: shuffled pixels.

    Returns
    -------
    ViewTransform
        The transform.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`SHIFTING_TRANSFORMS`.
    """
    if name == "rot":
        return RotationTransform((90, 180, 270))
    if name == "rot360":
        return RotationTransform("uniform")
    if name == "perm4":
        return PatchPermutationTransform(grid=2)
    if name == "perm16":
        return PatchPermutationTransform(grid=4)
    if name == "pixel_shuffle":
        return PixelShuffleTransform()
    raise ValueError(f"Unknown shifting transform {name!r}; expected one of {SHIFTING_TRANSFORMS}.")
