"""NT-Xent against hand-written math and against lightly's NTXentLoss (value and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import NTXentLoss


def views(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z1 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return z0, z1


def reference_ntxent(z0, z1, t):
    """Written from the formula, one anchor at a time, over the 2n views [z0; z1]."""
    v = F.normalize(torch.cat([z0, z1]), dim=-1)
    n2 = v.shape[0]
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        denom = sum(torch.exp(v[i] @ v[k] / t) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(v[i] @ v[p] / t) / denom)
    return total / n2


@pytest.mark.parametrize("n,d,t", [(1, 3, 0.5), (2, 3, 0.5), (6, 5, 0.1), (9, 8, 1.0)])
def test_matches_handwritten_reference(n, d, t):
    z0, z1 = views(n, d)
    loss = mmcl.create_loss("ntxent", temperature=t)(z0, z1)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_ntxent(z0, z1, t), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_matches_lightly_loss_and_gradients(t):
    from lightly.loss import NTXentLoss as LightlyNTXent

    ours_in, theirs_in = views(10, 7, seed=1), views(10, 7, seed=1)
    ours = NTXentLoss(temperature=t)(*ours_in)
    theirs = LightlyNTXent(temperature=t, gather_distributed=True)(*theirs_in)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)


def test_known_values():
    same = torch.ones(5, 3, dtype=torch.float64)  # all similarities equal: uniform over 2n - 1 columns
    assert math.isclose(NTXentLoss()(same, same).item(), math.log(9), rel_tol=1e-9)
    eye = torch.eye(4, dtype=torch.float64)  # views agree, samples orthogonal, t small: loss -> 0
    assert NTXentLoss(temperature=0.01)(eye, eye).item() < 1e-12


def test_normalize_flag():
    z0, z1 = views()
    n0, n1 = F.normalize(z0, dim=-1), F.normalize(z1, dim=-1)
    torch.testing.assert_close(NTXentLoss(normalize=False)(n0, n1), NTXentLoss()(z0, z1))
    assert not torch.isclose(NTXentLoss(normalize=False)(3 * n0, n1), NTXentLoss()(z0, z1))


def test_argument_validation():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError, match="both rank and world_size"):
        NTXentLoss(rank=0)
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        NTXentLoss()(torch.zeros(3, 4), torch.zeros(2, 4))


def test_fp16_views_give_fp32_finite_loss():
    z0, z1 = views(dtype=torch.float32)
    loss = NTXentLoss(temperature=0.05)(z0.detach().half(), z1.detach().half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
