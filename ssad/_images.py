"""The image input adapter: the only place in ssad that inspects raw ``X``.

:func:`check_images` validates what a user passes and wraps it in an
:class:`ImageSet` that knows its length and loads batches lazily, so that
resized images are never all held in memory at once.  :class:`Preprocessor`
turns a float batch in ``[0, 1]`` into model input (resize + normalise, from
the backbone's timm data config) on whatever device the batch is on.

Accepted inputs
---------------
- numpy arrays ``(n, H, W)`` or ``(n, H, W, C)`` with ``C`` in {1, 3, 4},
  dtype uint8 (0..255) or float in ``[0, 1]``;
- torch tensors ``(n, C, H, W)`` with ``C`` in {1, 3, 4}, uint8 or float in
  ``[0, 1]``;
- a list of PIL images;
- a list of image file paths (``str`` or :class:`os.PathLike`).

Grey images are repeated to three channels; the alpha channel of RGBA images
is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageSet", "Preprocessor", "check_images"]

_ACCEPTED = (
    "a numpy array (n, H, W) or (n, H, W, C) with C in {1, 3, 4}, a torch tensor "
    "(n, C, H, W), a list of PIL images or a list of image file paths"
)
_VALID_CHANNELS = (1, 3, 4)


class ImageSet:
    """A validated, lazily loaded collection of images.

    Create it with :func:`check_images`; it is also accepted wherever raw
    images are (it passes through :func:`check_images` unchanged).

    Parameters
    ----------
    data : ndarray, Tensor or list
        The images, already validated.
    kind : {"array", "tensor", "pil", "path"}
        Which form ``data`` has.
    """

    def __init__(self, data: Any, kind: str) -> None:
        self.data = data
        self.kind = kind

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"ImageSet(n={len(self)}, kind={self.kind!r})"

    @property
    def shape(self) -> tuple[int, ...]:
        """``(n_images,)``: lets scikit-learn utilities count samples."""
        return (len(self),)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """Return the images at ``indices`` (a new :class:`ImageSet`)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.kind in ("array", "tensor"):
            return ImageSet(self.data[idx], self.kind)
        return ImageSet([self.data[i] for i in idx], self.kind)

    def load(
        self,
        indices: Sequence[int] | np.ndarray | slice,
        size: tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        interpolation: str = "bilinear",
    ) -> torch.Tensor:
        """Load images as a float32 tensor ``(b, 3, h, w)`` with values in ``[0, 1]``.

        Parameters
        ----------
        indices : slice or sequence of int
            Which images to load.
        size : (int, int), optional
            Resize each image to ``(height, width)``.  Needed when the images
            have different sizes (PIL images, files).
        device : torch.device, optional
            Where to put the batch.  Arrays travel as uint8 where they can and
            are converted and resized on that device.
        interpolation : {"bilinear", "bicubic", "nearest"}, default="bilinear"
            Resampling used when resizing.
        """
        if self.kind in ("array", "tensor"):
            if isinstance(indices, slice):
                chunk = self.data[indices]
            else:
                chunk = self.data[np.asarray(indices, dtype=np.int64)]
            if self.kind == "array":
                x = torch.from_numpy(np.ascontiguousarray(chunk))
                x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
            else:
                x = chunk
            x = _to_unit_float(x.to(device) if device is not None else x)
            return _resize(_to_rgb(x), size, interpolation)
        if isinstance(indices, slice):
            items = self.data[indices]
        else:
            items = [self.data[i] for i in np.asarray(indices, dtype=np.int64)]
        tensors = [_pil_to_tensor(_open(item) if self.kind == "path" else item) for item in items]
        if size is None and len({t.shape for t in tensors}) > 1:
            raise ValueError(
                "The images have different sizes "
                f"({sorted({tuple(t.shape[1:]) for t in tensors})[:3]} ...); pass a target size "
                "(e.g. the estimator's image_size parameter) to resize them."
            )
        if size is not None:
            tensors = [_resize(t.unsqueeze(0), size, interpolation)[0] for t in tensors]
        x = torch.stack(tensors)
        return x.to(device) if device is not None else x

    def iter_batches(self, batch_size: int, **load_kwargs: Any) -> Iterator[torch.Tensor]:
        """Yield consecutive batches from :meth:`load` (keyword arguments go to it)."""
        for start in range(0, len(self), batch_size):
            yield self.load(slice(start, start + batch_size), **load_kwargs)


def check_images(X: Any, *, name: str = "X") -> ImageSet:
    """Validate images and wrap them in an :class:`ImageSet`.

    Parameters
    ----------
    X : ndarray, Tensor, list of PIL images, list of paths or ImageSet
        The images; see the module documentation for the accepted forms.
    name : str, default="X"
        Name used in error messages.

    Returns
    -------
    ImageSet
        The validated images; nothing is resized or copied yet.

    Raises
    ------
    TypeError
        If ``X`` is of an unsupported type or dtype.
    ValueError
        If ``X`` is empty, has the wrong number of dimensions or channels,
        holds NaN or infinite values, or values outside the declared range.
    FileNotFoundError
        If a path does not point to a file.
    """
    if isinstance(X, ImageSet):
        return X
    if isinstance(X, np.ndarray):
        return _check_array(X, name)
    if isinstance(X, torch.Tensor):
        return _check_tensor(X, name)
    if isinstance(X, (list, tuple)):
        return _check_list(list(X), name)
    raise TypeError(f"{name} must be {_ACCEPTED}. Got an object of type {type(X).__name__}.")


