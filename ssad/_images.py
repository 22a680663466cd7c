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
- a list of image file paths (``str`` or :class:`os.PathLike`);
- the path of a folder (``str`` or :class:`os.PathLike`): the image files
  anywhere below it (:func:`find_image_files`: recursive, the extensions of
  :data:`IMAGE_EXTENSIONS`, hidden entries skipped, sorted by path).

The batch axis is required
--------------------------
``X`` is always a batch, even of one image: a single image must be given as
``X[None]``.  Without that rule a single ``(H, W, C)`` array would silently
be read as ``H`` grey images of ``W x C`` pixels, so:

- a 2-D array is refused (a single grey image, or flattened images);
- a 3-D array ``(n, H, W)`` whose last axis is 1, 3 or 4 *and* smaller than
  the axis before it, e.g. ``(32, 32, 3)``, looks like one ``(H, W, C)``
  image and is refused.  A stack of grey images that narrow (at most 4
  pixels wide and narrower than tall) is given with a channel axis,
  ``X[..., None]``, of shape ``(n, H, W, 1)``.  Other 3-D arrays, e.g.
  ``(3, 28, 28)`` or ``(5, 4, 4)``, are stacks of grey images;
- a 3-D tensor is a single ``(C, H, W)`` image and is refused.

Pixel values
------------
uint8 arrays and tensors are divided by 255.  PIL images and image files go
through :func:`pil_to_array`, which the dataset readers of
:mod:`ssad.datasets` use too, so an image file reads the same either way:

- 8-bit modes (``"1"``, ``"L"``, ``"P"``, ``"RGB"``, ...) are divided by 255;
- 16-bit and 32-bit integer modes (``"I;16"``, ``"I;16B"``, ``"I"``, as
  16-bit PNG and TIFF files open) are divided by 65535, the 16-bit range,
  after clipping to ``0..65535``;
- float images (mode ``"F"``) must already hold values in ``[0, 1]``, like
  float arrays; other values raise a :class:`ValueError` rather than being
  clipped into a constant image or rescaled by a per-image maximum.

