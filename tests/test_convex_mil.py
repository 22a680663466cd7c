"""ConvexMILDetector and the MIL pieces of ssad.nn.mil: equations, contract, persistence."""

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.utils import estimator_checks as sk_checks

import ssad.detectors.convex_mil as cmil_module
import ssad.nn.mil as mil_module
from ssad.detectors.convex_mil import ConvexMILDetector
from ssad.nn.mil import (
    ConvexMILLoss,
    convex_loss,
    dirichlet_weights,
    mean_shifted_loss,
    pseudo_normality,
    sample_convex,
    sampling_probabilities,
    split_candidates,
)
from ssad.utils.estimator_checks import SKLEARN_GENERIC_CHECKS, check_image_detector

TINY = {"backbone": "test_resnet", "pretrained": False, "image_size": 32}


# -- eq. 2: pseudo normality ----------------------------------------------------------------
def test_pseudo_normality_hand_made_matrix():
    M = torch.tensor(
        [
            [1.0, 0.9, 0.8, 0.1],
            [0.9, 1.0, 0.7, 0.2],
            [0.8, 0.7, 1.0, 0.3],
            [0.1, 0.2, 0.3, 1.0],
        ]
    )
    # K = 2 largest off-diagonal entries of each row; the diagonal (self) never counts
    expected = torch.tensor([(0.9 + 0.8) / 2, (0.9 + 0.7) / 2, (0.8 + 0.7) / 2, (0.3 + 0.2) / 2])
    torch.testing.assert_close(pseudo_normality(M, 2), expected)
    torch.testing.assert_close(pseudo_normality(M, 1), torch.tensor([0.9, 0.9, 0.8, 0.3]))
    # K is capped at b - 1: every other sample
    torch.testing.assert_close(pseudo_normality(M, 10), (M.sum(1) - 1.0) / 3)
    assert pseudo_normality(torch.ones(1, 1), 3).tolist() == [0.0]
    with pytest.raises(ValueError, match="square"):
        pseudo_normality(torch.ones(2, 3), 1)


def test_split_candidates_lowest_scores_are_abnormal():
    scores = torch.tensor([0.5, -0.2, 0.9, 0.1, 0.7, 0.3, 0.8, 0.6, 0.4, 0.95])
    normal, abnormal = split_candidates(scores, 0.2)
    assert abnormal.tolist() == [1, 3]
    assert normal.tolist() == [0, 2, 4, 5, 6, 7, 8, 9]
    # never an empty set: at least one abnormal, at least one normal
    assert split_candidates(scores, 0.01)[1].tolist() == [1]
    assert len(split_candidates(scores, 0.99)[0]) == 1
    assert [t.tolist() for t in split_candidates(torch.tensor([0.3, 0.1]), 0.1)] == [[0], [1]]
    with pytest.raises(ValueError, match="at least 2"):
        split_candidates(torch.tensor([0.3]), 0.1)


# -- eq. 4: sampling probabilities --------------------------------------------------------
def test_sampling_probabilities_paper_and_inverse():
    scores = torch.tensor([0.8, 0.2, 0.6, 0.1, 0.4])
    normal, abnormal = torch.tensor([0, 2, 4]), torch.tensor([1, 3])
    p_n, p_a = sampling_probabilities(scores, normal, abnormal, "paper")
    torch.testing.assert_close(p_n, torch.tensor([0.8, 0.0, 0.6, 0.0, 0.4]) / 1.8)
    torch.testing.assert_close(p_a, torch.tensor([0.0, 0.2, 0.0, 0.1, 0.0]) / 0.3)
    p_n2, p_a2 = sampling_probabilities(scores, normal, abnormal, "inverse")
    torch.testing.assert_close(p_n2, p_n)  # the normal set is weighted by s in both modes
    torch.testing.assert_close(p_a2, torch.tensor([0.0, 0.8, 0.0, 0.9, 0.0]) / 1.7)
    # "paper" favours the more normal abnormal candidate, "inverse" the more abnormal one
    assert p_a[1] > p_a[3] and p_a2[3] > p_a2[1]


def test_sampling_probabilities_negative_scores():
    scores = torch.tensor([0.5, -0.3, -0.1, 0.2])
    normal, abnormal = torch.tensor([0, 3]), torch.tensor([1, 2])
    _, p_a = sampling_probabilities(scores, normal, abnormal, "paper")
    torch.testing.assert_close(p_a, torch.tensor([0.0, 0.5, 0.5, 0.0]))  # all clipped: uniform
    p_n, _ = sampling_probabilities(torch.tensor([0.5, -0.3, -0.1, -0.2]), normal, abnormal)
    torch.testing.assert_close(p_n, torch.tensor([1.0, 0.0, 0.0, 0.0]))  # -0.2 clipped to 0
    with pytest.raises(ValueError, match="sampling"):
        sampling_probabilities(scores, normal, abnormal, "uniform")


