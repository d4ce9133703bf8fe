"""DCL and DCLW against hand-written math and against lightly's DCLLoss / DCLWLoss."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import DCLLoss, DCLWLoss


def views(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z1 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return z0, z1


def reference_dcl(z0, z1, t, sigma=None):
    """One anchor at a time: -w s_pos / t + log sum over the 2n - 2 negatives; w from the whole batch."""
    a, b = F.normalize(z0, dim=-1), F.normalize(z1, dim=-1)
    v, n = torch.cat([a, b]), a.shape[0]
    if sigma is None:
        w = torch.ones(n, dtype=v.dtype)
    else:
        sims = torch.stack([a[i].detach() @ b[i].detach() / sigma for i in range(n)])
        w = 2 - n * torch.exp(sims) / torch.exp(sims).sum()
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        negatives = sum(torch.exp(v[i] @ v[k] / t) for k in range(2 * n) if k not in (i, p))
        total = total - w[i % n] * (v[i] @ v[p]) / t + torch.log(negatives)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.1), (5, 4, 0.5), (9, 8, 0.2)])
@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
def test_matches_handwritten_reference(n, d, t, sigma):
    z0, z1 = views(n, d)
    if sigma is None:
        loss = mmcl.create_loss("dcl", temperature=t)(z0, z1)
    else:
        loss = mmcl.create_loss("dclw", temperature=t, sigma=sigma)(z0, z1)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_dcl(z0, z1, t, sigma), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_lightly_loss_and_gradients(weighted):
    from lightly.loss import DCLLoss as LightlyDCL
    from lightly.loss import DCLWLoss as LightlyDCLW

    ours_in, theirs_in = views(10, 7, seed=1), views(10, 7, seed=1)
    ours = (DCLWLoss() if weighted else DCLLoss())(*ours_in)
    theirs = (LightlyDCLW() if weighted else LightlyDCL())(*theirs_in)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-9, atol=1e-10)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)


def test_known_values_and_negative_loss():
    same = torch.ones(4, 3, dtype=torch.float64)  # all similarities 1: -1/t + log(6 e^{1/t}) = log 6
    assert math.isclose(DCLLoss()(same, same).item(), math.log(6), rel_tol=1e-9)
    assert math.isclose(DCLWLoss()(same, same).item(), math.log(6), rel_tol=1e-9)  # uniform softmax: w = 1
    eye = torch.eye(4, dtype=torch.float64)  # positives 1, negatives 0: -1/t + log 6 < 0
    assert math.isclose(DCLLoss(temperature=0.1)(eye, eye).item(), -10 + math.log(6), rel_tol=1e-9)


def test_argument_validation():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DCLLoss(temperature=0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        DCLWLoss(sigma=-0.5)
    with pytest.raises(ValueError, match="both rank and world_size"):
        DCLWLoss(rank=1)
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        DCLLoss()(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least two samples"):
        DCLLoss()(torch.ones(1, 4), torch.ones(1, 4))


@pytest.mark.parametrize("cls", [DCLLoss, DCLWLoss])
def test_fp16_views_give_fp32_finite_loss(cls):
    z0, z1 = views(dtype=torch.float32)
    loss = cls(temperature=0.05)(z0.detach().half(), z1.detach().half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
