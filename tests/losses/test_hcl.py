"""HCL against the paper's formula, == NT-Xent at beta = 0 and tau_plus = 0, and numerically safe."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import HCLLoss, NTXentLoss


def views(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z1 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return z0, z1


def reference_hcl(z0, z1, t, tau_plus, beta):
    """Robinson et al.'s estimator in plain exp space, one anchor at a time (fine for small beta / t)."""
    v = F.normalize(torch.cat([z0, z1]), dim=-1)
    n2 = v.shape[0]
    m = n2 - 2
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        pos = torch.exp(v[i] @ v[p] / t)
        neg = torch.stack([torch.exp(v[i] @ v[k] / t) for k in range(n2) if k not in (i, p)])
        imp = neg**beta
        reweighted = (imp * neg).sum() / imp.mean()
        ng = torch.clamp((-tau_plus * m * pos + reweighted) / (1 - tau_plus), min=m * math.exp(-1 / t))
        total = total - torch.log(pos / (pos + ng))
    return total / n2


@pytest.mark.parametrize("n,d", [(2, 3), (5, 4), (8, 6)])
@pytest.mark.parametrize(
    "t,tau_plus,beta", [(0.5, 0.1, 1.0), (0.5, 0.0, 0.0), (0.2, 0.3, 0.5), (1.0, 0.1, 3.0), (0.2, 0.0, 0.5)]
)  # the last: recipes/simclr-quickstart.yaml
def test_matches_handwritten_reference(n, d, t, tau_plus, beta):
    z0, z1 = views(n, d)
    loss = mmcl.create_loss("hcl", temperature=t, tau_plus=tau_plus, beta=beta)(z0, z1)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_hcl(z0, z1, t, tau_plus, beta), rtol=1e-9, atol=1e-10)


def test_clamp_branch_matches_reference():
    # a large tau_plus pushes R - tau_plus M pos below the floor for some anchors
    z0, z1 = views(6, 4, seed=3)
    loss = HCLLoss(temperature=0.5, tau_plus=0.9, beta=1.0)(z0, z1)
    torch.testing.assert_close(loss, reference_hcl(z0, z1, 0.5, 0.9, 1.0), rtol=1e-9, atol=1e-10)
    loss.backward()
    assert torch.isfinite(z0.grad).all() and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_beta0_tau0_equals_ntxent_with_gradients(t):
    a, b = views(8, 6, seed=2), views(8, 6, seed=2)
    ours = HCLLoss(temperature=t, tau_plus=0.0, beta=0.0)(*a)
    ref = NTXentLoss(temperature=t)(*b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    ours.backward()
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_beta_is_finite(dtype):
    z0, z1 = views(16, 8, dtype=dtype)
    loss = HCLLoss(temperature=0.1, beta=50.0)(z0, z1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z0.grad).all() and torch.isfinite(z1.grad).all()


def test_identical_embeddings_are_finite_with_known_value():
    x = torch.ones(6, 4, dtype=torch.float32, requires_grad=True)
    loss = HCLLoss(beta=50.0)(x, x)
    loss.backward()
    # all logits equal 1/t: R = M e^{1/t}, Ng = M e^{1/t} (tau_plus cancels), loss = log(1 + M)
    assert math.isclose(loss.item(), math.log(11), rel_tol=1e-6)
    assert torch.isfinite(x.grad).all()


def test_argument_validation():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        HCLLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"tau_plus must be in \[0, 1\)"):
        HCLLoss(tau_plus=1.0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        HCLLoss(beta=-1.0)
    with pytest.raises(ValueError, match="both rank and world_size"):
        HCLLoss(rank=0)
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        HCLLoss()(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least two samples"):
        HCLLoss()(torch.ones(1, 4), torch.ones(1, 4))


def test_fp16_views_give_fp32_finite_loss():
    z0, z1 = views(dtype=torch.float32)
    loss = HCLLoss(temperature=0.05, beta=10.0)(z0.detach().half(), z1.detach().half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