# -- eq. 5: convex representations --------------------------------------------------------
def test_dirichlet_weights_on_the_simplex():
    w = dirichlet_weights(4000, 5, generator=torch.Generator().manual_seed(0))
    assert w.shape == (4000, 5) and bool((w >= 0).all())
    torch.testing.assert_close(w.sum(1), torch.ones(4000))
    # flat Dirichlet: each coordinate ~ Beta(1, C - 1), mean 1/C, variance (C-1)/(C^2 (C+1))
    torch.testing.assert_close(w.mean(0), torch.full((5,), 0.2), atol=0.01, rtol=0)
    torch.testing.assert_close(w.var(0), torch.full((5,), 4 / 150), atol=0.003, rtol=0)


def test_sample_convex_draws_only_from_its_set():
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(10, 6, generator=gen), dim=1)
    p = torch.zeros(10)
    p[[2, 5, 7]] = torch.tensor([0.5, 0.3, 0.2])
    sample = sample_convex(z, p, n=50, n_convex=4, generator=gen)
    assert sample.representation.shape == (50, 6)
    assert sample.indices.shape == sample.weights.shape == (50, 4)
    assert set(sample.indices.unique().tolist()) <= {2, 5, 7}
    assert bool((sample.weights >= 0).all())
    torch.testing.assert_close(sample.weights.sum(1), torch.ones(50))
    expected = torch.einsum("nc,ncd->nd", sample.weights, z[sample.indices])
    torch.testing.assert_close(sample.representation, expected)
    # with replacement: C may exceed the size of the set
    one = torch.zeros(10)
    one[4] = 1.0
    single = sample_convex(z, one, n=3, n_convex=5, generator=gen)
    assert single.indices.unique().tolist() == [4]
    torch.testing.assert_close(single.representation, z[4].expand(3, 6))


# -- eq. 6 and the batch loss -------------------------------------------------------------
def test_convex_loss_values():
    e = torch.eye(3)
    anchors, pos, neg = e[[0]], e[[0]], e[[1]]  # cos(z, z+) = 1, cos(z, z-) = 0
    assert convex_loss(anchors, pos, neg).item() == pytest.approx(math.log1p(math.exp(-1)))
    assert convex_loss(anchors, pos, neg, 0.5).item() == pytest.approx(math.log1p(math.exp(-2)))
    # cosine: the (shorter) convex representations are compared by direction only
    assert convex_loss(anchors, 0.3 * pos, 0.5 * neg).item() == pytest.approx(
        math.log1p(math.exp(-1))
    )
    swapped = convex_loss(anchors, neg, pos).item()
    assert swapped == pytest.approx(math.log1p(math.exp(1)))
    with pytest.raises(ValueError, match="temperature"):
        convex_loss(anchors, pos, neg, 0.0)


def test_convex_mil_loss_separates_the_outlier():
    gen = torch.Generator().manual_seed(0)
    normal = F.normalize(torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(9, 3, generator=gen))
    outlier = torch.tensor([[0.0, 0.0, 1.0]])
    z = torch.cat([normal, outlier]).requires_grad_(True)
    scores = pseudo_normality(z.detach() @ z.detach().T, 3)
    assert split_candidates(scores, 0.1)[1].tolist() == [9]
    loss_fn = ConvexMILLoss(n_neighbors=3, abnormal_fraction=0.1, n_convex=3)
    loss = loss_fn(z, generator=gen)
    # 9 normal anchors, z+ near them, z- = the outlier (cos ~ 0): softplus(0 - 1) each
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)), abs=0.02)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # two views: bags come from the second one
    bags = F.normalize(z.detach() + 0.01, dim=1)
    assert torch.isfinite(loss_fn(z.detach(), bags, generator=gen))
    tiny = torch.randn(1, 3, requires_grad=True)
    out = loss_fn(tiny)
    assert out.item() == 0.0 and out.requires_grad


