"""The image adapter: accepted forms, conversions and errors."""

import os
import sys
from pathlib import Path

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


def test_grey_is_repeated_and_alpha_composited_on_white():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    out = _load(grey)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out[:, 0], out[:, 2])
    rgba = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque black stays black
    assert float(_load(rgba).max()) == 0.0
    rgba[..., 3] = 0  # transparent black is white, as in PIL images and the dataset readers
    assert float(_load(rgba).min()) == 1.0
    assert float(_load(torch.from_numpy(rgba).permute(0, 3, 1, 2)).min()) == 1.0
    assert float(_load([Image.fromarray(rgba[0])]).min()) == 1.0
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
        (np.zeros((1, 0, 5), np.uint8), ValueError, r"0x5 \(height x width\) pixels"),
        (torch.zeros((1, 3, 4, 0)), ValueError, r"4x0 \(height x width\) pixels"),
        (np.zeros((28, 28), np.uint8), ValueError, r"single grey image.*X\[None\]"),
        (np.zeros((2, 3, 8, 8), np.uint8), ValueError, "channels-first"),
        (np.zeros((2, 8, 8, 2), np.uint8), ValueError, r"C in \{1, 3, 4\}"),
        (torch.zeros(2, 8, 8, 3), ValueError, r"\(n, C, H, W\)"),
        (np.zeros((2, 8, 8), np.int64), TypeError, "dtype uint8.*got dtype int64.*astype"),
        (np.zeros((2, 8, 8), bool), TypeError, "got dtype bool"),
        (np.full((2, 8, 8), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((2, 8, 8), 255.0), ValueError, r"\[0, 1\].*got values in \[255, 255\].*255"),
        (torch.full((2, 3, 8, 8), -1.0), ValueError, r"\[0, 1\]"),
        (3.0, TypeError, "numpy array.*folder of images. Got an object of type float"),
        ("/nonexistent/folder", FileNotFoundError, "existing folder.*'/nonexistent/folder'"),
        ([Image.new("RGB", (2, 2)), "x.png"], TypeError, "only PIL images or only file paths"),
        (["/nonexistent/a.png"], FileNotFoundError, "not files.*nonexistent"),
    ],
)
def test_errors_say_expected_and_received(X, error, message):
    with pytest.raises(error, match=message):
        check_images(X)


def test_empty_pil_image_is_refused_on_load():
    images = check_images([Image.new("L", (0, 0))])
    with pytest.raises(ValueError, match=r"0x0 \(height x width\) pixels"):
        images.load(slice(None), size=(4, 4))


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    images = check_images([bad])
    with pytest.raises(ValueError, match="Could not read the image file.*broken.png"):
        images.load(slice(None))


# --------------------------------------------------------------------------- folders


def _png(path, value=0, size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_folder_is_read_recursively_sorted_images_only(tmp_path):
    _png(tmp_path / "b.png", 10)
    _png(tmp_path / "a" / "z.PNG", 20)
    _png(tmp_path / "a" / "deeper" / "y.jpg", 30)
    _png(tmp_path / ".hidden" / "x.png", 40)
    _png(tmp_path / ".x.png", 50)
    (tmp_path / "notes.txt").write_text("not an image")
    images = check_images(tmp_path)
    assert images.kind == "path"
    names = [str(Path(p).relative_to(tmp_path)) for p in images.data]
    assert names == [str(Path("a/deeper/y.jpg")), str(Path("a/z.PNG")), "b.png"]
    assert check_images(str(tmp_path)).data == images.data  # str or Path alike
    np.testing.assert_allclose(images.load(slice(None))[:, 0, 0, 0].numpy() * 255, [30, 20, 10])


def test_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"folder '.*empty'.*holds no image file.*\.png"):
        check_images(tmp_path / "empty")
    _png(tmp_path / "one.png")
    with pytest.raises(NotADirectoryError, match=r"is a file.*\['.*one.png'\]"):
        check_images(tmp_path / "one.png")


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="symlinks")
def test_folder_links_are_followed_once(tmp_path, caplog):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _png(root / "a.png")
    _png(outside / "b.png")
    os.symlink(outside, root / "linked")
    os.symlink(outside, root / "linked_again")  # the same folder: read once
    os.symlink(root, root / "loop")
    os.symlink(tmp_path, root / "up")  # a folder holding root
    with caplog.at_level("WARNING", logger="ssad._images"):
        files = check_images(root).data
    assert [Path(f).relative_to(root).as_posix() for f in files] == ["a.png", "linked/b.png"]
    assert sorted(Path(r.args[0]).name for r in caplog.records) == ["linked_again", "loop", "up"]


# --------------------------------------------------------------------------- batch axis


