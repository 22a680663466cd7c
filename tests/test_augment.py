"""ssad.augment: shifting transforms (negatives) and the multi-crop transform."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ssad.augment import (
    SHIFTING_TRANSFORMS,
    MultiCropTransform,
    PatchPermutationTransform,
    PixelShuffleTransform,
    RotationTransform,
    make_shifting_transform,
)
from ssad.augment._views import GaussianBlur, _shift_hue


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors on a shared 2-core CPU: one intra-op thread is many times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(b=16, c=3, h=8, w=8, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _sorted_pixels(x):
    """Per image, the sorted pixel colours (c-tuples): the pixel multiset."""
    b, c = x.shape[:2]
    cols = x.reshape(b, c, -1).transpose(1, 2)  # (b, hw, c)
    keys = cols[..., 0] * 1e6 + cols[..., 1] * 1e3 + cols[..., 2]
    order = keys.argsort(dim=1)
    return torch.gather(cols, 1, order.unsqueeze(-1).expand_as(cols))


def test_rotation_is_rot90():
    x = _batch()
    for angle, k in ((90, 1), (180, 2), (270, 3)):
        torch.testing.assert_close(RotationTransform((angle,))(x), torch.rot90(x, k, dims=(2, 3)))
    torch.manual_seed(0)
    y = RotationTransform()(_batch(b=64))
    x = _batch(b=64)
    turns = []
    for xi, yi in zip(x, y):
        matches = [k for k in range(4) if torch.equal(torch.rot90(xi, k, dims=(1, 2)), yi)]
        assert len(matches) == 1 and matches[0] != 0  # a true quarter turn, never the identity
        turns.append(matches[0])
    assert set(turns) == {1, 2, 3}
    with pytest.raises(ValueError, match="square"):
        RotationTransform()(torch.rand(2, 3, 4, 6))
    with pytest.raises(ValueError, match="multiples of 90"):
        RotationTransform((45,))


def test_rotation_uniform_rot360():
    x = _batch(b=4, h=9, w=9)
    t = RotationTransform("uniform", fill=0.25)
    torch.testing.assert_close(t._rotate_any(x, torch.full((4,), 90.0)), torch.rot90(x, 1, (2, 3)))
    torch.testing.assert_close(t._rotate_any(x, torch.zeros(4)), x)
    y = t._rotate_any(torch.ones(1, 1, 9, 9), torch.tensor([45.0]))
    assert float(y[0, 0, 0, 0]) == 0.25 and float(y[0, 0, 4, 4]) == 1.0  # corner filled
    torch.manual_seed(0)
    a = t(x)
    torch.manual_seed(0)
    assert a.shape == x.shape and torch.equal(a, t(x))


@pytest.mark.parametrize(("grid", "size"), [(2, 8), (4, 8), (4, 10)])
def test_patch_permutation_moves_whole_patches(grid, size):
    torch.manual_seed(0)
    x = _batch(b=32, h=size, w=size)
    y = PatchPermutationTransform(grid)(x)
    p = size // grid
    n = grid * p

    def patches(img):
        return [
            img[:, i * p : (i + 1) * p, j * p : (j + 1) * p]
            for i in range(grid)
            for j in range(grid)
        ]

    for xi, yi in zip(x, y):
        src, dst = patches(xi), patches(yi)
        perm = [next(k for k, s in enumerate(src) if torch.equal(s, d)) for d in dst]
        assert sorted(perm) == list(range(grid * grid))  # every output patch is a whole input patch
        assert perm != list(range(grid * grid))  # never the identity
        # the border that does not fill a patch stays in place
        assert torch.equal(xi[:, n:, :], yi[:, n:, :]) and torch.equal(xi[:, :, n:], yi[:, :, n:])
    torch.testing.assert_close(_sorted_pixels(y), _sorted_pixels(x))  # same pixel multiset
    with pytest.raises(ValueError, match="too small"):
        PatchPermutationTransform(4)(torch.rand(1, 3, 3, 3))


def test_pixel_shuffle_keeps_pixel_multiset():
    torch.manual_seed(0)
    x = _batch(b=8, h=6, w=6)
    y = PixelShuffleTransform()(x)
    assert y.shape == x.shape
    assert not any(torch.equal(a, b) for a, b in zip(x, y))
    # channels move together: the set of colour triples of each image is kept
    torch.testing.assert_close(_sorted_pixels(y), _sorted_pixels(x))


def test_make_shifting_transform():
    kinds = {name: type(make_shifting_transform(name)).__name__ for name in SHIFTING_TRANSFORMS}
    assert kinds == {
        "rot": "RotationTransform",
        "rot360": "RotationTransform",
        "perm4": "PatchPermutationTransform",
        "perm16": "PatchPermutationTransform",
        "pixel_shuffle": "PixelShuffleTransform",
    }
    assert make_shifting_transform("perm16").grid == 4
    assert make_shifting_transform("rot360").angles == "uniform"
    with pytest.raises(ValueError, match="Unknown shifting transform"):
        make_shifting_transform("flip")


def test_multicrop_views():
    x = _batch(b=5, h=40, w=40)
    torch.manual_seed(0)
    t = MultiCropTransform(32, 16, n_local_crops=3)
    views = t(x)
    assert [tuple(v.shape) for v in views] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert all(float(v.min()) >= 0.0 and float(v.max()) <= 1.0 + 1e-6 for v in views)
    torch.manual_seed(0)
    again = t(x)
    assert all(torch.equal(a, b) for a, b in zip(views, again))  # torch's RNG drives it
    neg = MultiCropTransform(32, 16, n_global_crops=1, n_local_crops=2, shift=lambda v: v * 0)
    out = neg(x)
    assert len(out) == 3 and all(float(v.abs().max()) == 0.0 for v in out)
    assert "n_local_crops=2" in repr(neg)
    with pytest.raises(ValueError, match="n_global_crops must be >= 1"):
        MultiCropTransform(32, 16, n_global_crops=0)


def test_batched_photometric_ops_match_torchvision():
    x = _batch(b=6, h=16, w=16)
    for shift in (0.1, -0.07, 0.5):
        expected = torch.stack([TF.adjust_hue(img, shift) for img in x])
        torch.testing.assert_close(
            _shift_hue(x, torch.full((6,), shift)), expected, atol=1e-5, rtol=0
        )
    blur = GaussianBlur(p=1.0, sigma=(1.5, 1.5))
    expected = torch.stack(
        [TF.gaussian_blur(img, kernel_size=[3, 3], sigma=[1.5, 1.5]) for img in x]
    )
    torch.testing.assert_close(blur(x), expected, atol=1e-5, rtol=0)


def test_crop_scales_and_jitter_strengths_are_checked():
    from ssad.augment import MultiCropTransform
    from ssad.augment._views import ColorJitter, RandomResizedCrop

    with pytest.raises(ValueError, match="'scale' parameter of RandomResizedCrop"):
        RandomResizedCrop(8, scale=(0.4, 1.5))
    with pytest.raises(ValueError, match="'global_scale' parameter of MultiCropTransform"):
        MultiCropTransform(32, 16, global_scale=(1.0, 0.4))
    # a strength above 1 draws factors from [0, 1 + v], as torchvision does: never negative
    torch.manual_seed(0)
    x = torch.full((500, 3, 4, 4), 0.5)
    out = ColorJitter(brightness=1.5, contrast=0.0, saturation=0.0, hue=0.0, p=1.0)(x)
    assert (out.amax(dim=(1, 2, 3)) > 0).all()