# -- eqs. 7-8: mean-shifted loss ----------------------------------------------------------
def _msad_reference(z1, z2, c, temperature=0.25, negatives=()):
    """MSAD's formula written out: -log(e^{pos} / sum_{j != i} e^{sim_ij}) over 2b views
    (and over the shifted ``negatives`` in the denominator, which anchor nothing)."""
    u = [F.normalize(v - c, dim=0) for v in torch.cat([z1, z2])]
    extra = [F.normalize(v - c, dim=0) for v in negatives]
    n, b = len(u), len(z1)
    total = 0.0
    for i in range(n):
        denom = sum(math.exp(float(u[i] @ u[j]) / temperature) for j in range(n) if j != i)
        denom += sum(math.exp(float(u[i] @ v) / temperature) for v in extra)
        pos = math.exp(float(u[i] @ u[(i + b) % n]) / temperature)
        total += -math.log(pos / denom)
    angular = sum(float(((v - c) ** 2).sum()) for v in z1) / b
    angular += sum(float(((v - c) ** 2).sum()) for v in z2) / b
    return total / n, angular


def test_mean_shifted_loss_matches_msad_formula():
    gen = torch.Generator().manual_seed(1)
    z1 = F.normalize(torch.randn(4, 5, generator=gen), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(4, 5, generator=gen), dim=1)
    c = F.normalize(torch.randn(5, generator=gen), dim=0)
    contrastive, angular = _msad_reference(z1, z2, c)
    no_angular = mean_shifted_loss(z1, z2, c, angular=0.0).item()
    assert no_angular == pytest.approx(contrastive, rel=1e-5)
    assert mean_shifted_loss(z1, z2, c).item() == pytest.approx(contrastive + angular, rel=1e-5)
    weighted = mean_shifted_loss(z1, z2, c, angular=0.25).item()
    assert weighted == pytest.approx(contrastive + 0.25 * angular, rel=1e-5)
    # the angular term is 2 - 2 cos(z, c) per view for unit vectors, so at weight 0.25 it
    # is eq. 7 as printed, -z^T c averaged over the 2b views, plus a constant 1
    assert angular == pytest.approx(float((2 - 2 * z1 @ c).mean() + (2 - 2 * z2 @ c).mean()))
    printed = -float((torch.cat([z1, z2]) @ c).mean())
    assert 0.25 * angular == pytest.approx(1 + printed, rel=1e-5)


def test_mean_shifted_loss_with_shifted_negatives_matches_the_formula():
    gen = torch.Generator().manual_seed(2)
    z1 = F.normalize(torch.randn(3, 5, generator=gen), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(3, 5, generator=gen), dim=1)
    c = F.normalize(torch.randn(5, generator=gen), dim=0)
    rotated = F.normalize(torch.randn(6, 5, generator=gen), dim=1)
    contrastive, angular = _msad_reference(z1, z2, c, negatives=rotated)
    loss = mean_shifted_loss(z1, z2, c, negatives=rotated).item()
    assert loss == pytest.approx(contrastive + angular, rel=1e-5)
    # more negatives only add to the denominators: the loss grows
    assert loss > mean_shifted_loss(z1, z2, c).item()
    empty = mean_shifted_loss(z1, z2, c, negatives=rotated[:0]).item()
    assert empty == pytest.approx(mean_shifted_loss(z1, z2, c).item(), rel=1e-6)


def test_mean_shifted_loss_pulls_only_the_images_asked_for():
    gen = torch.Generator().manual_seed(3)
    z1 = F.normalize(torch.randn(5, 4, generator=gen), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(5, 4, generator=gen), dim=1)
    c = F.normalize(torch.randn(4, generator=gen), dim=0)
    pulled = torch.tensor([True, False, True, True, False])
    contrastive = mean_shifted_loss(z1, z2, c, angular=0.0).item()
    kept = pulled.nonzero().squeeze(1)
    _, angular_kept = _msad_reference(z1[kept], z2[kept], c)
    loss = mean_shifted_loss(z1, z2, c, angular=0.5, pulled=pulled).item()
    assert loss == pytest.approx(contrastive + 0.5 * angular_kept, rel=1e-5)
    every = mean_shifted_loss(z1, z2, c, pulled=torch.ones(5, dtype=torch.bool)).item()
    assert every == pytest.approx(mean_shifted_loss(z1, z2, c).item(), rel=1e-6)
    none = mean_shifted_loss(z1, z2, c, pulled=torch.zeros(5, dtype=torch.bool)).item()
    assert none == pytest.approx(contrastive, rel=1e-6)
    # the centre term gives no gradient to the images left out
    a1 = z1.clone().requires_grad_(True)
    a2 = z2.clone().requires_grad_(True)
    centre_term = mean_shifted_loss(a1, a2, c, pulled=pulled)
    (centre_term - mean_shifted_loss(a1, a2, c, angular=0.0)).backward()
    assert torch.count_nonzero(a1.grad[~pulled]) == 0 and torch.count_nonzero(a2.grad[~pulled]) == 0
    assert torch.count_nonzero(a1.grad[pulled]) > 0
    with pytest.raises(ValueError, match=r"shape \(5,\).*got shape \(4,\)"):
        mean_shifted_loss(z1, z2, c, pulled=pulled[:4])


