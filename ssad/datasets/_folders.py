"""Reader of a folder of images with one sub-folder per class."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ssad._images import IMAGE_EXTENSIONS, find_image_files

from ._common import PathLike, as_path, check_image_size, missing_file_error, missing_root_error
from ._images import all_grey, common_size, probe_images, read_images, read_masks

__all__ = ["load_image_folder"]

logger = logging.getLogger(__name__)

_FOLDER_HINT = (
    "load_image_folder reads <root>/<class name>/<image file>, one sub-folder per class "
    "(the layout of torchvision's ImageFolder), in any format Pillow reads."
)


def _normalise_extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip("."):
            raise ValueError(
                "The 'extensions' parameter of load_image_folder must be None or a list of "
                f"file name endings such as ['.png', '.jpg']. Got {extensions!r} instead."
            )
        ext = ext.lower()
        out.append(ext if ext.startswith(".") else "." + ext)
    return tuple(out)


def _class_files(
    folder: Path, extensions: tuple[str, ...], *, classes: dict[str, Path]
) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted.

    Links to folders are followed, but no real folder is read twice
    (:func:`ssad._images.find_image_files`), and a link into another class
    folder is skipped with a warning, so that no image is read under the wrong class.
    """
    others = [os.path.realpath(p) for p in classes.values() if p != folder]

    def another_class(real: str) -> str | None:
        if any(real == other or real.startswith(other.rstrip(os.sep) + os.sep) for other in others):
            return "another class folder"
        return None

    return find_image_files(folder, extensions, refuse=another_class, name="root")


def _mask_of(image: Path, root: Path, mask_root: Path) -> Path | None:
    """The mask file of ``image``: the same path under ``mask_root``, with any image
    ending and an optional ``_mask`` suffix; None when there is none."""
    rel = image.relative_to(root)
    folder = mask_root / rel.parent
    for stem in (rel.stem, f"{rel.stem}_mask"):
        for ext in IMAGE_EXTENSIONS:
            for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def load_image_folder(
    root: PathLike,
    image_size: int | tuple[int, int] | None = None,
    extensions: Iterable[str] | None = None,
    *,
    mask_folder: str | None = None,
) -> Bunch:
    """Load a folder of images with one sub-folder per class.

    The layout is that of torchvision's ``ImageFolder``::

        root/cat/001.png
        root/cat/nested/002.jpg
        root/dog/001.png

    Classes are the sub-folders of ``root`` in alphabetical order; each class holds
    the image files found anywhere below its sub-folder. Hidden files and folders
    (name starting with ".") are skipped. Links to folders are followed, except a
    link that leads back to a folder already read (a loop), to ``root`` or a
    folder holding it, or into another class folder: those are skipped with a
    logged warning, so that no image is read twice or under the wrong class.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding one sub-folder per class.
    image_size : int or tuple of (int, int), default=None
        Resize every image to ``(image_size, image_size)`` or ``(height, width)`` with
        Pillow's bilinear filter. ``None`` keeps the files' size, which must then be the
        same for all images.
    extensions : iterable of str, default=None
        File name endings to read, e.g. ``[".png", ".jpg"]`` (case-insensitive). The
        default reads ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``,
        ``.gif``, ``.webp``, ``.ppm``, ``.pgm`` and ``.pbm``.
    mask_folder : str, default=None
        Name of a sub-folder of ``root`` that holds defect masks, e.g. ``"masks"``:
        it is not a class, and mirrors the class folders. The mask of
        ``root/defect/003.png`` is ``root/masks/defect/003.png`` (any image ending,
        optionally ``003_mask.png`` as in MVTec AD); nonzero pixels are the defect.
        An image without a mask file has an all-zero mask. Masks are resized with
        the nearest-neighbour filter.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X : ndarray of shape (n_samples, H, W, 3) or (n_samples, H, W), dtype uint8
            The images: grey (3-D) when every image is grey, otherwise all converted to
            RGB (transparent pixels are composited on white).
        y : ndarray of shape (n_samples,), dtype int64
            The class index of each image, into ``target_names``.
        target_names : list of str
            The class (sub-folder) names, sorted.
        filenames : list of str
            The file of each image.
        masks : ndarray of shape (n_samples, H, W), dtype uint8
            With ``mask_folder`` only: 1 on defects, 0 elsewhere.
        DESCR : str
            Description of the data.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist, holds no sub-folder, a class sub-folder holds no
        image file, or ``mask_folder`` is not a sub-folder of ``root``.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If a file is not an image Pillow reads, if the images differ in size and
        ``image_size`` is None, or if a mask's size differs from its image's.

    See Also
    --------
    load_mvtec_ad : Reader of the MVTec AD layout.

    Examples
    --------
    >>> from ssad.datasets import load_image_folder
    >>> data = load_image_folder("~/data/my_images", image_size=64)  # doctest: +SKIP
    >>> data.X.shape, data.target_names  # doctest: +SKIP
    ((120, 64, 64, 3), ['defect', 'ok'])
    """
    func = "load_image_folder"
    root_path = as_path(root, func=func)
    size = check_image_size(image_size, func=func)
    exts = _normalise_extensions(extensions)
    if not root_path.is_dir():
        raise missing_root_error(
            root_path,
            name="Image",
            expected=root_path / "<class name>" / "<image file>",
            hint=_FOLDER_HINT,
        )
    if mask_folder is not None and not (root_path / mask_folder).is_dir():
        raise missing_file_error(
            root_path / mask_folder,
            what=f"The mask folder {mask_folder!r}",
            hint="Masks mirror the class folders: <root>/<mask_folder>/<class name>/<image file>.",
        )
    classes = sorted(
        p.name
        for p in root_path.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != mask_folder
    )
    if not classes:
        raise FileNotFoundError(
            f"No class sub-folder found in '{root_path}': expected "
            f"'{root_path / '<class name>' / '<image file>'}'. {_FOLDER_HINT}"
        )
    files: list[Path] = []
    labels: list[int] = []
    class_dirs = {name: root_path / name for name in classes}
    for index, name in enumerate(classes):
        class_files = _class_files(class_dirs[name], exts, classes=class_dirs)
        if not class_files:
            raise FileNotFoundError(
                f"No image file found in the class folder '{root_path / name}': expected "
                f"files ending in {', '.join(exts)} there. {_FOLDER_HINT}"
            )
        files += class_files
        labels += [index] * len(class_files)

    infos = probe_images(files)
    grey = all_grey(infos)
    if size is None:
        size = common_size(files, infos, func=func)
    X = read_images(files, grey=grey, size=size)
    extra = {}
    if mask_folder is not None:
        mask_files = [_mask_of(f, root_path, root_path / mask_folder) for f in files]
        extra["masks"] = read_masks(files, mask_files, infos, size)
    logger.info(
        "Loaded %d images of %d classes from %s, %s, size %s.",
        len(X),
        len(classes),
        root_path,
        "grey" if grey else "RGB",
        size,
    )
    return Bunch(
        X=X,
        y=np.asarray(labels, dtype=np.int64),
        target_names=classes,
        filenames=[str(p) for p in files],
        **extra,
        DESCR=(
            f"Images from '{root_path}', one sub-folder per class: {len(X)} "
            f"{'grey' if grey else 'RGB'} images of {size[0]}x{size[1]} pixels in "
            f"{len(classes)} classes ({', '.join(classes)})."
        ),
    )
