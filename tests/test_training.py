"""The training loop's modes: BatchNorm of pretrained backbones, EMA teachers, early stopping."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ssad._images import check_images
from ssad._training import batchnorm_layers, cosine_schedule, train
from ssad.backbones import create_backbone
from ssad.detectors import ConvexMILDetector, SelfDistillNegDetector

SD_TINY = {
    "out_dim": 32,
    "hidden_dim": 32,
    "bottleneck_dim": 16,
    "n_local_crops": 2,
    "n_epochs": 2,
    "batch_size": 8,
    "image_size": 32,
}


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def resnet_checkpoint(tmp_path):
    """A 'pretrained' test_resnet: random weights and BatchNorm statistics far from 0 / 1."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = create_backbone("test_resnet", pretrained=False)
        for bn in batchnorm_layers(model):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path), model


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for bn in batchnorm_layers(model) for t in (bn.running_mean, bn.running_var)]


def test_train_keeps_frozen_modules_in_eval_mode():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    before = _bn_stats(net)
    seen = []
    net[1].register_forward_pre_hook(lambda m, _: seen.append(m.training))
    images = check_images(np.random.default_rng(0).random((8, 2, 2, 1)).astype(np.float32))

    def loss_fn(batch):
        return net(batch.flatten(1)[:, :4]).pow(2).mean()

    train(
        net,
        loss_fn,
        images,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        n_epochs=2,
        batch_size=4,
        device=torch.device("cpu"),
        rng=np.random.default_rng(0),
        frozen=batchnorm_layers(net),
    )
    assert seen and not any(seen)
    assert net[2].training is False  # the whole module ends in eval mode
    for a, b in zip(before, _bn_stats(net)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls", [ConvexMILDetector, SelfDistillNegDetector])
def test_pretrained_batchnorm_statistics_stay_frozen(resnet_checkpoint, images, cls):
    path, reference = resnet_checkpoint
    params = SD_TINY if cls is SelfDistillNegDetector else {"n_epochs": 2, "batch_size": 8}
    det = cls("test_resnet", checkpoint_path=path, random_state=0, **params).fit(images)
    model = det.teacher_ if cls is SelfDistillNegDetector else det.encoder_
    for a, b in zip(_bn_stats(reference), _bn_stats(model)):
        torch.testing.assert_close(a, b)
    # a user can train them: the statistics then move
    det = cls(
        "test_resnet", checkpoint_path=path, freeze_batchnorm=False, random_state=0, **params
    ).fit(images)
    model = det.teacher_ if cls is SelfDistillNegDetector else det.encoder_
    moved = [not torch.allclose(a, b) for a, b in zip(_bn_stats(reference), _bn_stats(model))]
    assert any(moved)


@pytest.mark.parametrize("cls", [ConvexMILDetector, SelfDistillNegDetector])
def test_learning_rate_zero_scores_like_the_frozen_backbone(resnet_checkpoint, images, cls):
    path, _ = resnet_checkpoint
    params = SD_TINY if cls is SelfDistillNegDetector else {"n_epochs": 2, "batch_size": 8}
    det = cls(
        "test_resnet", checkpoint_path=path, learning_rate=1e-12, random_state=0, **params
    ).fit(images)
    frozen = det.frozen_features().fit(images)
    Z = frozen.transform(images)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    np.testing.assert_allclose(det.transform(images), Z, atol=1e-5)
    X_new = 255 - images[:5]
    expected = det.scorer_.__class__(**det.scorer_.get_params()).fit(Z)
    Z_new = frozen.transform(X_new)
    Z_new /= np.linalg.norm(Z_new, axis=1, keepdims=True)
    np.testing.assert_allclose(
        det.score_samples(X_new), expected.score_samples(Z_new), rtol=1e-4, atol=1e-5
    )


def test_ema_teacher_never_trains(images):
    det = SelfDistillNegDetector("test_resnet", pretrained=False, random_state=0, **SD_TINY)
    modes = []
    original = det._train

    def spy(student, teacher, *args):
        teacher.register_forward_pre_hook(lambda m, _: modes.append(m.training))
        return original(student, teacher, *args)

    det._train = spy
    det.fit(images)
    assert modes and not any(modes)


def test_frozen_features_start_from_the_detectors_initialisation(images):
    # from scratch, BatchNorm frozen, no learning: the detector's embeddings are those of
    # its random initialisation, which frozen_features() reproduces from random_state
    det = ConvexMILDetector(
        "test_resnet",
        pretrained=False,
        freeze_batchnorm=True,
        learning_rate=1e-12,
        n_epochs=1,
        batch_size=8,
        random_state=5,
    ).fit(images)
    Z = det.frozen_features().fit_transform(images)
    np.testing.assert_allclose(
        det.transform(images), Z / np.linalg.norm(Z, axis=1)[:, None], atol=1e-5
    )


def test_freeze_early_layers_keeps_early_weights(images):
    det = ConvexMILDetector(
        "test_resnet",
        pretrained=False,
        n_trainable_blocks=1,
        n_epochs=1,
        batch_size=8,
        learning_rate=0.1,
        warmup_epochs=0,
        random_state=0,
    )
    start = ConvexMILDetector("test_resnet", pretrained=False, random_state=0).frozen_features()
    start.fit(images)
    det.fit(images)
    before = dict(start.model_.named_parameters())
    after = dict(det.encoder_.named_parameters())
    for name, p in after.items():
        moved = not torch.equal(p, before[name])
        assert moved == name.startswith("layer4"), name
    with pytest.raises(ValueError, match="n_trainable_blocks must be in"):
        ConvexMILDetector("test_resnet", pretrained=False, n_trainable_blocks=9).fit(images)


def test_teacher_entropy_curve(images):
    det = SelfDistillNegDetector("test_resnet", pretrained=False, random_state=0, **SD_TINY)
    det.fit(images)
    assert len(det.teacher_entropy_curve_) == SD_TINY["n_epochs"]
    assert all(0 <= e <= np.log(SD_TINY["out_dim"]) + 1e-6 for e in det.teacher_entropy_curve_)
    # the entropy of a mean output is at least the mean entropy of the outputs (concavity)
    mean_curve = det.teacher_mean_entropy_curve_
    assert len(mean_curve) == SD_TINY["n_epochs"]
    assert all(
        h - 1e-6 <= m <= np.log(SD_TINY["out_dim"]) + 1e-6
        for h, m in zip(det.teacher_entropy_curve_, mean_curve)
    )


def test_num_workers_does_not_change_training(tmp_path):
    from PIL import Image

    from ssad import TransformalyDetector

    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    params = {
        "backbone": "test_vit",
        "pretrained": False,
        "image_size": 32,
        "n_student_blocks": 1,
        "n_epochs": 2,
        "batch_size": 4,
        "random_state": 0,
    }
    serial = TransformalyDetector(**params).fit(paths)
    parallel = TransformalyDetector(num_workers=2, **params).fit(paths)
    assert parallel.loss_curve_ == serial.loss_curve_
    assert parallel.validation_curve_ == serial.validation_curve_
    np.testing.assert_array_equal(parallel.score_samples(paths), serial.score_samples(paths))
    assert parallel.world_size_ == 1


def test_cosine_schedule_always_reaches_its_peak():
    lr = cosine_schedule(1.0, 0.0, total_steps=100, warmup_steps=10)
    assert lr(0) == 0.0 and lr(5) == pytest.approx(0.5) and lr(10) == 1.0 and lr(100) == 0.0
    short = cosine_schedule(1.0, 0.0, total_steps=3, warmup_steps=10)  # warm-up cut to 2 steps
    assert [short(i) for i in range(3)] == [0.0, 0.5, 1.0]
    assert cosine_schedule(2.0, 0.0, total_steps=1, warmup_steps=5)(0) == 2.0


def test_non_finite_validation_loss_and_patience_without_validation(images):
    module = nn.Linear(3, 1)
    data = check_images(images)

    def nan_loss(batch):
        out = module(batch.mean(dim=(2, 3))).mean()
        return out * float("nan") if not module.training else out

    common = {
        "optimizer": torch.optim.SGD(module.parameters(), lr=0.1),
        "n_epochs": 2,
        "batch_size": 8,
        "device": torch.device("cpu"),
        "rng": np.random.default_rng(0),
        "n_iter_no_change": 1,
    }
    with pytest.raises(FloatingPointError, match="validation loss is nan"):
        train(module, nan_loss, data, validation_images=data, **common)
    with pytest.raises(ValueError, match="pass validation_images"):
        train(module, nan_loss, data, **common)