@pytest.mark.parametrize("extra", [{"lambda_rot": 1.0}, {"lambda_rot": 0.0}, {"projection_dim": 8}])
def test_rotated_views_join_the_mean_shift_negatives(small_images, monkeypatch, extra):
    seen = []
    original = mil_module.mean_shifted_loss

    def spy(z1, z2, center, **kwargs):
        seen.append((z1.detach(), z2.detach(), kwargs["negatives"]))
        return original(z1, z2, center, **kwargs)

    monkeypatch.setattr(cmil_module, "mean_shifted_loss", spy)
    params = {**TINY, "n_epochs": 2, "batch_size": 4, "mean_shift_start_epoch": 1, **extra}
    ConvexMILDetector(**params, random_state=0).fit(small_images)
    assert [negatives for *_, negatives in seen] == [None, None]  # the default: MSAD's
    seen.clear()
    det = ConvexMILDetector(**params, mean_shift_negatives="rotations", random_state=0)
    det.fit(small_images)
    assert len(seen) == 2  # epoch 1, two steps of 4 images
    for z1, z2, negatives in seen:
        b, d = z1.shape
        assert d == extra.get("projection_dim", d)
        assert negatives.shape == (3 * b, d)  # 90, 180 and 270 degrees of every image
        torch.testing.assert_close(negatives.norm(dim=1), torch.ones(3 * b))
        assert negatives.requires_grad
        # neither the anchors (z1) nor their positives (z2) are among the negatives
        assert torch.cdist(negatives.detach(), torch.cat([z1, z2])).min() > 1e-4


def test_the_detector_weights_the_angular_term(small_images, monkeypatch):
    weights = []
    original = mil_module.mean_shifted_loss

    def spy(z1, z2, center, **kwargs):
        weights.append(kwargs["angular"])
        return original(z1, z2, center, **kwargs)

    monkeypatch.setattr(cmil_module, "mean_shifted_loss", spy)
    params = {**TINY, "n_epochs": 2, "batch_size": 4, "mean_shift_start_epoch": 1}
    det = ConvexMILDetector(**params, mean_shift_angular=0.0, random_state=0).fit(small_images)
    assert weights == [0.0, 0.0]  # epoch 1, two steps
    default = ConvexMILDetector(**params, random_state=0).fit(small_images)
    assert weights[2:] == [1.0, 1.0]
    assert det.loss_curve_[0] == default.loss_curve_[0]  # no L_mean in epoch 0
    assert det.loss_curve_[1] < default.loss_curve_[1]  # the centre term adds a positive loss


@pytest.mark.parametrize("use_convex", [True, False])
def test_the_centre_term_can_spare_the_abnormal_candidates(small_images, monkeypatch, use_convex):
    seen = []
    original = mil_module.mean_shifted_loss
    candidates = mil_module.ConvexMILLoss.candidates
    split = []

    def spy(z1, z2, center, **kwargs):
        seen.append(kwargs["pulled"])
        return original(z1, z2, center, **kwargs)

    def spy_candidates(self, selection):
        result = candidates(self, selection)
        split.append(result.abnormal.clone())
        return result

    monkeypatch.setattr(cmil_module, "mean_shifted_loss", spy)
    monkeypatch.setattr(mil_module.ConvexMILLoss, "candidates", spy_candidates)
    params = {**TINY, "n_epochs": 2, "batch_size": 4, "mean_shift_start_epoch": 1}
    params.update(use_convex=use_convex, n_batch_neighbors=2, abnormal_fraction=0.25)
    ConvexMILDetector(**params, random_state=0).fit(small_images)
    assert seen == [None, None]  # the default pulls every image, as eq. 7 is printed
    seen.clear()
    split.clear()
    det = ConvexMILDetector(**params, mean_shift_pull="normal_candidates", random_state=0)
    det.fit(small_images)
    assert len(seen) == 2  # epoch 1, two steps of 4 images
    # without L_conv the batch is split in epoch 1 only, for the centre term
    steps = split[-2:]
    assert len(split) == (4 if use_convex else 2)
    for pulled, abnormal in zip(seen, steps, strict=True):
        assert pulled.dtype == torch.bool and pulled.shape == (4,)
        assert (~pulled).nonzero().squeeze(1).tolist() == sorted(abnormal.tolist())
        assert 0 < int(pulled.sum()) < 4
    assert det.abnormal_candidates_.any()
    with pytest.raises(ValueError, match="mean_shift_pull"):
        ConvexMILDetector(**TINY, mean_shift_pull="some").fit(small_images)


