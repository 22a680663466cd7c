"""Property-based fuzzing of the image adapter and the dataset readers.

Whatever they are given, they either return valid data or raise an error that
says what is wrong: ``ValueError`` / ``TypeError`` (``FileNotFoundError`` for a
missing path), never a crash from deep inside numpy, torch, Pillow, gzip or
pickle.  The number of examples is bounded so that the whole module runs in a
few seconds.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from ssad._images import check_images
from ssad.datasets import load_cifar10, load_fashion_mnist, load_image_folder

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: What the adapter may raise on bad input (FileNotFoundError only for paths).
ADAPTER_ERRORS = (ValueError, TypeError)


def _check_batch(x: torch.Tensor, n: int, size: tuple[int, int] | None) -> None:
    assert isinstance(x, torch.Tensor)
    assert x.dtype == torch.float32
    assert x.ndim == 4 and x.shape[0] == n and x.shape[1] == 3
    if size is not None:
        assert tuple(x.shape[2:]) == size
    assert bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def _load_or_raise(X, size=None, interpolation="bilinear", errors=ADAPTER_ERRORS):
    """Load every image of ``X``; return None when the adapter refuses it with a message."""
    try:
        images = check_images(X)
        x = images.load(slice(0, len(images)), size=size, interpolation=interpolation)
    except errors as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return None
    _check_batch(x, len(images), size)
    return x


sizes = st.none() | st.tuples(st.integers(1, 9), st.integers(1, 9))
interpolations = st.sampled_from(["bilinear", "bicubic", "nearest"])

# ----------------------------------------------------------------- arrays, tensors

array_dtypes = st.sampled_from(
    [np.uint8, np.float32, np.float64, np.float16, np.int64, np.uint16, np.bool_, np.int8]
)
arrays = array_dtypes.flatmap(
    lambda dtype: hnp.arrays(
        dtype,
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
        elements=(
            st.floats(-2.0, 2.0, width=16) | st.sampled_from([0.0, 1.0, np.nan, np.inf])
            if np.issubdtype(dtype, np.floating)
            else None
        ),
    )
)


@FUZZ
@given(X=arrays, size=sizes, interpolation=interpolations)
def test_arrays_give_a_valid_batch_or_a_clear_error(X, size, interpolation):
    _load_or_raise(X, size, interpolation)


@FUZZ
@given(X=arrays.filter(lambda a: a.dtype != np.uint16), size=sizes)
def test_tensors_give_a_valid_batch_or_a_clear_error(X, size):
    _load_or_raise(torch.from_numpy(X.copy()), size)


# ----------------------------------------------------------------- PIL images

PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"]
PIL_MODES += ["LAB", "HSV", "I", "I;16", "I;16B", "F"]


@st.composite
def pil_images(draw, modes=PIL_MODES):
    mode = draw(st.sampled_from(modes))
    width, height = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n_bytes = len(Image.new(mode, (width, height)).tobytes())
    if mode == "F" and draw(st.booleans()):
        values = draw(hnp.arrays(np.float32, n_bytes // 4, elements=st.floats(0.0, 1.0, width=32)))
        data = values.tobytes()
    else:
        data = draw(st.binary(min_size=n_bytes, max_size=n_bytes))
    img = Image.frombytes(mode, (width, height), data)
    if mode in ("P", "PA") and draw(st.booleans()):
        img.info["transparency"] = draw(st.integers(0, 255))
    return img


@FUZZ
@given(images=st.lists(pil_images(), min_size=1, max_size=3), size=sizes)
def test_pil_images_give_a_valid_batch_or_a_clear_error(images, size):
    _load_or_raise(images, size)


# ----------------------------------------------------------------- image files

FORMATS = {"PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "JPEG": ".jpg"}
FORMATS |= {"PPM": ".ppm", "WEBP": ".webp"}

#: The modes each of Pillow's writers takes (16-bit and float files included).
WRITER_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "BMP": ["1", "L", "P", "RGB"],
    "GIF": ["L", "P"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"],
    "JPEG": ["L", "RGB", "CMYK"],
    "PPM": ["1", "L", "RGB", "I"],
    "WEBP": ["RGB", "RGBA"],
}


@st.composite
def image_file_bytes(draw):
    """(bytes, extension): a small image in some format, intact, truncated or corrupted."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    kind = draw(st.sampled_from(["random", "intact", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=300)), FORMATS[fmt]
    img = draw(pil_images(WRITER_MODES[fmt]))
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif kind == "flipped":
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        data = bytes(raw)
    return data, FORMATS[fmt]