Grey images are repeated to three channels.  Transparent pixels (RGBA and
grey-alpha images, palette images with transparency, and the fourth channel
of 4-channel arrays and tensors) are composited on a white background, the
usual rendering of transparent PNGs.
"""

from __future__ import annotations

import collections
import logging
import numbers
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "GREY_MODES",
    "IMAGE_EXTENSIONS",
    "ImageSet",
    "Preprocessor",
    "check_images",
    "find_image_files",
    "luma",
    "pil_to_array",
    "probe_image",
    "read_image_file",
]

logger = logging.getLogger(__name__)

_ACCEPTED = (
    "a numpy array (n, H, W) or (n, H, W, C) with C in {1, 3, 4}, a torch tensor "
    "(n, C, H, W), a list of PIL images, a list of image file paths or the path of a folder "
    "of images"
)
_VALID_CHANNELS = (1, 3, 4)

#: File name endings read as images in a folder (compared case-insensitively).
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)

#: Pillow modes :func:`pil_to_array` reads as one grey channel (2-D result).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

#: Full scale of Pillow's integer modes wider than 8 bits: 16-bit PNG and TIFF
#: files open as "I;16*" or, in older Pillow versions, as "I".
_WIDE_INT_TOP = 65535.0

#: ITU-R 601-2 luma weights, those of Pillow's ``convert("L")``.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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

    def common_size(self) -> tuple[int, int]:
        """``(height, width)`` shared by every image (file headers are read, not the pixels).

        Raises
        ------
        ValueError
            If the images differ in size.
        """
        if self.kind == "array":
            return int(self.data.shape[1]), int(self.data.shape[2])
        if self.kind == "tensor":
            return int(self.data.shape[2]), int(self.data.shape[3])
        if self.kind == "pil":
            sizes = {(int(img.height), int(img.width)) for img in self.data}
        else:
            sizes = {probe_image(path)[1] for path in self.data}
        if len(sizes) > 1:
            raise ValueError(
                "Expected images of one size (height x width), got "
                f"{len(sizes)} sizes, e.g. {sorted(sizes)[:3]}; resize them to one size first."
            )
        (size,) = sizes
        return size

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
        tensors = [
            _array_to_tensor(read_image_file(item) if self.kind == "path" else pil_to_array(item))
            for item in items
        ]
        if size is None:
            _check_same_size(tensors)
        else:
            tensors = [_resize(t.unsqueeze(0), size, interpolation)[0] for t in tensors]
        x = torch.stack(tensors)
        return x.to(device) if device is not None else x

    def load_batches(
        self,
        index_batches: Iterable[Sequence[int] | np.ndarray | slice],
        *,
        size: tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        interpolation: str = "bilinear",
        num_workers: int = 0,
    ) -> Generator[tuple[Any, torch.Tensor], None, None]:
        """Load batches of images in turn, as :meth:`load` does; yield ``(indices, batch)``.

        Parameters
        ----------
        index_batches : iterable of slices or sequences of int
            The images of each batch.  It may be a lazy iterator: with
            ``num_workers > 0`` it is read a few batches ahead.
        size, device, interpolation
            As in :meth:`load`.
        num_workers : int, default=0
            Image files (``kind="path"``) are decoded and resized in this many
            :class:`torch.utils.data.DataLoader` worker processes, a few
            batches ahead of the consumer; 0 decodes them here, in turn.
            Arrays, tensors and PIL images are always loaded here (their
            conversion is cheap next to decoding a file, and copying them to
            worker processes is not).

        Yields
        ------
        indices : slice or sequence of int
            The item of ``index_batches`` the batch holds.
        batch : torch.Tensor
            The images, as :meth:`load` returns them.
        """
        if num_workers <= 0 or self.kind != "path":
            for idx in index_batches:
                yield idx, self.load(idx, size=size, device=device, interpolation=interpolation)
            return
        handed_out: collections.deque[Any] = collections.deque()

        def batch_sampler() -> Iterator[list[int]]:
            for idx in index_batches:
                handed_out.append(idx)
                if isinstance(idx, slice):
                    yield list(range(*idx.indices(len(self))))
                else:
                    yield [int(i) for i in np.asarray(idx, dtype=np.int64)]

        dev = torch.device(device) if device is not None else None
        loader = DataLoader(
            _DecodedFiles(self.data, size, interpolation),
            batch_sampler=batch_sampler(),
            num_workers=num_workers,
            collate_fn=_stack_decoded,
            pin_memory=dev is not None and dev.type == "cuda",
            # the workers draw nothing; a generator of their own keeps the loader from
            # drawing their seeds from torch's global generator (dropout, views)
            generator=torch.Generator().manual_seed(0),
        )
        for x in loader:  # in order: the n-th batch is the n-th item handed out
            yield handed_out.popleft(), (x.to(dev, non_blocking=True) if dev is not None else x)

    def iter_batches(
        self, batch_size: int, *, num_workers: int = 0, **load_kwargs: Any
    ) -> Iterator[torch.Tensor]:
        """Yield consecutive batches from :meth:`load` (keyword arguments go to it).

        ``num_workers``: decode image files in worker processes (see :meth:`load_batches`).
        """
        starts = range(0, len(self), batch_size)
        batches = (slice(start, start + batch_size) for start in starts)
        for _, x in self.load_batches(batches, num_workers=num_workers, **load_kwargs):
            yield x


class _DecodedFiles(Dataset[torch.Tensor]):
    """Image files decoded and resized one by one, as :meth:`ImageSet.load` does:
    what :class:`~torch.utils.data.DataLoader` workers run."""

    def __init__(
        self, paths: Sequence[str], size: tuple[int, int] | None, interpolation: str
    ) -> None:
        self.paths, self.size, self.interpolation = paths, size, interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = _array_to_tensor(read_image_file(self.paths[i]))
        if self.size is not None:
            x = _resize(x.unsqueeze(0), self.size, self.interpolation)[0]
        return x


def _stack_decoded(tensors: list[torch.Tensor]) -> torch.Tensor:
    _check_same_size(tensors)
    return torch.stack(tensors)


def _check_same_size(tensors: Sequence[torch.Tensor]) -> None:
    if len({t.shape for t in tensors}) > 1:
        raise ValueError(
            "The images have different sizes "
            f"({sorted({tuple(t.shape[1:]) for t in tensors})[:3]} ...); pass a target size "
            "(e.g. the estimator's image_size parameter) to resize them."
        )


def check_images(X: Any, *, name: str = "X") -> ImageSet:
    """Validate images and wrap them in an :class:`ImageSet`.

    Parameters
    ----------
    X : ndarray, Tensor, list of PIL images, list of paths, folder path or ImageSet
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
        If a path in a list does not point to a file, or a folder path does
        not exist or holds no image file.
    NotADirectoryError
        If ``X`` is a single path that is a file: a batch of one file is
        ``[path]``.
    """
    if isinstance(X, ImageSet):
        return X
    if isinstance(X, (str, os.PathLike)):
        files = find_image_files(X, name=name)
        if not files:
            raise FileNotFoundError(
                f"{name} is the folder '{os.fspath(X)}', which holds no image file: expected "
                f"files ending in {', '.join(IMAGE_EXTENSIONS)} in it or its sub-folders."
            )
        return ImageSet([str(f) for f in files], "path")
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
            hint = (
                f" Reshape your data: a single grey image must be given as {name}[None], "
                f"flattened images reshaped, e.g. {name}.reshape(-1, 28, 28)."
            )
        raise ValueError(
            f"{name} must be a numpy array of shape (n, H, W) or (n, H, W, C) (a batch of "
            f"images); got {X.ndim} dimension(s) with shape {X.shape}.{hint}"
        )
    if X.ndim == 3 and X.shape[2] in _VALID_CHANNELS and X.shape[2] < X.shape[1]:
        # (H, W, C) read as H grey images of W x C pixels: refuse rather than guess
        raise ValueError(
            f"{name} must be a batch of images of shape (n, H, W) or (n, H, W, C); got shape "
            f"{X.shape}, which looks like a single image (H, W, C) without the batch axis. "
            f"Reshape your data: a single image must be given as {name}[None]; grey images "
            f"{X.shape[2]} pixel(s) wide must be given with a channel axis, {name}[..., None]."
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
    _check_pixels(X.shape[1], X.shape[2], name)
    _check_values(X, np.issubdtype(X.dtype, np.floating), name)
    return ImageSet(X, "array")


def _check_tensor(X: torch.Tensor, name: str) -> ImageSet:
    if X.ndim == 3:
        raise ValueError(
            f"{name} must be a torch tensor of shape (n, C, H, W) (a batch of images); got "
            f"shape {tuple(X.shape)}, a single image (C, H, W) without the batch axis. "
            f"Reshape your data: a single image must be given as {name}[None]; grey images "
            f"(n, H, W) as {name}[:, None]."
        )
    if X.ndim != 4 or X.shape[1] not in _VALID_CHANNELS:
        hint = ""
        if X.ndim == 4 and X.shape[-1] in _VALID_CHANNELS:
            hint = f" It looks channels-last; use {name}.permute(0, 3, 1, 2)."
        raise ValueError(
            f"{name} must be a torch tensor of shape (n, C, H, W) with C in {{1, 3, 4}}; "
            f"got shape {tuple(X.shape)}.{hint}"
        )
    _check_common(X.shape[0], X.dtype, name)
    _check_pixels(X.shape[2], X.shape[3], name)
    _check_values(X, X.is_floating_point(), name)
    return ImageSet(X.detach(), "tensor")


def _check_common(n: int, dtype: Any, name: str) -> None:
    if n == 0:
        raise ValueError(f"{name} holds 0 images; at least 1 is required.")
    if isinstance(dtype, torch.dtype):
        ok = dtype == torch.uint8 or dtype.is_floating_point
    else:
        native = np.dtype(dtype).newbyteorder("=")
        ok = native == np.uint8 or native in (np.float16, np.float32, np.float64)
        if ok and not dtype.isnative:
            raise TypeError(
                f"{name} has the non-native byte order of dtype {dtype.str!r}; convert it "
                "with X.astype(X.dtype.newbyteorder('='))."
            )
        if np.issubdtype(dtype, np.floating) and not ok:
            raise TypeError(
                f"{name} has dtype {dtype}, which torch cannot hold; convert it with "
                "X.astype(np.float64)."
            )
    if not ok:
        hint = ""
        if isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.integer):
            hint = (
                " If the values are 0..255, convert with X.astype(np.uint8); if they use more "
                "bits (e.g. 16-bit, 0..65535), scale to float: X / 65535."
            )
        raise TypeError(
            f"{name} must have dtype uint8 (values 0..255) or a float dtype with values "
            f"in [0, 1]; got dtype {dtype}.{hint}"
        )


def _check_pixels(height: int, width: int, name: str) -> None:
    if height == 0 or width == 0:
        raise ValueError(
            f"{name} holds images of {height}x{width} (height x width) pixels; an image "
            "needs at least 1 pixel in each direction."
        )


def _check_values(X: Any, is_float: bool, name: str) -> None:
    if not is_float:
        return
    finite = np.isfinite(X).all() if isinstance(X, np.ndarray) else bool(torch.isfinite(X).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values.")
    lo, hi = float(X.min()), float(X.max())
    if lo < 0.0 or hi > 1.0:
        if lo >= -0.1 and hi <= 1.1:
            hint = " If this is resampling overshoot, clip first: np.clip(X, 0, 1)."
        elif lo < 0.0 and hi <= 10.0:
            hint = (
                " Values below 0 suggest normalised input (e.g. ImageNet mean/std): pass the "
                "images before normalisation; ssad normalises for each model itself."
            )
        elif lo >= 0.0 and 1.0 < hi <= 255.0:
            hint = " Divide by 255 or convert to uint8."
        else:
            hint = ""
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
    hint = ""
    if any(isinstance(x, np.ndarray | torch.Tensor) for x in X):
        hint = " Stack arrays of one size into one batch first: np.stack(X) or torch.stack(X)."
    raise TypeError(
        f"A list {name} must hold only PIL images or only file paths; got items of type(s) "
        f"{', '.join(kinds)}.{hint}"
    )


def find_image_files(
    folder: str | os.PathLike[str],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    *,
    refuse: Callable[[str], str | None] | None = None,
    name: str = "X",
) -> list[Path]:
    """The image files anywhere below ``folder``, sorted by path.

    Hidden files and folders (name starting with ".") are skipped.  Links to
    folders are followed, but no real folder is read twice: a link back to
    ``folder`` or a folder holding it, or to a folder already read (a loop, or
    a second link to it) is skipped with a logged warning.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to search, recursively.
    extensions : sequence of str, default=IMAGE_EXTENSIONS
        Lower-case file name endings to keep, e.g. ``(".png", ".jpg")``;
        compared case-insensitively.
    refuse : callable, default=None
        ``refuse(real_path) -> reason or None``: further folders not to enter
        (e.g. another class folder of a data set); a reason is logged.
    name : str, default="X"
        Name used in error messages.

    Returns
    -------
    list of pathlib.Path
        The files, sorted; empty when there is none.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    NotADirectoryError
        If ``folder`` is a file.
    """
    if not os.fspath(folder):  # Path("") is the working directory
        raise FileNotFoundError(f"{name} must be an existing folder of images; got an empty path.")
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"{name} must be an existing folder of images; '{root}' does not exist."
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"{name} must be a folder of images; '{root}' is a file. Pass a list of files, "
            f"e.g. ['{root}'], to score single images."
        )
    real_root = os.path.realpath(root)
    visited = {real_root}

    def refused(real: str) -> str | None:
        if real in visited:
            return "a folder already read (a link loop or a second link to it)"
        if _inside(real_root, real):
            return f"a folder holding '{root}'"
        return refuse(real) if refuse is not None else None

    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for sub in sorted(d for d in dirnames if not d.startswith(".")):
            path = os.path.join(dirpath, sub)
            real = os.path.realpath(path)
            reason = refused(real)
            if reason is None:
                visited.add(real)
                kept.append(sub)
            else:
                logger.warning("Skipped the folder '%s': it leads to %s.", path, reason)
        dirnames[:] = kept
        files += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(tuple(extensions))
        ]
    return sorted(files)


def _inside(path: str, folder: str) -> bool:
    """Whether the real path ``path`` lies strictly inside the real path ``folder``."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def probe_image(path: str | os.PathLike[str]) -> tuple[str, tuple[int, int]]:
    """Return the Pillow mode and ``(height, width)`` of an image file, reading its header.

    Raises
    ------
    ValueError
        If the file is not an image Pillow reads, or is larger than Pillow's
        decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``); the message
        names the file.
    """
    try:
        with Image.open(path) as img:
            return img.mode, (img.height, img.width)
    except FileNotFoundError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on corrupt headers
        raise _read_error(path, exc) from exc


