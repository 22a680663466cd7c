"""Batched random view transforms: shapes, ranges, per-image draws, reproducibility."""

import torch

from ssad.augment import (
    ColorJitter,
    Compose,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Solarize,
)


def _batch(n=8, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_crop_shape_identity_and_independent_draws():
    x = _batch()
    out = RandomResizedCrop((12, 10), scale=(0.2, 0.5))(x)
    assert out.shape == (8, 3, 12, 10)
    full = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x)
    torch.testing.assert_close(full, x)  # a full-image crop at the same size is the image
    same = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    crops = RandomResizedCrop(8, scale=(0.1, 0.3))(same)
    assert not torch.allclose(crops[0], crops[1])  # each image gets its own box


def test_flip_grey_solarize_exact():
    x = _batch()
    torch.testing.assert_close(RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    torch.testing.assert_close(RandomHorizontalFlip(p=0.0)(x), x)
    grey = RandomGrayscale(p=1.0)(x)
    torch.testing.assert_close(grey[:, 0], grey[:, 2])
    sol = Solarize(p=1.0, threshold=0.5)(x)
    torch.testing.assert_close(sol, torch.where(x >= 0.5, 1 - x, x))


def test_jitter_and_blur_stay_in_range():
    x = _batch()
    for t in (ColorJitter(p=1.0), GaussianBlur(p=1.0)):
        y = t(x)
        assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0 + 1e-6
        assert not torch.allclose(y, x)


def test_compose_is_reproducible_under_a_seed():
    x = _batch()
    t = Compose([RandomResizedCrop(12), RandomHorizontalFlip(), ColorJitter(), GaussianBlur()])
    torch.manual_seed(3)
    a = t(x)
    torch.manual_seed(3)
    torch.testing.assert_close(t(x), a)
    assert "RandomResizedCrop" in repr(t)


def test_views_keep_the_batch_dtype_under_a_training_steps_autocast():
    # views are drawn inside the loss, under the training step's autocast: the blur's
    # convolutions once came back in bfloat16 and broke the float32 batch they write into
    from ssad.augment import MultiCropTransform, RotationTransform

    x = _batch(size=32)
    multicrop = MultiCropTransform(24, 12, n_local_crops=2, shift=RotationTransform())
    torch.manual_seed(0)
    plain = multicrop(x)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = multicrop(x)
    for a, b in zip(cast, plain, strict=True):
        assert a.dtype == x.dtype
        torch.testing.assert_close(a, b)