# -- the detector ---------------------------------------------------------------------------
@pytest.mark.parametrize("check", SKLEARN_GENERIC_CHECKS)
def test_sklearn_generic_checks(check):
    getattr(sk_checks, check)("ConvexMILDetector", ConvexMILDetector(**TINY))


def test_paper_defaults():
    det = ConvexMILDetector()
    assert (det.backbone, det.pretrained, det.image_size) == ("resnet18", False, 32)
    assert (det.n_epochs, det.warmup_epochs, det.learning_rate) == (200, 10, 1e-3)
    assert (det.mean_shift_start_epoch, det.abnormal_fraction, det.sampling) == (15, 0.1, "paper")
    assert det.use_convex and det.lambda_mean > 0 and det.lambda_rot > 0


def test_contract(rgb_images):
    """check_image_detector on 12 images of 32x32: includes determinism and pickling."""
    det = ConvexMILDetector(**TINY, n_epochs=1, warmup_epochs=0, batch_size=6, random_state=0)
    check_image_detector(det, rgb_images, sklearn_checks=False)


@pytest.fixture
def small_images() -> np.ndarray:
    """Eight random RGB uint8 images of 32x32."""
    return np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)


def _fit_recording_centres(monkeypatch, images, **params):
    """Fit with L_mean from epoch 1; return the fitted detector and, per L_mean
    step, the centre and the two views' embeddings it was given."""
    centres = []
    original = mil_module.mean_shifted_loss

    def spy(z1, z2, center, **kwargs):
        centres.append((center.clone(), z1.detach().clone(), z2.detach().clone()))
        return original(z1, z2, center, **kwargs)

    monkeypatch.setattr(cmil_module, "mean_shifted_loss", spy)
    det = ConvexMILDetector(
        **TINY, batch_size=4, mean_shift_start_epoch=1, lambda_rot=0.0, random_state=0, **params
    ).fit(images)
    return det, centres


def test_mean_shift_centre_follows_the_training_views(small_images, monkeypatch):
    det, centres = _fit_recording_centres(monkeypatch, small_images, n_epochs=3)
    assert len(centres) == 4  # epochs 1 and 2, two steps each; not epoch 0
    assert len(det.loss_curve_) == 3
    assert np.linalg.norm(det.center_) == pytest.approx(1.0, abs=1e-5)
    # epoch 2's centre is the normalised mean of epoch 1's training views (z1 and z2)
    epoch1 = torch.cat([torch.cat([z1, z2]) for _, z1, z2 in centres[:2]])
    expected = torch.nn.functional.normalize(epoch1.sum(0), dim=0)
    torch.testing.assert_close(centres[2][0], expected, atol=1e-5, rtol=1e-5)
    no_shift = ConvexMILDetector(**TINY, n_epochs=1, batch_size=4, random_state=0)
    assert no_shift.fit(small_images).center_ is None  # default start epoch 15 > 1 epoch


def test_fixed_mean_shift_centre_is_the_first_one_kept(small_images, monkeypatch):
    _, running = _fit_recording_centres(monkeypatch, small_images, n_epochs=4)
    det, fixed = _fit_recording_centres(
        monkeypatch, small_images, n_epochs=4, mean_shift_center="fixed"
    )
    assert len(fixed) == 6  # epochs 1-3, two steps each
    # the first centre is the running one of epoch 1 (from epoch 0's views) ...
    torch.testing.assert_close(fixed[0][0], running[0][0])
    # ... and is kept: every later step of "fixed" uses it, where "running" moves on
    for c, _, _ in fixed[1:]:
        torch.testing.assert_close(c, fixed[0][0])
    assert not torch.allclose(running[-1][0], running[0][0], atol=1e-4)
    np.testing.assert_allclose(det.center_, fixed[0][0].numpy(), atol=1e-6)


