"""Feature extractors, backbones and their weights."""

import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as sk_checks

from ssad import DINOFeatures, GaussianScorer, KNNScorer, MAEFeatures, TimmFeatures
from ssad.backbones import (
    PretrainedWeightsUnavailableError,
    autocast,
    create_backbone,
    load_checkpoint,
)
from ssad.features import backbone_features, resolve_pooling, token_grid
from ssad.utils.estimator_checks import SKLEARN_GENERIC_CHECKS, check_image_detector

VIT = {"backbone": "test_vit", "pretrained": False, "image_size": 32}


@pytest.mark.parametrize("check", SKLEARN_GENERIC_CHECKS)
@pytest.mark.parametrize(
    "est", [TimmFeatures(**VIT), DINOFeatures(**VIT), MAEFeatures(**VIT)], ids=repr
)
def test_sklearn_generic_checks(est, check):
    getattr(sk_checks, check)(type(est).__name__, est)


def test_defaults_are_the_documented_models():
    assert DINOFeatures().backbone == "vit_small_patch16_224.dino"
    assert DINOFeatures().pooling == "cls"
    assert MAEFeatures().backbone == "vit_base_patch16_224.mae"
    assert MAEFeatures().pooling == "mean"


def test_transform_shape_dtype_names(rgb_images):
    feats = TimmFeatures(**VIT, batch_size=5).fit(rgb_images)
    Z = feats.transform(rgb_images)
    assert Z.shape == (12, 64) and Z.dtype == np.float32
    names = feats.get_feature_names_out()
    assert len(names) == 64 and names[0] == "timmfeatures0"
    # batching does not change the result
    np.testing.assert_allclose(Z, feats.set_params(batch_size=64).transform(rgb_images), atol=1e-5)


def test_pooling_matches_tokens(rgb_images):
    feats = TimmFeatures(**VIT, pooling="cls+mean").fit(rgb_images)
    x = feats.preprocessor_(torch.from_numpy(rgb_images[:2]).permute(0, 3, 1, 2).float() / 255)
    with torch.inference_mode():
        tokens = feats.model_.forward_features(x)
    expected = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1).numpy()
    np.testing.assert_allclose(feats.transform(rgb_images[:2]), expected, rtol=1e-4, atol=1e-5)


def test_layers_concatenate_blocks(rgb_images):
    feats = TimmFeatures(**VIT, pooling="cls+mean", layers=[0, -1]).fit(rgb_images)
    assert feats.transform(rgb_images).shape == (12, 4 * 64)
    cnn = TimmFeatures("test_resnet", pretrained=False, pooling="mean", layers=[-2, -1])
    assert cnn.fit_transform(rgb_images).ndim == 2


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"layers": [1.9]}, "'layers' parameter of TimmFeatures"),
        ({"layers": [True]}, "'layers' parameter of TimmFeatures"),
        ({"layers": []}, "'layers' parameter of TimmFeatures"),
        ({"layers": [99]}, "layers=\\[99\\] does not fit 'test_resnet'"),
        ({"image_size": (16.9, 16.9)}, "'image_size' parameter"),
        ({"image_size": (16, 16, 3)}, "'image_size' parameter"),
        ({"image_size": (0, 16)}, "'image_size' parameter"),
    ],
)
def test_layers_and_image_size_are_checked(rgb_images, params, match):
    with pytest.raises(ValueError, match=match):
        TimmFeatures("test_resnet", pretrained=False, **params).fit(rgb_images)


def test_cnn_has_no_class_token(rgb_images):
    with pytest.raises(ValueError, match="class token.*pooling='mean'"):
        TimmFeatures("test_resnet", pretrained=False, pooling="cls").fit(rgb_images)
    Z = TimmFeatures("test_resnet", pretrained=False).fit_transform(rgb_images)  # auto: mean
    assert Z.shape[0] == 12


def test_unknown_backbone_and_bad_params(rgb_images):
    with pytest.raises(ValueError, match="Unknown timm model 'no_such_net'"):
        TimmFeatures("no_such_net").fit(rgb_images)
    with pytest.raises(ValueError, match="'pooling' parameter"):
        TimmFeatures(**{**VIT}, pooling="max").fit(rgb_images)
    with pytest.raises(ValueError, match="'device' parameter"):
        TimmFeatures(**VIT, device="gpu0").fit(rgb_images)


def test_missing_weights_offline_names_both_fixes(rgb_images):
    # conftest sets HF_HUB_OFFLINE=1 and the test models have no cached weights
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        TimmFeatures("test_vit.r160_in1k", pretrained=True).fit(rgb_images)
    msg = str(info.value)
    assert "network" in msg and "HF_HUB_OFFLINE" in msg and "checkpoint_path" in msg