def _check_array(X: np.ndarray, name: str) -> ImageSet:
    if X.ndim not in (3, 4):
        hint = ""
        if X.ndim == 2:
            hint = " Flattened images must be reshaped first, e.g. X.reshape(-1, 28, 28)."
        raise ValueError(
            f"{name} must be a numpy array of shape (n, H, W) or (n, H, W, C); "
            f"got {X.ndim} dimension(s) with shape {X.shape}.{hint}"
        )
    if X.ndim == 4 and X.shape[-1] not in _VALID_CHANNELS:
        hint = ""
        if X.shape[1] in _VALID_CHANNELS:
            hint = " It looks channels-first; use X.transpose(0, 2, 3, 1)."
        raise ValueError(
            f"{name} must have C in {{1, 3, 4}} channels in the last axis (n, H, W, C); "
            f"got shape {X.shape}.{hint}"
        )
    _check_common(X.shape[0], X.dtype, name)
    _check_values(X, np.issubdtype(X.dtype, np.floating), name)
    return ImageSet(X, "array")


def _check_tensor(X: torch.Tensor, name: str) -> ImageSet:
    if X.ndim != 4 or X.shape[1] not in _VALID_CHANNELS:
        raise ValueError(
            f"{name} must be a torch tensor of shape (n, C, H, W) with C in {{1, 3, 4}}; "
            f"got shape {tuple(X.shape)}."
        )
    _check_common(X.shape[0], X.dtype, name)
    _check_values(X, X.is_floating_point(), name)
    return ImageSet(X.detach(), "tensor")


def _check_common(n: int, dtype: Any, name: str) -> None:
    if n == 0:
        raise ValueError(f"{name} holds 0 images; at least 1 is required.")
    if isinstance(dtype, torch.dtype):
        ok = dtype == torch.uint8 or dtype.is_floating_point
    else:
        ok = dtype == np.uint8 or np.issubdtype(dtype, np.floating)
    if not ok:
        hint = ""
        if isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.integer):
            hint = " If the values are 0..255, convert with X.astype(np.uint8)."
        raise TypeError(
            f"{name} must have dtype uint8 (values 0..255) or a float dtype with values "
            f"in [0, 1]; got dtype {dtype}.{hint}"
        )


def _check_values(X: Any, is_float: bool, name: str) -> None:
    if not is_float:
        return
    finite = np.isfinite(X).all() if isinstance(X, np.ndarray) else bool(torch.isfinite(X).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values.")
    lo, hi = float(X.min()), float(X.max())
    if lo < 0.0 or hi > 1.0:
        hint = " Divide by 255 or convert to uint8." if hi > 1.0 and hi <= 255.0 else ""
        raise ValueError(
            f"{name} is a float array, so its values must lie in [0, 1]; got values in "
            f"[{lo:g}, {hi:g}].{hint}"
        )


def _check_list(X: list[Any], name: str) -> ImageSet:
    if not X:
        raise ValueError(f"{name} holds 0 images; at least 1 is required.")
    if all(isinstance(x, Image.Image) for x in X):
        return ImageSet(X, "pil")
    if all(isinstance(x, (str, os.PathLike)) for x in X):
        paths = [os.fspath(x) for x in X]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(paths)} image paths in {name} are not files, "
                f"e.g. {missing[0]!r}."
            )
        return ImageSet(paths, "path")
    kinds = sorted({type(x).__name__ for x in X})
    raise TypeError(
        f"A list {name} must hold only PIL images or only file paths; got items of type(s) "
        f"{', '.join(kinds)}."
    )


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"Could not read the image file {path!r}: {exc}") from exc


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 4:
        return x[:, :3]
    return x


def _resize(
    x: torch.Tensor, size: tuple[int, int] | None, interpolation: str = "bilinear"
) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    kwargs: dict[str, Any] = (
        {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    )
    out = F.interpolate(x, size=tuple(size), mode=mode, **kwargs)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


@dataclass(frozen=True)
class Preprocessor:
    """Resize and normalise a float batch in ``[0, 1]`` into model input.

    Parameters
    ----------
    size : (int, int)
        Model input ``(height, width)``.
    mean, std : tuple of float
        Per-channel normalisation.
    interpolation : str
        "bilinear", "bicubic" or "nearest".
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"

    @classmethod
    def from_data_config(
        cls, config: dict[str, Any], image_size: int | tuple[int, int] | None = None
    ) -> Preprocessor:
        """Build from a timm data config (``timm.data.resolve_model_data_config``).

        ``image_size`` overrides the config's input size.
        """
        if image_size is None:
            size = tuple(config["input_size"][-2:])
        elif isinstance(image_size, int):
            size = (image_size, image_size)
        else:
            size = tuple(image_size)
        return cls(
            size=(int(size[0]), int(size[1])),
            mean=tuple(float(m) for m in config["mean"]),
            std=tuple(float(s) for s in config["std"]),
            interpolation=str(config.get("interpolation", "bicubic")),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` (b, 3, h, w) in [0, 1] to :attr:`size` and normalise it."""
        x = _resize(x, self.size, self.interpolation)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(
        self, images: ImageSet, batch_size: int, device: torch.device | str | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield model-ready batches of ``images``, loaded, resized and normalised on ``device``."""
        for x in images.iter_batches(
            batch_size, size=self.size, device=device, interpolation=self.interpolation
        ):
            yield self(x)
