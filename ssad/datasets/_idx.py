"""Readers of the idx format of MNIST and Fashion-MNIST (raw or gzip-compressed)."""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np
from sklearn.utils import Bunch

from ._common import PathLike, as_path, missing_file_error, missing_root_error

__all__ = ["load_fashion_mnist", "load_mnist"]

logger = logging.getLogger(__name__)

#: idx type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_IDX_FORMAT = (
    "the idx format (magic number 0x00 0x00 <type code> <number of dims>, then one "
    "big-endian uint32 per dim, then the data)"
)

#: Deflate's largest expansion (1032:1, for long runs of one byte), plus gzip's
#: own header and trailer: a .gz file of n bytes never holds more than this * n.
_MAX_DEFLATE_RATIO = 1040

#: Bytes decompressed at a time.
_CHUNK = 1 << 20

#: Stems of the four idx files of MNIST-like datasets, by split.
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]

_FILES_TEXT = ", ".join(_IDX_FILES.values())
_FASHION_HINT = (
    f"Fashion-MNIST is read from its four idx files {_FILES_TEXT}, each gzipped (.gz) or not: "
    "'apt-get install dataset-fashion-mnist' puts them in /usr/share/datasets/fashion-mnist/; "
    "they are also in the data/fashion folder of https://github.com/zalandoresearch/fashion-mnist."
)
_MNIST_HINT = (
    f"MNIST is read from its four idx files {_FILES_TEXT}, each gzipped (.gz) or not, as "
    "published at "
    "http://yann.lecun.com/exdb/mnist/ (mirrored at https://ossci-datasets.s3.amazonaws.com/mnist/)."
)

_FASHION_DESCR = """\
Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 grey 28x28 images of Zalando
articles in 10 classes (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
Sneaker, Bag, Ankle boot), split into 60,000 training and 10,000 test images,
6,000 / 1,000 per class. Read from the idx files in {root}."""

_MNIST_DESCR = """\
MNIST (LeCun, Bottou, Bengio and Haffner, 1998): 70,000 grey 28x28 images of
handwritten digits 0-9, split into 60,000 training and 10,000 test images.
Read from the idx files in {root}."""