@pytest.mark.parametrize(
    "X",
    [
        np.zeros((32, 32, 3), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
        np.zeros((28, 28, 1), np.float32),
        np.zeros((9, 8, 3), np.uint8),
    ],
    ids=lambda x: str(x.shape),
)
def test_single_hwc_array_is_refused(X):
    # It used to be read as len(X) grey images of W x C pixels.
    with pytest.raises(ValueError, match=r"single image \(H, W, C\).*X\[None\].*X\[\.\.\., None\]"):
        check_images(X)
    assert len(check_images(X[None])) == 1  # the fix the message gives
    assert _load(X[None]).shape == (1, 3, *X.shape[:2])


def test_single_chw_tensor_is_refused():
    with pytest.raises(ValueError, match=r"single image \(C, H, W\).*X\[None\]"):
        check_images(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        check_images(torch.zeros(2, 8, 8, 3))
    assert _load(torch.zeros(3, 32, 32)[None]).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "shape", [(3, 28, 28), (5, 4, 4), (2, 4, 4), (1, 8, 8), (40, 1, 1), (6, 2, 3)]
)
def test_grey_stacks_are_still_accepted(shape):
    X = np.zeros(shape, np.uint8)
    assert _load(X).shape == (shape[0], 3, *shape[1:])


def test_narrow_grey_stack_is_given_with_a_channel_axis():
    X = np.random.default_rng(0).integers(0, 256, (10, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="single image"):
        check_images(X)
    out = _load(X[..., None])
    assert out.shape == (10, 3, 8, 3)
    torch.testing.assert_close(out[:, 0], torch.from_numpy(X).float() / 255)


# --------------------------------------------------------------------------- pixel values

_RAMP16 = (np.arange(4 * 6, dtype=np.uint16).reshape(4, 6) * 2500 + 1000).astype(np.uint16)


def _wide_images():
    """PIL images that Image.convert("RGB") used to clip to (almost) constant images."""
    return {
        "I;16": (Image.fromarray(_RAMP16), _RAMP16 / 65535),
        "I": (Image.fromarray(_RAMP16.astype(np.int32)), _RAMP16 / 65535),
        "F": (Image.fromarray(_RAMP16.astype(np.float32) / 65535), _RAMP16 / 65535),
    }


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_16_bit_and_float_pil_images_are_scaled(mode):
    img, expected = _wide_images()[mode]
    assert img.mode == mode
    out = _load([img])
    assert out.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-6)
    torch.testing.assert_close(out[:, 0], out[:, 2])


def test_16_bit_png_file_is_scaled(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(_RAMP16).save(path)
    out = _load([path])
    assert len(torch.unique(out)) == _RAMP16.size  # not a constant white image
    np.testing.assert_allclose(out[0, 1].numpy(), _RAMP16 / 65535, atol=1e-6)


def test_float_pil_image_outside_unit_range_is_refused(tmp_path):
    img = Image.fromarray(np.full((4, 4), 200.0, np.float32))
    with pytest.raises(ValueError, match=r"mode 'F'.*\[0, 1\].*got values in \[200, 200\]"):
        _load([img])
    path = tmp_path / "float.tif"
    img.save(path)
    with pytest.raises(ValueError, match=r"float\.tif.*mode 'F'"):
        _load([path])


def _transparent_images():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 128)  # half-transparent blue
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 1] = 0  # transparent black
    la[1, 1] = (10, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    return [Image.fromarray(rgba), Image.fromarray(la, mode="LA"), palette]


def test_adapter_and_dataset_readers_read_files_alike(tmp_path):
    from ssad.datasets import load_image_folder

    images = [*_transparent_images(), Image.fromarray(_RAMP16[:2, :2]), Image.new("L", (2, 2), 7)]
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / "cls" / f"{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        img.save(paths[-1])
    data = load_image_folder(tmp_path)
    assert data.filenames == [str(p) for p in paths]
    adapter = _load(paths)
    np.testing.assert_array_equal(
        data.X, np.rint(adapter.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    )
    # transparency composited on white in both
    assert data.X[0, 1, 0].tolist() == [255, 255, 255]
    assert data.X[0, 0, 0].tolist() == [255, 0, 0]
    assert data.X[0, 0, 1].tolist() == [127, 127, 255]
    assert data.X[1, 0, 0].tolist() == [255, 255, 255]
    assert data.X[1, 1, 1].tolist() == [10, 10, 10]
    assert data.X[2, 0, 0].tolist() == [255, 255, 255]
    assert data.X[2, 0, 1].tolist() == [50, 60, 70]
    # and the 16-bit file is scaled by 65535, not clipped
    np.testing.assert_array_equal(data.X[3, ..., 0], np.rint(_RAMP16[:2, :2] / 65535 * 255))


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # error above 2 * 16 pixels
    images = check_images([path])
    with pytest.raises(
        ValueError, match=r"Refused to read the image file .*bomb\.png.*MAX_IMAGE_PIXELS"
    ):
        images.load(slice(None))


@pytest.fixture
def jpeg_files(tmp_path):
    """Seven JPEG files of different sizes, grey and RGB."""
    rng = np.random.default_rng(4)
    paths = []
    for i in range(7):
        shape = (20 + i, 24) if i % 2 else (18, 16 + i, 3)
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(str(tmp_path / f"{i}.jpg"))
        img.save(paths[-1])
    return paths


def test_files_decode_the_same_in_loader_workers(jpeg_files):
    images = check_images(jpeg_files)
    serial = list(images.iter_batches(3, size=(16, 16)))
    parallel = list(images.iter_batches(3, size=(16, 16), num_workers=2))
    assert [len(b) for b in parallel] == [3, 3, 1]
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # lazily given index batches come back in order, with their indices
    order = [np.array([6, 0]), slice(2, 4), [5]]
    loaded = list(images.load_batches(iter(order), size=(8, 8), num_workers=1))
    assert [idx is o for (idx, _), o in zip(loaded, order)] == [True] * 3
    torch.testing.assert_close(loaded[0][1], images.load([6, 0], size=(8, 8)))


def test_different_sizes_need_a_size_in_loader_workers_too(jpeg_files):
    with pytest.raises(ValueError, match="different sizes"):
        list(check_images(jpeg_files).iter_batches(3, num_workers=1))


def test_num_workers_reaches_the_embedder(jpeg_files):
    from ssad import TimmFeatures

    params = {"pretrained": False, "image_size": 16, "batch_size": 3, "random_state": 0}
    serial = TimmFeatures("test_vit", **params).fit(jpeg_files).transform(jpeg_files)
    feats = TimmFeatures("test_vit", num_workers=2, **params).fit(jpeg_files)
    np.testing.assert_array_equal(feats.transform(jpeg_files), serial)


def test_mask_files_count_every_nonzero_opaque_pixel(tmp_path):
    from ssad._images import read_mask_file

    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent background
    rgba[1:3, 1:3] = (255, 255, 255, 255)  # four opaque white defect pixels
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert read_mask_file(tmp_path / "alpha.png").sum() == 4
    labels = np.zeros((4, 4), np.uint16)
    labels[0, :3] = 1  # a 16-bit label-index mask: 1 is a defect
    Image.fromarray(labels).save(tmp_path / "labels16.png")
    assert read_mask_file(tmp_path / "labels16.png").sum() == 3
    dim = np.zeros((4, 4, 3), np.uint8)
    dim[3, 3] = (0, 0, 1)  # a faint blue pixel is still nonzero
    Image.fromarray(dim).save(tmp_path / "dim.png")
    assert read_mask_file(tmp_path / "dim.png").sum() == 1


def test_input_hints_and_empty_path():
    with pytest.raises(ValueError, match="normalised input"):
        check_images(np.full((1, 4, 4, 3), -2.0, np.float32))
    with pytest.raises(ValueError, match=r"overshoot, clip first"):
        check_images(np.full((1, 4, 4, 3), 1.02, np.float32))
    with pytest.raises(ValueError, match="Divide by 255"):
        check_images(np.full((1, 4, 4, 3), 200.0, np.float32))
    with pytest.raises(TypeError, match="X / 65535"):
        check_images(np.full((1, 4, 4, 3), 1000, np.uint16))
    with pytest.raises(FileNotFoundError, match="empty path"):
        check_images("")
    with pytest.raises(TypeError, match=r"np\.stack\(X\)"):
        check_images([np.zeros((4, 4, 3), np.uint8)] * 2)


def test_unknown_interpolation(caplog):
    config = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    with caplog.at_level("WARNING", logger="ssad._images"):
        pre = Preprocessor.from_data_config({**config, "interpolation": "lanczos"})
    assert pre.interpolation == "bicubic" and "lanczos" in caplog.text
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Preprocessor((8, 8), (0.5,) * 3, (0.5,) * 3, "bicubc")(torch.zeros(1, 3, 4, 4))


def test_dtypes_torch_cannot_hold_are_refused_at_once():
    with pytest.raises(TypeError, match="non-native byte order"):
        check_images(np.zeros((1, 4, 4, 3), ">f4"))
    if np.dtype(np.longdouble).itemsize > 8:  # longdouble is float64 on some platforms
        with pytest.raises(TypeError, match="torch cannot hold"):
            check_images(np.zeros((1, 4, 4, 3), np.longdouble))
