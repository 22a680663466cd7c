"""ssad.nn: DINO head, DINO loss (centring), uniform loss, EMA update."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssad.nn import DINOHead, DINOLoss, UniformLoss, WeightNormLinear, update_ema


def test_weight_norm_linear_rows_have_norm_g():
    torch.manual_seed(0)
    layer = WeightNormLinear(5, 3)
    with torch.no_grad():
        layer.weight_g.copy_(torch.tensor([[1.0], [2.0], [0.5]]))
    np_norms = layer.weight.norm(dim=1)
    torch.testing.assert_close(np_norms, torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(4, 5)
    torch.testing.assert_close(layer(x), x @ layer.weight.T)
    assert set(layer.state_dict()) == {"weight_g", "weight_v"}  # DINO checkpoint keys


@pytest.mark.parametrize("n_layers", [1, 3])
def test_dino_head_shapes_and_frozen_norms(n_layers):
    torch.manual_seed(0)
    head = DINOHead(16, 10, hidden_dim=8, bottleneck_dim=4, n_layers=n_layers)
    out = head(torch.randn(6, 16)).detach()
    assert out.shape == (6, 10)
    assert not head.last_layer.weight_g.requires_grad  # norm_last_layer=True
    # the bottleneck is unit-norm and the last layer's rows too: |logits| <= 1
    assert float(out.abs().max()) <= 1.0 + 1e-5
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == n_layers
    free = DINOHead(16, 10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=False, use_bn=True)
    assert free.last_layer.weight_g.requires_grad
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in free.mlp)


def _manual_dino_loss(student, teacher, center, t_temp, s_temp=0.1):
    total, n = 0.0, 0
    for it, t in enumerate(teacher):
        q = F.softmax((t - center) / t_temp, dim=-1)
        for iv, s in enumerate(student):
            if iv == it:
                continue
            total += torch.sum(-q * F.log_softmax(s / s_temp, dim=-1), dim=-1).mean()
            n += 1
    return total / n


def test_dino_loss_matches_definition_and_skips_same_view():
    torch.manual_seed(0)
    student = [torch.randn(4, 8, requires_grad=True) for _ in range(4)]
    teacher = [torch.randn(4, 8) for _ in range(2)]
    loss_fn = DINOLoss(8)
    loss = loss_fn(student, teacher, teacher_temperature=0.05)
    torch.testing.assert_close(loss, _manual_dino_loss(student, teacher, torch.zeros(1, 8), 0.05))
    loss.backward()
    assert all(s.grad is not None for s in student)
    # only a teacher view and the same student view: nothing to compare
    with pytest.raises(ValueError, match="at least one teacher view and two student views"):
        DINOLoss(8)(student[:1], teacher[:1], teacher_temperature=0.05)


def test_dino_loss_centring():
    torch.manual_seed(0)
    teacher = [torch.randn(5, 6) for _ in range(2)]
    student = [torch.randn(5, 6) for _ in range(3)]
    loss_fn = DINOLoss(6, center_momentum=0.9)
    assert torch.equal(loss_fn.center, torch.zeros(1, 6))
    loss_fn(student, teacher, teacher_temperature=0.04)
    batch_mean = torch.cat(teacher).mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, 0.1 * batch_mean)
    center_1 = loss_fn.center.clone()
    teacher_2 = [torch.randn(5, 6) for _ in range(2)]
    loss = loss_fn(student, teacher_2, teacher_temperature=0.04)
    # the centre used is the one before the update, then it moves by EMA
    torch.testing.assert_close(loss, _manual_dino_loss(student, teacher_2, center_1, 0.04))
    expected = 0.9 * center_1 + 0.1 * torch.cat(teacher_2).mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, expected)
    assert "center" in loss_fn.state_dict()
    # a teacher equal to the centre gives the uniform target
    fresh = DINOLoss(6, center_momentum=0.9)
    fresh.center.copy_(teacher[0][:1])
    flat = [teacher[0][:1].expand(5, 6)] * 2
    uniform = _manual_dino_loss(student[:2], flat, teacher[0][:1], 0.04)
    log_p = [F.log_softmax(s / 0.1, dim=-1) for s in student[:2]]
    by_hand = torch.stack([-lp.mean(dim=-1).mean() for lp in log_p[::-1]]).mean()
    torch.testing.assert_close(uniform, by_hand)


def test_uniform_loss_is_minimal_exactly_at_uniform():
    K = 10
    loss_fn = UniformLoss(student_temperature=0.1)
    at_uniform = loss_fn(torch.full((3, K), 2.5))
    assert math.isclose(float(at_uniform), math.log(K), rel_tol=1e-6)
    z = torch.zeros(3, K, requires_grad=True)
    loss_fn(z).backward()
    assert float(z.grad.abs().max()) < 1e-7  # stationary at the uniform softmax
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(3, K) * 0.3
        value = float(loss_fn(logits))
        p = F.softmax(logits / 0.1, dim=-1)
        kl = float((torch.full_like(p, 1 / K) * (math.log(1 / K) - p.log())).sum(-1).mean())
        assert value > math.log(K)
        assert math.isclose(value, math.log(K) + kl, rel_tol=1e-5)
    # a list of view outputs is concatenated
    value = float(loss_fn([torch.zeros(2, K), torch.zeros(1, K)]))
    assert math.isclose(value, math.log(K), rel_tol=1e-6)


def test_update_ema():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        student[1].running_mean.fill_(5.0)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    update_ema(teacher, student, 0.75)
    for name, _ in teacher.named_parameters():
        torch.testing.assert_close(teacher.state_dict()[name], 0.75 * t0[name] + 0.25 * s0[name])
    # buffers are copied: the teacher runs in eval mode and cannot estimate them itself
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    update_ema(teacher, student, 0.0)
    assert torch.equal(teacher[0].weight, student[0].weight)
    before = teacher[0].weight.clone()
    update_ema(teacher, student, 1.0)
    assert torch.equal(teacher[0].weight, before)
    with pytest.raises(ValueError, match="same architecture"):
        update_ema(teacher, torch.nn.Linear(3, 2), 0.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        update_ema(teacher, student, 1.5)