def test_candidates_come_from_clean_images_in_eval_mode(small_images, monkeypatch):
    seen = []
    original = mil_module.ConvexMILLoss.candidates

    def spy(self, selection):
        seen.append(selection.clone())
        return original(self, selection)

    monkeypatch.setattr(mil_module.ConvexMILLoss, "candidates", spy)
    det = ConvexMILDetector(
        **TINY,
        n_epochs=1,
        batch_size=8,
        lambda_rot=0.0,
        lambda_mean=0.0,
        learning_rate=1e-12,  # the one step leaves the encoder as it embedded the batch
        random_state=0,
    ).fit(small_images)
    assert len(seen) == 1
    # the selection is the eval-mode embedding of the clean batch (the shuffled order)
    clean = torch.from_numpy(det.transform(small_images))
    rows = [int(torch.argmax(clean @ z)) for z in seen[0]]
    assert sorted(rows) == list(range(8))
    torch.testing.assert_close(seen[0], clean[rows], atol=1e-5, rtol=1e-5)
    assert det.abnormal_candidates_.dtype == bool and det.abnormal_candidates_.sum() == 1


def test_convex_anchor_draws_a_third_representation():
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    instance = ConvexMILLoss(n_neighbors=3, n_convex=3, anchor="instance")
    convex = ConvexMILLoss(n_neighbors=3, n_convex=3, anchor="convex")
    g = torch.Generator().manual_seed(0)
    split = convex.candidates(z)
    a = convex(z, candidates=split, generator=g)
    g = torch.Generator().manual_seed(0)
    pos = sample_convex(z, split.p_normal, len(split.normal), 3, generator=g)
    neg = sample_convex(z, split.p_abnormal, len(split.normal), 3, generator=g)
    anc = sample_convex(z, split.p_normal, len(split.normal), 3, generator=g)
    expected = convex_loss(anc.representation, pos.representation, neg.representation)
    torch.testing.assert_close(a, expected)
    g = torch.Generator().manual_seed(0)
    b = instance(z, candidates=split, generator=g)
    torch.testing.assert_close(
        b, convex_loss(z[split.normal], pos.representation, neg.representation)
    )
    with pytest.raises(ValueError, match="anchor must be one of"):
        ConvexMILLoss(anchor="mean")


@pytest.mark.parametrize("memory_filter", ["pseudo_normality", "gmm"])
def test_memory_filter_drops_the_least_normal_training_images(memory_filter):
    rng = np.random.default_rng(0)
    X = rng.integers(100, 140, (20, 32, 32, 3), dtype=np.uint8)
    X[-2:] = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # two noise images
    det = ConvexMILDetector(
        **TINY, n_epochs=1, batch_size=10, memory_filter=memory_filter, random_state=0
    ).fit(X)
    kept = det.scorer_.inlier_mask_
    assert kept.sum() == 18  # abnormal_fraction=0.1 of the 20 training images dropped
    if memory_filter == "pseudo_normality":  # the isolated noise images go
        assert not kept[-2:].any()
    # the score compares with the kept training images only
    Z, Z_new = det.transform(X), det.transform(X[-2:])
    cos = Z_new @ Z[kept].T
    np.testing.assert_allclose(det.score_samples(X[-2:]), cos.max(1) - 1.0, atol=1e-5)
    assert det.train_scores_.shape == (20,)


def _fit_with_eq2_memory_filter(X, **params):
    """A one-epoch tiny fit with eq. 2 as the memory filter."""
    return (
        ConvexMILDetector(
            **TINY, n_epochs=1, batch_size=10, memory_filter="pseudo_normality", random_state=0
        )
        .set_params(**params)
        .fit(X)
    )


def test_memory_neighbors_sets_k_of_the_memory_filter():
    X = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    det = _fit_with_eq2_memory_filter(X, memory_neighbors="sqrt")
    assert det.scorer_.filter_.n_neighbors_ == 5  # ceil(sqrt(20))
    default = clone(det).set_params(memory_neighbors=None)._make_scorer()
    assert default.filter.n_neighbors == det.n_batch_neighbors  # eq. 2's K
    with pytest.raises(ValueError, match="needs at least 8 training images"):
        clone(det).set_params(memory_neighbors=7).fit(X[:7])


def test_memory_filter_can_judge_the_untrained_embeddings():
    X = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    det = _fit_with_eq2_memory_filter(X, memory_filter_features="frozen")
    # the filter saw the knn-frozen features of the same starting weights ...
    frozen = det.frozen_features().set_params(normalize=True).fit_transform(X)
    untrained = clone(det.scorer_.filter).fit(frozen)
    np.testing.assert_allclose(
        det.scorer_.filter_.train_scores_, untrained.train_scores_, atol=1e-5
    )
    np.testing.assert_array_equal(
        det.scorer_.inlier_mask_, untrained.train_scores_ >= untrained.offset_
    )
    # ... not the trained embeddings eq. 11 scores against
    trained = clone(det).set_params(memory_filter_features="trained").fit(X)
    assert not np.allclose(det.scorer_.filter_.train_scores_, trained.scorer_.filter_.train_scores_)
    Z, Z_new = det.transform(X), det.transform(X[:3])
    cos = Z_new @ Z[det.scorer_.inlier_mask_].T
    np.testing.assert_allclose(det.score_samples(X[:3]), cos.max(1) - 1.0, atol=1e-5)
    # without a filter the setting changes nothing
    plain = clone(det).set_params(memory_filter=None)
    np.testing.assert_array_equal(
        plain.fit(X).score_samples(X),
        clone(plain).set_params(memory_filter_features="trained").fit(X).score_samples(X),
    )
    with pytest.raises(ValueError, match="memory_filter_features"):
        clone(det).set_params(memory_filter_features="pixels").fit(X)