def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into an array, as :func:`pil_to_array` does.

    The one reader of image files in ssad: the image adapter and the dataset
    readers of :mod:`ssad.datasets` both use it.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    ndarray of shape (H, W) or (H, W, 3), dtype float32
        Values in ``[0, 1]``; see :func:`pil_to_array`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an image Pillow decodes, is larger than Pillow's
        decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), or is a float
        image with values outside ``[0, 1]``; the message names the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_array(img)
    except FileNotFoundError:
        raise
    except Exception as exc:  # decoders of untrusted bytes raise many types
        raise _read_error(path, exc) from exc


def read_mask_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a defect-mask file into a boolean ``(H, W)`` array: True is defect.

    A pixel is a defect when its stored value is nonzero in any channel (at
    any bit depth: a 16-bit mask of label indices 0/1 counts its 1s) and, in
    files with transparency, it is not fully transparent.  Unlike
    :func:`read_image_file`, nothing is composited on white or scaled.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an image Pillow decodes; the message names the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("LA", "La", "PA", "P", "RGBA", "RGBa"):
                pixels = np.asarray(img.convert("LA" if mode in ("LA", "La") else "RGBA"))
                return (pixels[..., :-1] != 0).any(axis=-1) & (pixels[..., -1] != 0)
            if mode in ("1", "L", "F") or mode.startswith("I"):
                return np.asarray(img) != 0
            return (np.asarray(img.convert("RGB")) != 0).any(axis=-1)
    except FileNotFoundError:
        raise
    except Exception as exc:  # decoders of untrusted bytes raise many types
        raise _read_error(path, exc) from exc