def read_idx(path: PathLike) -> np.ndarray:
    """Read one idx file, raw or gzip-compressed (name ending in ``.gz``).

    The header is read and checked first, then exactly the number of data
    bytes it announces, streaming: a raw file's size is compared with the
    header before any data is read, and a compressed file is never
    decompressed beyond the header's count (plus one byte, to detect extra
    data), so a small ``.gz`` file cannot expand into a huge buffer.

    Parameters
    ----------
    path : str or os.PathLike
        The idx file.

    Returns
    -------
    data : ndarray
        The array stored in the file, in native byte order, with the dims of its header.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not valid idx data (wrong magic number, unknown type code,
        or a size that does not match the dims of the header), or not valid gzip data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file not found: expected '{path}'.")
    compressed = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as f:
            return _read_idx_stream(f, path, compressed)
    except (OSError, EOFError, zlib.error) as exc:
        kind = "gzip-compressed idx" if compressed else "idx"
        raise ValueError(f"Could not read '{path}' as {kind} data: {exc}") from exc


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_idx_stream(f: _Reader, path: Path, compressed: bool) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise ValueError(
            f"'{path}' is not an idx file: its magic number is {magic.hex(' ') or 'empty'}, "
            f"expected {_IDX_FORMAT} with a type code among "
            f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}."
        )
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    ndim = magic[3]
    header_size = 4 + 4 * ndim
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(
            f"'{path}' is truncated: its magic number announces {ndim} dims but the file "
            f"holds only {4 + len(raw_dims)} bytes, fewer than the {header_size} of the header."
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    expected = math.prod(dims) * dtype.itemsize  # exact: Python ints do not overflow
    file_size = path.stat().st_size
    if not compressed and file_size - header_size != expected:
        raise ValueError(
            f"'{path}' holds {file_size - header_size} bytes of data after its header, but "
            f"its dims {dims} of type {dtype.str} need {expected} bytes; the file is "
            "truncated or corrupt."
        )
    if compressed and expected > _MAX_DEFLATE_RATIO * file_size:
        raise ValueError(
            f"'{path}' announces dims {dims} of type {dtype.str}, {expected} bytes of data, "
            f"more than a gzip file of {file_size} bytes can hold (deflate expands at most "
            f"{_MAX_DEFLATE_RATIO}:1); the file is truncated or corrupt."
        )
    buffer = bytearray()
    while len(buffer) < expected:
        chunk = f.read(min(_CHUNK, expected - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    extra = f.read(1) if len(buffer) == expected else b""
    if len(buffer) != expected or extra:
        found = f"{len(buffer)} bytes" if not extra else f"more than {expected} bytes"
        raise ValueError(
            f"'{path}' holds {found} of data after its header, but its dims {dims} "
            f"of type {dtype.str} need {expected} bytes; the file is truncated or corrupt."
        )
    data = np.frombuffer(buffer, dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx_file(root: Path, stem: str, *, what: str, hint: str) -> Path:
    """Return ``root/stem`` or ``root/stem.gz``; accept ``-idx`` spelled ``.idx`` too."""
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        candidate = root / name
        if candidate.is_file():
            return candidate
    raise missing_file_error(
        root / (stem + ".gz"), what=f"{what} file", hint=hint, alternative=root / stem
    )


def _load_idx_dataset(
    root: PathLike, *, func: str, name: str, classes: list[str], hint: str, descr: str
) -> Bunch:
    root_path = as_path(root, func=func)
    if not root_path.is_dir():
        raise missing_root_error(
            root_path,
            name=name,
            expected=root_path / (_IDX_FILES["train_images"] + ".gz"),
            hint=hint,
        )
    paths = {
        key: _find_idx_file(root_path, stem, what=name, hint=hint)
        for key, stem in _IDX_FILES.items()
    }
    arrays = {key: read_idx(path) for key, path in paths.items()}
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"'{img_path}' should hold uint8 images with 3 dims (n, height, width); "
                f"it holds {images.dtype} data with dims {images.shape}."
            )
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(
                f"'{lab_path}' should hold uint8 labels with 1 dim (n,); "
                f"it holds {labels.dtype} data with dims {labels.shape}."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"'{img_path}' holds {len(images)} images but '{lab_path}' holds "
                f"{len(labels)} labels; the two files should have the same count."
            )
        if labels.size and labels.max() >= len(classes):
            raise ValueError(
                f"'{lab_path}' holds the label {int(labels.max())}; {name} labels are "
                f"0..{len(classes) - 1}."
            )
        out[f"X_{split}"] = images
        out[f"y_{split}"] = labels.astype(np.int64)
    logger.info(
        "Loaded %s from %s: %d training and %d test images of shape %s.",
        name,
        root_path,
        len(out["X_train"]),
        len(out["X_test"]),
        out["X_train"].shape[1:],
    )
    return Bunch(**out, target_names=list(classes), DESCR=descr.format(root=root_path))


def load_fashion_mnist(root: PathLike = "/usr/share/datasets/fashion-mnist") -> Bunch:
    """Load Fashion-MNIST from its idx files.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` from ``root``, each
    gzipped (``.gz``) or not. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike, default="/usr/share/datasets/fashion-mnist"
        Folder holding the four idx files. The Debian package ``dataset-fashion-mnist``
        (``apt-get install dataset-fashion-mnist``) puts them in the default folder.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X_train : ndarray of shape (60000, 28, 28), dtype uint8
            Training images.
        y_train : ndarray of shape (60000,), dtype int64
            Training labels, 0..9.
        X_test : ndarray of shape (10000, 28, 28), dtype uint8
            Test images.
        y_test : ndarray of shape (10000,), dtype int64
            Test labels, 0..9.
        target_names : list of str
            The class names, ``"T-shirt/top"``, ``"Trouser"``, ..., ``"Ankle boot"``.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the four files is missing; the message names the file.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If a file is not valid idx data or the files do not fit together.

    See Also
    --------
    load_mnist : The same reader for MNIST.

    References
    ----------
    .. [1] H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset
       for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.

    Examples
    --------
    >>> from ssad.datasets import load_fashion_mnist
    >>> data = load_fashion_mnist("/usr/share/datasets/fashion-mnist")  # doctest: +SKIP
    >>> data.X_train.shape, data.X_test.shape  # doctest: +SKIP
    ((60000, 28, 28), (10000, 28, 28))
    >>> data.target_names[9]  # doctest: +SKIP
    'Ankle boot'
    """
    return _load_idx_dataset(
        root,
        func="load_fashion_mnist",
        name="Fashion-MNIST",
        classes=FASHION_MNIST_CLASSES,
        hint=_FASHION_HINT,
        descr=_FASHION_DESCR,
    )


def load_mnist(root: PathLike) -> Bunch:
    """Load MNIST from its idx files.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` from ``root``, each
    gzipped (``.gz``) or not. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the four idx files.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        X_train : ndarray of shape (60000, 28, 28), dtype uint8
            Training images.
        y_train : ndarray of shape (60000,), dtype int64
            Training labels, 0..9.
        X_test : ndarray of shape (10000, 28, 28), dtype uint8
            Test images.
        y_test : ndarray of shape (10000,), dtype int64
            Test labels, 0..9.
        target_names : list of str
            ``["0", "1", ..., "9"]``.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` or one of the four files is missing; the message names the file.
    NotADirectoryError
        If ``root`` is a file, not a folder.
    ValueError
        If a file is not valid idx data or the files do not fit together.

    See Also
    --------
    load_fashion_mnist : The same reader for Fashion-MNIST.
    load_mnist_5k : A 5,000-image MNIST subset that needs no files.

    Examples
    --------
    >>> from ssad.datasets import load_mnist
    >>> data = load_mnist("~/data/mnist")  # doctest: +SKIP
    >>> data.X_train.shape  # doctest: +SKIP
    (60000, 28, 28)
    """
    return _load_idx_dataset(
        root,
        func="load_mnist",
        name="MNIST",
        classes=MNIST_CLASSES,
        hint=_MNIST_HINT,
        descr=_MNIST_DESCR,
    )