def test_score_neighbors_sums_the_similarities_to_the_k_nearest_kept_images():
    X = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    det = _fit_with_eq2_memory_filter(X, score_neighbors=3)
    Z, Z_new = det.transform(X), det.transform(X[:4])
    cos = np.sort(Z_new @ Z[det.scorer_.inlier_mask_].T, axis=1)[:, ::-1]
    np.testing.assert_allclose(det.score_samples(X[:4]), cos[:, :3].sum(1) - 3.0, atol=1e-5)
    # 1 is eq. 11, the nearest kept image
    eq11 = clone(det).set_params(score_neighbors=1).fit(X)
    Z = eq11.transform(X)
    cos = Z[:4] @ Z[eq11.scorer_.inlier_mask_].T
    np.testing.assert_allclose(eq11.score_samples(X[:4]), cos.max(1) - 1.0, atol=1e-5)
    # K + 1 = 10 kept images at 90 % kept: at least ceil(10 / 0.9) = 12 training images
    with pytest.raises(ValueError, match="needs at least 12 training images"):
        clone(det).set_params(score_neighbors=9).fit(X[:10])
    plain = clone(det).set_params(memory_filter=None, score_neighbors=9)
    with pytest.raises(ValueError, match="needs at least 10 training images"):
        plain.fit(X[:9])
    with pytest.raises(ValueError, match="score_neighbors"):
        clone(det).set_params(score_neighbors=0).fit(X)


@pytest.mark.parametrize("memory_filter", ["pseudo_normality", "gmm"])
def test_memory_fraction_sets_the_share_filtered_apart_from_the_candidates(memory_filter):
    det = ConvexMILDetector(**TINY, abnormal_fraction=0.02, memory_filter=memory_filter)
    assert det._make_scorer().filter.contamination == 0.02  # None: abnormal_fraction
    det.set_params(memory_fraction=0.25)
    assert det._make_scorer().filter.contamination == 0.25
    X = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    det.set_params(n_epochs=1, batch_size=10, random_state=0).fit(X)
    assert det.scorer_.inlier_mask_.sum() == 15  # a quarter of the 20 dropped
    with pytest.raises(ValueError, match="memory_fraction"):
        clone(det).set_params(memory_fraction=0.6).fit(X)


def test_projection_head_carries_the_contrastive_terms(small_images, monkeypatch):
    initial = []
    build = ConvexMILDetector._projection_head

    def spy(self, n_features):
        head = build(self, n_features)
        initial.append({k: v.clone() for k, v in head.state_dict().items()})
        return head

    monkeypatch.setattr(ConvexMILDetector, "_projection_head", spy)
    det, centres = _fit_recording_centres(monkeypatch, small_images, n_epochs=2, projection_dim=8)
    head = det.projection_head_
    assert [type(m) for m in head] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (head[0].in_features, head[2].out_features) == (96, 8)
    # L_mean and its centre live in the head's space, on unit vectors ...
    _, z1, _ = centres[0]
    assert z1.shape == (4, 8) and det.center_.shape == (8,)
    torch.testing.assert_close(z1.norm(dim=1), torch.ones(4))
    # ... which L_conv and L_mean trained (lambda_rot=0 here), while the score
    # still reads the pooled features (eq. 11)
    assert not torch.allclose(head[2].weight, initial[0]["2.weight"])
    assert det.transform(small_images[:2]).shape == (2, 96)
    restored = pickle.loads(pickle.dumps(det))
    torch.testing.assert_close(restored.projection_head_[2].weight, head[2].weight)
    np.testing.assert_allclose(
        restored.score_samples(small_images), det.score_samples(small_images), atol=1e-6
    )
    assert ConvexMILDetector().projection_dim is None  # the paper's Z = f(X)


