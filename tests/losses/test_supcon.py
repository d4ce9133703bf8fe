"""SupCon against hand-written math, and == NT-Xent when all labels are distinct."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import NTXentLoss, SupConLoss


def views(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z1 = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, max(1, n // 2), (n,), generator=g)
    return z0, z1, labels


def reference_supcon(z0, z1, labels, t, t_base):
    """L_out from the paper, one anchor at a time; anchors without positives add 0; mean over all views."""
    v = F.normalize(torch.cat([z0, z1]) if z1 is not None else z0, dim=-1)
    y = torch.cat([labels, labels]) if z1 is not None else labels
    total = 0.0
    for i in range(v.shape[0]):
        others = [a for a in range(v.shape[0]) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denom = sum(torch.exp(v[i] @ v[a] / t) for a in others)
        mean_log = sum(torch.log(torch.exp(v[i] @ v[p] / t) / denom) for p in positives) / len(positives)
        total = total - (t / t_base) * mean_log
    return total / v.shape[0]


GRID = [(1, 3, 0.1, 0.1), (4, 3, 0.1, 0.07), (7, 5, 0.5, 0.1), (10, 8, 0.2, 0.2)]


@pytest.mark.parametrize(
    "n,d,t,t_base,two_views",
    [(*g, True) for g in GRID] + [(*g, False) for g in GRID if g[0] > 1],  # one view of one sample: no contrast
)
def test_matches_handwritten_reference(n, d, t, t_base, two_views):
    z0, z1, labels = views(n, d)
    z1 = z1 if two_views else None
    loss = mmcl.create_loss("supcon", temperature=t, base_temperature=t_base)(z0, z1, labels)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_supcon(z0, z1, labels, t, t_base), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_distinct_labels_equal_ntxent_with_gradients(t):
    a, b = views(8, 6, seed=2)[:2], views(8, 6, seed=2)[:2]
    ours = SupConLoss(temperature=t, base_temperature=t)(*a, torch.arange(8))
    ref = NTXentLoss(temperature=t)(*b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    ours.backward()
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)


def test_anchors_without_positives_contribute_zero():
    z0, _, _ = views(4, 3)
    # samples 0 and 1 share a label; 2 and 3 are alone: only 2 of the 4 anchors have a loss term
    loss = SupConLoss()(z0, None, torch.tensor([5, 5, 6, 7]))
    logits = F.normalize(z0, dim=-1) @ F.normalize(z0, dim=-1).T / 0.1
    term = lambda i, p: -torch.log_softmax(logits[i, [k for k in range(4) if k != i]], 0)[p - (p > i)]  # noqa: E731
    torch.testing.assert_close(loss, (term(0, 1) + term(1, 0)) / 4)
    # a single view of two samples with one class: every other view is a positive, loss = 0
    assert SupConLoss()(z0[:2], None, torch.tensor([1, 1])).item() == pytest.approx(0.0, abs=1e-12)
    same = torch.ones(4, 3, dtype=torch.float64)  # uniform similarities: log(2n - 1) whatever the labels
    assert math.isclose(SupConLoss()(same, same, torch.zeros(4, dtype=torch.long)).item(), math.log(7), rel_tol=1e-9)
    assert math.isclose(SupConLoss()(same, same, torch.arange(4)).item(), math.log(7), rel_tol=1e-9)


def test_argument_validation():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SupConLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="base_temperature must be > 0"):
        SupConLoss(base_temperature=0.0)
    with pytest.raises(ValueError, match="both rank and world_size"):
        SupConLoss(world_size=2)
    z0, z1, labels = views(4, 3)
    with pytest.raises(ValueError, match="integer labels of shape"):
        SupConLoss()(z0, z1, labels[:3])
    with pytest.raises(ValueError, match="integer labels of shape"):
        SupConLoss()(z0, z1, labels.double())
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        SupConLoss()(z0, z1[:2], labels)
    with pytest.raises(ValueError, match="at least two views"):
        SupConLoss()(z0[:1], None, labels[:1])


def test_fp16_views_give_fp32_finite_loss():
    z0, z1, labels = views(dtype=torch.float32)
    loss = SupConLoss()(z0.detach().half(), z1.detach().half(), labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