def check_image_size(image_size: object, *, func: str) -> tuple[int, int] | None:
    """Turn ``image_size`` (``None``, an int or an ``(h, w)`` pair) into ``(h, w)``.

    Raises a ValueError naming ``func`` for anything else (floats, bools,
    strings, sizes below 1, sequences not of length 2).
    """
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        if int(image_size) >= 1:
            return int(image_size), int(image_size)
    elif isinstance(image_size, tuple | list) and len(image_size) == 2:
        if all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) >= 1
            for s in image_size
        ):
            return int(image_size[0]), int(image_size[1])
    raise ValueError(
        f"The 'image_size' parameter of {func} must be None, a positive int or a pair "
        f"(height, width) of positive ints. Got {image_size!r} instead."
    )


def _read_error(path: str | os.PathLike[str], exc: Exception) -> ValueError:
    if isinstance(exc, Image.DecompressionBombError):
        return ValueError(
            f"Refused to read the image file {os.fspath(path)!r}: {exc} Raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the file is trusted."
        )
    return ValueError(f"Could not read the image file {os.fspath(path)!r}: {exc}")


def pil_to_array(img: Image.Image) -> np.ndarray:
    """Convert a PIL image into float32 pixel values in ``[0, 1]``.

    The one conversion of PIL images in ssad (see the module documentation):
    8-bit modes are divided by 255, 16/32-bit integer modes (``"I;16*"``,
    ``"I"``) by 65535 after clipping to ``0..65535``, float images (``"F"``)
    must hold values in ``[0, 1]`` already; transparent pixels are composited
    on white.

    Parameters
    ----------
    img : PIL.Image.Image
        The image, in any mode Pillow converts to RGB.

    Returns
    -------
    ndarray of shape (H, W) or (H, W, 3), dtype float32
        2-D for the grey modes of :data:`GREY_MODES`, RGB otherwise.

    Raises
    ------
    ValueError
        If the image has no pixels, a float image holds NaN, infinite or
        out-of-range values, or the mode cannot be converted to RGB.
    """
    if img.width == 0 or img.height == 0:
        raise ValueError(
            f"The image has {img.height}x{img.width} (height x width) pixels; an image needs "
            "at least 1 pixel in each direction."
        )
    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        wide = np.clip(np.asarray(img).astype(np.int64), 0, int(_WIDE_INT_TOP))
        return wide.astype(np.float32) / np.float32(_WIDE_INT_TOP)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("A float (mode 'F') image contains NaN or infinite values.")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                "A float (mode 'F') image must hold values in [0, 1], as float arrays do; "
                f"got values in [{lo:g}, {hi:g}]. Scale it first, e.g. "
                "Image.fromarray(arr / 65535) for 16-bit data."
            )
        return arr.copy()
    if mode in ("LA", "La", "PA", "P", "RGBA", "RGBa"):
        # convert() turns premultiplied modes and palette transparency into straight alpha
        target = "LA" if mode in ("LA", "La") else "RGBA"
        pixels = _unit(np.asarray(img.convert(target)))
        colour, alpha = pixels[..., :-1], pixels[..., -1:]
        out = colour * alpha + (np.float32(1.0) - alpha)
        return out[..., 0] if target == "LA" else out
    if mode in GREY_MODES:  # "1", "L"
        return _unit(np.asarray(img.convert("L")))
    return _unit(np.asarray(img if mode == "RGB" else img.convert("RGB")))


