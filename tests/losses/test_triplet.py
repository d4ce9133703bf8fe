"""VSE++ max-violation triplet loss against hand-written math."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import TripletLoss


def features(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    return img, txt


def reference_triplet(img, txt, margin):
    """Hardest negative per anchor, both directions; mean over the 2n anchors (VSE++ sums)."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        costs_txt = [max(0.0, margin + float(img[i] @ txt[j]) - float(img[i] @ txt[i])) for j in range(n) if j != i]
        costs_img = [max(0.0, margin + float(img[j] @ txt[i]) - float(img[i] @ txt[i])) for j in range(n) if j != i]
        total += max(costs_txt) + max(costs_img)
    return total / (2 * n)


@pytest.mark.parametrize("n,d", [(2, 3), (6, 5), (17, 8)])
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.0])
def test_matches_handwritten_reference(n, d, margin):
    img, txt = features(n, d)
    loss = mmcl.create_loss("triplet", margin=margin)(img, txt, torch.tensor(14.0))
    assert loss.dim() == 0
    assert math.isclose(loss.item(), reference_triplet(img, txt, margin), rel_tol=1e-12, abs_tol=1e-14)


def test_gradient_flows_to_hardest_negative_only():
    img, txt = features(5, 4, seed=3)
    TripletLoss(margin=3.0)(img, txt).backward()  # every hinge active
    scores = (img @ txt.T).detach()
    hardest = scores.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf")).argmax(dim=1)
    # d loss / d img_i = (1/2n) [(txt_hardest(i) - txt_i) + sum over text anchors whose hardest image is i (...)]
    expected = torch.zeros_like(img)
    hardest_img = scores.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf")).argmax(dim=0)
    for i in range(5):
        expected[i] += txt[hardest[i]].detach() - txt[i].detach()
        expected[hardest_img[i]] += txt[i].detach()
        expected[i] -= txt[i].detach()
    torch.testing.assert_close(img.grad, expected / 10)


def test_known_values():
    eye = torch.eye(4, dtype=torch.float64)  # positives 1, negatives 0: every hinge is relu(margin - 1)
    assert TripletLoss(margin=0.2)(eye, eye).item() == 0.0
    assert math.isclose(TripletLoss(margin=1.5)(eye, eye).item(), 0.5, rel_tol=1e-12)


def test_argument_validation():
    with pytest.raises(ValueError, match="margin must be >= 0"):
        TripletLoss(margin=-0.1)
    with pytest.raises(ValueError, match="both rank and world_size"):
        TripletLoss(world_size=2)
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        TripletLoss()(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least two pairs"):
        TripletLoss()(torch.ones(1, 4), torch.ones(1, 4))


def test_fp16_features_give_fp32_finite_loss():
    img, txt = features(dtype=torch.float32)
    loss = TripletLoss()(img.detach().half(), txt.detach().half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