@pytest.mark.parametrize("fmt", ["safetensors", "pth-wrapped", "bin-prefixed"])
def test_checkpoint_path_formats(tmp_path, rgb_images, fmt):
    torch.manual_seed(0)
    source = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    sd = source.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    elif fmt == "pth-wrapped":
        path = tmp_path / "w.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    else:
        path = tmp_path / "w.bin"
        torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, path)
    feats = TimmFeatures(**VIT, checkpoint_path=path).fit(rgb_images)
    for name, tensor in feats.model_.state_dict().items():
        torch.testing.assert_close(tensor, sd[name])


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file"):
        create_backbone("test_vit", checkpoint_path=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"epoch": 1}, bad)
    with pytest.raises(ValueError, match="holds no state dict"):
        create_backbone("test_vit", checkpoint_path=bad)
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), other)
    model = create_backbone("test_vit", pretrained=False)
    with pytest.raises(ValueError, match="does not fit the model.*missing"):
        load_checkpoint(model, other)


def test_pickle_roundtrip_keeps_features(rgb_images):
    feats = DINOFeatures(**VIT).fit(rgb_images)
    state = feats.__getstate__()
    assert state["model_"] is None and "model_" in state["_module_states"]
    assert feats.model_ is not None  # pickling does not touch the live estimator
    restored = pickle.loads(pickle.dumps(feats))
    np.testing.assert_array_equal(restored.transform(rgb_images), feats.transform(rgb_images))


def test_pipeline_with_scorers_roc_auc_clone_pickle():
    rng = np.random.default_rng(0)
    normal = rng.integers(90, 110, (30, 32, 32), dtype=np.uint8)
    anomalies = rng.integers(0, 256, (10, 32, 32), dtype=np.uint8)
    X_test = np.concatenate([normal[20:], anomalies])
    y_test = np.r_[np.zeros(10), np.ones(10)]
    for scorer in (GaussianScorer(), KNNScorer()):
        det = make_pipeline(DINOFeatures(**VIT), scorer).fit(normal[:20])
        scores = det.score_samples(X_test)
        assert scores.dtype == np.float64 and scores.shape == (20,)
        assert set(np.unique(det.predict(X_test))) <= {-1, 1}
        assert roc_auc_score(y_test, -scores) > 0.9
        cloned = clone(det)
        assert cloned.get_params()["dinofeatures__backbone"] == "test_vit"
        np.testing.assert_allclose(pickle.loads(pickle.dumps(det)).score_samples(X_test), scores)


def test_check_image_detector_on_a_pipeline():
    check_image_detector(make_pipeline(DINOFeatures(**VIT), GaussianScorer()))


def test_backbone_features_cnn_and_autocast():
    model = create_backbone("test_resnet", pretrained=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode(), autocast(torch.device("cpu"), "auto"):
        z = backbone_features(model, x, "mean")
    assert z.shape[0] == 2 and z.dtype == torch.float32


def test_pooling_vocabulary(rgb_images):
    vit = create_backbone("test_vit", pretrained=False, image_size=32)
    cnn = create_backbone("test_resnet", pretrained=False)
    assert resolve_pooling(vit, "auto") == "cls" and resolve_pooling(cnn, "auto") == "mean"
    with pytest.raises(ValueError, match="pooling must be one of"):
        resolve_pooling(vit, "max")
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        tokens = vit.forward_features(x)
        # "tokens": every output token flattened, in order
        flat = backbone_features(vit, x, "tokens")
        torch.testing.assert_close(flat, tokens.flatten(1))
        # the grid holds the patch tokens, prefix tokens dropped
        grid = token_grid(vit, x)
        n_prefix = vit.num_prefix_tokens
        side = int((tokens.shape[1] - n_prefix) ** 0.5)
        assert grid.shape == (2, tokens.shape[-1], side, side)
        torch.testing.assert_close(grid.flatten(2).transpose(1, 2), tokens[:, n_prefix:])
        fmap = cnn.forward_features(x)
        torch.testing.assert_close(
            backbone_features(cnn, x, "tokens"), fmap.permute(0, 2, 3, 1).flatten(1)
        )
        torch.testing.assert_close(token_grid(cnn, x), fmap)
    feats = TimmFeatures("test_vit", pretrained=False, image_size=32, pooling="tokens")
    assert feats.fit_transform(rgb_images).shape == (12, tokens.shape[1] * tokens.shape[2])


def test_timm_features_random_state_is_reproducible(rgb_images):
    a = TimmFeatures(**VIT, random_state=0).fit_transform(rgb_images)
    b = TimmFeatures(**VIT, random_state=0).fit_transform(rgb_images)
    c = TimmFeatures(**VIT, random_state=1).fit_transform(rgb_images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    state = torch.random.get_rng_state()
    TimmFeatures(**VIT, random_state=0).fit(rgb_images)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_normalize_gives_the_unit_rows_of_the_same_features(rgb_images):
    raw = TimmFeatures(**VIT, random_state=0).fit_transform(rgb_images)
    for cls in (TimmFeatures, DINOFeatures, MAEFeatures):
        unit = cls(**VIT, pooling="mean", normalize=True, random_state=0).fit_transform(rgb_images)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    unit = TimmFeatures(**VIT, normalize=True, random_state=0).fit_transform(rgb_images)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, expected, rtol=1e-4, atol=1e-6)