@FUZZ
@given(files=st.lists(image_file_bytes(), min_size=1, max_size=3), size=sizes)
def test_image_files_give_a_valid_batch_or_a_clear_error(files, size):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (data, ext) in enumerate(files):
            paths.append(Path(tmp) / f"{i}{ext}")
            paths[-1].write_bytes(data)
        _load_or_raise(paths, size)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not files"):
        check_images([tmp_path / "missing.png"])


@FUZZ
@given(files=st.lists(image_file_bytes(), min_size=1, max_size=3), size=sizes)
def test_load_image_folder_gives_uint8_images_or_a_value_error(files, size):
    with tempfile.TemporaryDirectory() as tmp:
        for i, (data, ext) in enumerate(files):
            folder = Path(tmp) / f"class{i % 2}"
            folder.mkdir(exist_ok=True)
            (folder / f"{i}{ext}").write_bytes(data)
        try:
            data = load_image_folder(tmp, image_size=size)
        except ValueError as exc:
            assert str(exc)
            return
    assert data.X.dtype == np.uint8 and len(data.X) == len(files)
    assert data.X.ndim in (3, 4) and (data.X.ndim == 3 or data.X.shape[-1] == 3)
    # what the reader returns, the adapter accepts (narrow grey images need the channel
    # axis, which makes (n, H, W, 1) unambiguous; see ssad._images)
    X = data.X if data.X.ndim == 4 else data.X[..., None]
    _check_batch(check_images(X).load(slice(None)), len(files), None)


# ----------------------------------------------------------------- idx files

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
IDX_NAMES += ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@st.composite
def idx_file_bytes(draw):
    kind = draw(st.sampled_from(["random", "header", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "header":  # a valid magic number with arbitrary dims
        ndim = draw(st.integers(0, 4))
        dims = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]))
        return bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims) + draw(st.binary())
    data = _idx_bytes(np.zeros((2, 3, 3), np.uint8))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    raw = bytearray(data)
    raw[draw(st.integers(0, 15))] = draw(st.integers(0, 255))
    return bytes(raw)


@FUZZ
@given(
    content=idx_file_bytes(),
    which=st.sampled_from(IDX_NAMES),
    gz=st.booleans(),
    gz_corrupt=st.booleans(),
)
def test_idx_reader_gives_arrays_or_a_value_error(content, which, gz, gz_corrupt):
    good = {
        IDX_NAMES[0]: _idx_bytes(np.zeros((2, 3, 3), np.uint8)),
        IDX_NAMES[1]: _idx_bytes(np.array([0, 1], np.uint8)),
        IDX_NAMES[2]: _idx_bytes(np.zeros((1, 3, 3), np.uint8)),
        IDX_NAMES[3]: _idx_bytes(np.array([2], np.uint8)),
    }
    good[which] = content
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in good.items():
            if gz and name == which:
                data = gzip.compress(data)
                if gz_corrupt:
                    data = data[: len(data) // 2]
                (Path(tmp) / f"{name}.gz").write_bytes(data)
            else:
                (Path(tmp) / name).write_bytes(data)
        try:
            out = load_fashion_mnist(tmp)
        except ValueError as exc:
            assert str(exc)
            return
    assert out.X_train.dtype == np.uint8 and out.X_train.ndim == 3
    assert len(out.X_train) == len(out.y_train)


# ----------------------------------------------------------------- CIFAR pickles


def _cifar_batch_bytes(n: int = 2) -> bytes:
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))}
    return pickle.dumps(batch, protocol=2)


@st.composite
def pickle_bytes(draw):
    kind = draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=200))
    data = _cifar_batch_bytes()
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        # the header and the opcodes, not the 6 KB of pixels
        raw[draw(st.integers(0, min(len(raw) - 1, 400)))] = draw(st.integers(0, 255))
    return bytes(raw)


@FUZZ
@given(content=pickle_bytes())
def test_cifar_reader_gives_arrays_or_a_value_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifar-10-batches-py"
        folder.mkdir()
        for i in range(1, 6):
            (folder / f"data_batch_{i}").write_bytes(_cifar_batch_bytes())
        (folder / "test_batch").write_bytes(content)
        names = [f"c{i}".encode() for i in range(10)]
        (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
        try:
            out = load_cifar10(folder)
        except ValueError as exc:
            assert str(exc)
            return
    assert out.X_test.dtype == np.uint8 and out.X_test.shape[1:] == (32, 32, 3)
