"""Reader of the MVTec AD folder layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._common import PathLike, as_path, check_image_size, missing_file_error, missing_root_error
from ._images import (
    IMAGE_EXTENSIONS,
    all_grey,
    common_size,
    probe_images,
    read_images,
    read_masks,
)

__all__ = ["load_mvtec_ad"]

logger = logging.getLogger(__name__)

MVTEC_AD_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

_MVTEC_HINT = (
    "MVTec AD is read from its folder layout <root>/<category>/train/good/*.png, "
    "<root>/<category>/test/<defect type>/*.png and "
    "<root>/<category>/ground_truth/<defect type>/*_mask.png; download and extract it from "
    "https://www.mvtec.com/company/research/datasets/mvtec-ad"
)

_MVTEC_DESCR = """\
MVTec AD (Bergmann et al., CVPR 2019), category '{category}': industrial images for
unsupervised anomaly detection. The training split holds defect-free ("good") images
only; the test split holds good images and images with defects of the types
{defects}, each with a pixel mask of the defect. Read from {root}."""


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _mask_file(gt_dir: Path, image: Path) -> Path:
    expected = gt_dir / f"{image.stem}_mask.png"
    if expected.is_file():
        return expected
    others = sorted(gt_dir.glob(f"{image.stem}_mask.*")) if gt_dir.is_dir() else []
    if others:
        return others[0]
    raise missing_file_error(
        expected, what=f"MVTec AD mask of the test image '{image}'", hint=_MVTEC_HINT
    )


def _category_dir(root: Path, category: str) -> Path:
    if not root.is_dir():
        raise missing_root_error(
            root, name="MVTec AD", expected=root / category / "train" / "good", hint=_MVTEC_HINT
        )
    candidates = [root / category]
    if root.name == category:  # root is the category folder itself
        candidates.insert(0, root)
    for candidate in candidates:
        if (candidate / "train" / "good").is_dir():
            return candidate
    found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    found_text = f" The categories found in '{root}' are {found}." if found else ""
    raise missing_file_error(
        root / category / "train" / "good",
        what=f"MVTec AD training folder of the category '{category}'",
        hint=_MVTEC_HINT + "." + found_text,
    )


def load_mvtec_ad(
    root: PathLike,
    category: str,
    image_size: int | tuple[int, int] | None = None,
) -> Bunch:
    """Load one category of MVTec AD from its folder layout.

    The layout is that of the archive from the MVTec website::

        root/category/train/good/000.png ...
        root/category/test/good/000.png ...
        root/category/test/<defect type>/000.png ...
        root/category/ground_truth/<defect type>/000_mask.png ...

    The training split holds only defect-free ("good") images. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding the category folders (or the category folder itself).
    category : str
        The category, e.g. ``"bottle"``, ``"grid"`` or ``"screw"`` (any folder with
        the layout above is accepted).
    image_size : int or tuple of (int, int), default=None
        Resize every image to ``(image_size, image_size)`` or ``(height, width)`` with
        Pillow's bilinear filter, and every mask with the nearest-neighbour filter.
        ``None`` keeps the files' size, which must then be the same for all images.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X_train : ndarray of shape (n_train, H, W, 3) or (n_train, H, W), dtype uint8
            The good training images; grey (3-D) when every image of the category is
            grey (e.g. ``grid``, ``screw``, ``zipper``), RGB otherwise.
        y_train : ndarray of shape (n_train,), dtype int64
            All zeros.
        X_test : ndarray of shape (n_test, H, W, 3) or (n_test, H, W), dtype uint8
            The test images: the good ones first, then each defect type in
            alphabetical order.
        y_test : ndarray of shape (n_test,), dtype int64
            0 for good, 1 for a defect.
        defect_types : ndarray of shape (n_test,), dtype str
            The test folder of each test image (``"good"`` or the defect type).
        masks : ndarray of shape (n_test, H, W), dtype uint8
            Ground-truth defect masks, 1 on the defect and 0 elsewhere; all zeros for
            good images.
        target_names : list of str
            ``["good", "defect"]``.
        train_filenames, test_filenames : list of str
            The file of each image.
        category : str
            The category read.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root``, the category's ``train/good`` folder or a defect mask is missing;
        the message names the path expected.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If a file is not an image, if a mask does not match its image, or if the
        images differ in size and ``image_size`` is None.

    See Also
    --------
    load_image_folder : Reader of a folder per class.

    References
    ----------
    .. [1] P. Bergmann, M. Fauser, D. Sattlegger and C. Steger, "MVTec AD - A
       Comprehensive Real-World Dataset for Unsupervised Anomaly Detection", CVPR 2019.

    Examples
    --------
    >>> from ssad.datasets import load_mvtec_ad
    >>> data = load_mvtec_ad("~/data/mvtec_ad", "bottle", image_size=224)  # doctest: +SKIP
    >>> data.X_train.shape  # doctest: +SKIP
    (209, 224, 224, 3)
    """
    func = "load_mvtec_ad"
    root_path = as_path(root, func=func)
    if not isinstance(category, str) or not category:
        raise ValueError(
            f"The 'category' parameter of {func} must be a non-empty str, e.g. one of "
            f"{list(MVTEC_AD_CATEGORIES)}. Got {category!r} instead."
        )
    size = check_image_size(image_size, func=func)
    cat_dir = _category_dir(root_path, category)

    train_files = _image_files(cat_dir / "train" / "good")
    if not train_files:
        raise missing_file_error(
            cat_dir / "train" / "good" / "000.png",
            what=f"MVTec AD training image of the category '{category}'",
            hint=_MVTEC_HINT,
        )
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise missing_file_error(
            test_dir, what=f"MVTec AD test folder of the category '{category}'", hint=_MVTEC_HINT
        )
    defects = sorted(
        (p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda name: (name != "good", name),
    )
    test_files: list[Path] = []
    mask_files: list[Path | None] = []
    defect_types: list[str] = []
    for defect in defects:
        files = _image_files(test_dir / defect)
        test_files += files
        defect_types += [defect] * len(files)
        if defect == "good":
            mask_files += [None] * len(files)
        else:
            gt_dir = cat_dir / "ground_truth" / defect
            mask_files += [_mask_file(gt_dir, f) for f in files]
    if not test_files:
        raise missing_file_error(
            test_dir / "good" / "000.png",
            what=f"MVTec AD test image of the category '{category}'",
            hint=_MVTEC_HINT,
        )

    infos = probe_images(train_files + test_files)
    grey = all_grey(infos)
    if size is None:
        size = common_size(train_files + test_files, infos, func=func)
    X_train = read_images(train_files, grey=grey, size=size)
    X_test = read_images(test_files, grey=grey, size=size)
    masks = read_masks(test_files, mask_files, infos[len(train_files) :], size)
    y_test = np.array([d != "good" for d in defect_types], dtype=np.int64)
    logger.info(
        "Loaded MVTec AD '%s' from %s: %d training and %d test images (%d defective) of size %s.",
        category,
        cat_dir,
        len(X_train),
        len(X_test),
        int(y_test.sum()),
        size,
    )
    return Bunch(
        X_train=X_train,
        y_train=np.zeros(len(X_train), dtype=np.int64),
        X_test=X_test,
        y_test=y_test,
        defect_types=np.array(defect_types, dtype=str),
        masks=masks,
        target_names=["good", "defect"],
        train_filenames=[str(p) for p in train_files],
        test_filenames=[str(p) for p in test_files],
        category=category,
        DESCR=_MVTEC_DESCR.format(
            category=category, defects=[d for d in defects if d != "good"], root=cat_dir
        ),
    )
