"""Numerical robustness of every registered loss (generated from the registry): half-precision
features, the logit scale at its clamp, and a batch of identical embeddings give a finite fp32 loss
and finite gradients."""

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import LOSSES

EXTRA = {"hcl": {"beta": 50.0}}  # a large beta, the hard case for HCL


def call(name, a, b, scale):
    loss_fn = mmcl.create_loss(name, **EXTRA.get(name, {}))
    if getattr(LOSSES.get(name), "pairing", "cross_modal") == "cross_modal":
        return loss_fn(a, b, scale, torch.tensor(-10.0))
    if name == "supcon":
        return loss_fn(a, b, torch.arange(a.shape[0]) % 3)
    if getattr(LOSSES.get(name), "pairing", "") == "dense":  # 4 locations per image, as DenseCL sees them
        cells = [t.unsqueeze(1).expand(-1, 4, -1) for t in (a, b)]
        return loss_fn(a, b, *cells, *cells)
    return loss_fn(a, b)


@pytest.mark.parametrize("name", mmcl.list_losses())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("identical", [False, True])
def test_finite_in_half_precision_at_the_scale_clamp(name, dtype, identical):
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    b = F.normalize(a + 0.1 * torch.randn(16, 32, generator=g), dim=-1)
    if identical:
        a = b = F.normalize(torch.ones(16, 32), dim=-1)
    a, b = a.to(dtype).requires_grad_(), b.to(dtype).requires_grad_()
    scale = torch.tensor(100.0, requires_grad=True)  # the clamp
    loss = call(name, a, b, scale)
    assert loss.dtype == torch.float32 and torch.isfinite(loss), loss
    loss.backward()
    for t in (a, b, scale):
        assert t.grad is None or torch.isfinite(t.grad).all(), name