def test_variants_and_pickle(small_images):
    rotation_only = ConvexMILDetector(
        **TINY, n_epochs=1, batch_size=4, use_convex=False, lambda_mean=0.0, random_state=0
    ).fit(small_images)
    assert rotation_only.rotation_head_ is not None
    assert rotation_only.rotation_head_.out_features == 4
    no_rot = ConvexMILDetector(
        **TINY,
        n_epochs=1,
        batch_size=4,
        lambda_rot=0.0,
        sampling="inverse",
        convex_temperature=0.5,
        random_state=0,
    ).fit(small_images)
    assert no_rot.rotation_head_ is None
    restored = pickle.loads(pickle.dumps(no_rot))
    assert restored.rotation_head_ is None
    np.testing.assert_allclose(
        restored.score_samples(small_images), no_rot.score_samples(small_images), atol=1e-6
    )
    Z = no_rot.transform(small_images[:3])
    assert Z.shape == (3, 96) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    # eq. 11: score = max cosine similarity to the training embeddings, minus 1
    X_new = small_images[::-1].copy()
    X_new[:, :16] = 255 - X_new[:, :16]
    cos = no_rot.transform(X_new) @ no_rot.transform(small_images).T
    np.testing.assert_allclose(no_rot.score_samples(X_new), cos.max(1) - 1.0, atol=1e-5)


def test_nothing_to_train(small_images):
    det = ConvexMILDetector(**TINY, use_convex=False, lambda_rot=0.0, n_epochs=2)
    with pytest.raises(ValueError, match="nothing to train"):
        det.fit(small_images)
    with pytest.raises(ValueError, match="'batch_size' parameter"):
        ConvexMILDetector(**TINY, batch_size=1).fit(small_images)
    # L_mean never runs in the first epoch (no centre yet): one epoch of it alone trains nothing
    only_mean = {"use_convex": False, "lambda_rot": 0.0, "mean_shift_start_epoch": 0}
    with pytest.raises(ValueError, match="nothing to train.*runs from epoch 1"):
        ConvexMILDetector(**TINY, **only_mean, n_epochs=1).fit(small_images)
    with pytest.raises(ValueError, match="'n_trainable_blocks' parameter"):
        ConvexMILDetector(**TINY, n_trainable_blocks=0).fit(small_images)


def test_short_fits_reach_the_peak_learning_rate(small_images, monkeypatch):
    """A warm-up longer than the fit is cut so that its last step runs at ``learning_rate``
    (a fit of one step would otherwise train at the warm-up's 0)."""
    rates: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    one_step = {"n_epochs": 1, "batch_size": len(small_images), "random_state": 0}
    ConvexMILDetector(**TINY, **one_step, learning_rate=1e-3).fit(small_images)
    assert rates == [pytest.approx(1e-3)]  # warmup_epochs=10 by default
    rates.clear()
    ConvexMILDetector(**TINY, **{**one_step, "n_epochs": 3}, learning_rate=1e-3).fit(small_images)
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3])


def test_encoder_learns_at_its_fraction_of_the_learning_rate(small_images, monkeypatch):
    rates: list[list[float]] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        rates.append([group["lr"] for group in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    ConvexMILDetector(
        **TINY,
        n_epochs=2,
        warmup_epochs=1,
        batch_size=4,
        learning_rate=1e-3,
        encoder_lr_scale=0.1,
        projection_dim=4,
        random_state=0,
    ).fit(small_images)
    rates_ = np.array(rates)  # one row per step: encoder, rotation head, projection head
    assert rates_.shape == (4, 3)
    # the schedule (warm-up, cosine) is shared; the encoder gets a tenth of it
    np.testing.assert_allclose(rates_[:, 0], 0.1 * rates_[:, 1])
    np.testing.assert_array_equal(rates_[:, 1], rates_[:, 2])
    assert rates_[:, 1].max() > 0 and ConvexMILDetector().encoder_lr_scale == 1.0


def test_crop_scale_sets_the_views(small_images, monkeypatch):
    scales = []
    crop = cmil_module.RandomResizedCrop

    def spy(size, scale):
        scales.append(scale)
        return crop(size, scale=scale)

    monkeypatch.setattr(cmil_module, "RandomResizedCrop", spy)
    ConvexMILDetector(**TINY, n_epochs=1, batch_size=4, crop_scale=[0.2, 1.0]).fit(small_images)
    assert scales == [(0.2, 1.0)]
    assert ConvexMILDetector().crop_scale == (0.08, 1.0)  # the paper's inception crop
    with pytest.raises(
        ValueError, match=r"'crop_scale' parameter of ConvexMILDetector .*\(0.5, 0.1\)"
    ):
        ConvexMILDetector(**TINY, crop_scale=(0.5, 0.1)).fit(small_images)