def _unit(arr: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (as ``_to_unit_float`` does for tensors)."""
    return arr.astype(np.float32) / np.float32(255.0)


def luma(arr: np.ndarray) -> np.ndarray:
    """Grey level of float RGB pixels ``(..., 3)``, with Pillow's ``convert("L")`` weights."""
    out: np.ndarray = arr @ _LUMA
    return out


def _array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return x.unsqueeze(0).expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _to_rgb(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 4:  # composite on white, as pil_to_array does for RGBA images
        alpha = x[:, 3:]
        return x[:, :3] * alpha + (1.0 - alpha)
    return x


def _resize(
    x: torch.Tensor, size: tuple[int, int] | None, interpolation: str = "bilinear"
) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}."
        )
    mode = interpolation
    kwargs: dict[str, Any] = (
        {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    )
    out = F.interpolate(x, size=tuple(size), mode=mode, **kwargs)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


#: Resampling modes of the resize to model input (those of ``torch.nn.functional.interpolate``
#: that timm data configs name).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


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

        ``image_size`` overrides the config's input size.  A resampling mode
        other than :data:`INTERPOLATIONS` (e.g. ``"lanczos"``) is replaced by
        ``"bicubic"``, with a warning.
        """
        size = check_image_size(image_size, func="Preprocessor.from_data_config")
        if size is None:
            size = tuple(config["input_size"][-2:])
        interpolation = str(config.get("interpolation", "bicubic"))
        if interpolation not in INTERPOLATIONS:
            logger.warning(
                "The model's data config resamples with %r, which ssad does not do; images are "
                "resized with 'bicubic' instead.",
                interpolation,
            )
            interpolation = "bicubic"
        return cls(
            size=(int(size[0]), int(size[1])),
            mean=tuple(float(m) for m in config["mean"]),
            std=tuple(float(s) for s in config["std"]),
            interpolation=interpolation,
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` (b, 3, h, w) in [0, 1] to :attr:`size` and normalise it."""
        x = _resize(x, self.size, self.interpolation)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(
        self,
        images: ImageSet,
        batch_size: int,
        device: torch.device | str | None = None,
        num_workers: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield model-ready batches of ``images``, loaded, resized and normalised on ``device``.

        ``num_workers``: image files are decoded and resized in that many
        DataLoader worker processes (:meth:`ImageSet.load_batches`).
        """
        for x in images.iter_batches(
            batch_size,
            size=self.size,
            device=device,
            interpolation=self.interpolation,
            num_workers=num_workers,
        ):
            yield self(x)
