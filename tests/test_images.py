"""The image adapter: accepted forms, conversions and errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssad._images import ImageSet, Preprocessor, check_images


def _load(X, **kw):
    images = check_images(X)
    return images.load(slice(0, len(images)), **kw)


def test_uint8_and_float_arrays_agree():
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    a = _load(x)
    b = _load(x.astype(np.float32) / 255)
    assert a.shape == (3, 3, 8, 8) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_grey_is_repeated_and_alpha_dropped():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    out = _load(grey)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[:, 0], out[:, 2])
    rgba = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert float(_load(rgba).max()) == 0.0
    assert _load(grey[..., None]).shape == (2, 3, 4, 4)


def test_tensor_pil_and_paths_match_array(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    ref = _load(x)
    torch.testing.assert_close(_load(torch.from_numpy(x).permute(0, 3, 1, 2)), ref)
    pils = [Image.fromarray(im) for im in x]
    torch.testing.assert_close(_load(pils), ref)
    paths = []
    for i, im in enumerate(pils):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    torch.testing.assert_close(_load(paths), ref)
    torch.testing.assert_close(_load([str(p) for p in paths]), ref)


def test_different_sizes_need_a_size():
    pils = [Image.new("RGB", (4, 4)), Image.new("L", (6, 5))]
    with pytest.raises(ValueError, match="different sizes"):
        _load(pils)
    assert _load(pils, size=(8, 8)).shape == (2, 3, 8, 8)


def test_subset_and_batches_stream():
    x = np.random.default_rng(2).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    images = check_images(x)
    assert isinstance(images, ImageSet) and len(images) == 5 and images.shape == (5,)
    assert check_images(images) is images
    sub = images.subset([4, 0])
    torch.testing.assert_close(sub.load(slice(None)), images.load([4, 0]))
    sizes = [b.shape[0] for b in images.iter_batches(2)]
    assert sizes == [2, 2, 1]


def test_preprocessor_resizes_and_normalises():
    pre = Preprocessor.from_data_config(
        {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.25,) * 3}, image_size=None
    )
    x = torch.full((2, 3, 8, 8), 0.75)
    y = pre(x)
    assert y.shape == (2, 3, 16, 16)
    torch.testing.assert_close(y, torch.ones_like(y))
    assert Preprocessor.from_data_config(
        {"input_size": (3, 16, 16), "mean": (0,) * 3, "std": (1,) * 3}, image_size=(8, 12)
    ).size == (8, 12)


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (np.zeros((0, 8, 8), np.uint8), ValueError, "0 images"),
        ([], ValueError, "0 images"),
        (np.zeros((4, 64), np.uint8), ValueError, r"shape \(n, H, W\).*got 2 dimension"),
        (np.zeros((2, 3, 8, 8), np.uint8), ValueError, "channels-first"),
        (np.zeros((2, 8, 8, 2), np.uint8), ValueError, r"C in \{1, 3, 4\}"),
        (torch.zeros(2, 8, 8, 3), ValueError, r"\(n, C, H, W\)"),
        (np.zeros((2, 8, 8), np.int64), TypeError, "dtype uint8.*got dtype int64.*astype"),
        (np.zeros((2, 8, 8), bool), TypeError, "got dtype bool"),
        (np.full((2, 8, 8), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((2, 8, 8), 255.0), ValueError, r"\[0, 1\].*got values in \[255, 255\].*255"),
        (torch.full((2, 3, 8, 8), -1.0), ValueError, r"\[0, 1\]"),
        ("image.png", TypeError, "numpy array.*Got an object of type str"),
        ([Image.new("RGB", (2, 2)), "x.png"], TypeError, "only PIL images or only file paths"),
        (["/nonexistent/a.png"], FileNotFoundError, "not files.*nonexistent"),
    ],
)
def test_errors_say_expected_and_received(X, error, message):
    with pytest.raises(error, match=message):
        check_images(X)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    images = check_images([bad])
    with pytest.raises(ValueError, match="Could not read the image file.*broken.png"):
        images.load(slice(None))
