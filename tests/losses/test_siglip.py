"""SigLIP against hand-written math and against open_clip's SigLipLoss (value and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import SigLipLoss


def features(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-10.0, dtype=dtype, requires_grad=True)
    return img, txt, scale, bias


def reference_siglip(img, txt, scale, bias):
    """-(1/n) sum_ij log sigmoid(z_ij (scale x_i.y_j + bias)), pair by pair."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(z * (scale * img[i] @ txt[j] + bias)))
    return total / n


@pytest.mark.parametrize("n,d", [(1, 3), (2, 3), (6, 5), (13, 8)])
@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (1.0, 0.0), (3.0, 2.0)])
def test_matches_handwritten_reference(n, d, scale, bias):
    img, txt, _, _ = features(n, d)
    s, b = torch.tensor(scale, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    loss = mmcl.create_loss("siglip")(img, txt, s, b)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, reference_siglip(img, txt, s, b), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_open_clip_loss_and_gradients(dtype):
    from open_clip.loss import SigLipLoss as OpenClipSigLip

    ours_in, theirs_in = features(12, 16, seed=1, dtype=dtype), features(12, 16, seed=1, dtype=dtype)
    ours = SigLipLoss()(*ours_in)
    theirs = OpenClipSigLip()(*theirs_in)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, **tol)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in):
        torch.testing.assert_close(a.grad, b.grad, **tol)


def test_known_values():
    # scale 0, bias 0: every pair gives log 2, n^2 pairs over n
    img, txt, _, _ = features(4, 3)
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert math.isclose(SigLipLoss()(img, txt, zero, zero).item(), 4 * math.log(2), rel_tol=1e-9)
    # huge logits stay finite (no log(sigmoid()) underflow): wrong-sign pairs cost about |logit|
    eye = torch.eye(3, dtype=torch.float64)
    loss = SigLipLoss()(eye, eye, torch.tensor(1000.0, dtype=torch.float64), torch.tensor(-2000.0, dtype=torch.float64))
    assert math.isclose(loss.item(), 1000.0, rel_tol=1e-9)  # the 3 positives at -1000 each, / 3


def test_argument_validation():
    img, txt, scale, _ = features(3, 4)
    with pytest.raises(ValueError, match="logit_bias"):
        SigLipLoss()(img, txt, scale)
    with pytest.raises(ValueError, match=r"equal shape \(B, D\)"):
        SigLipLoss()(img, txt[:2], scale, torch.tensor(0.0))
    with pytest.raises(ValueError, match="both rank and world_size"):
        SigLipLoss(rank=0)


def test_fp16_features_give_fp32_finite_loss():
    img, txt, _, _ = features(dtype=torch.float32)
    loss = SigLipLoss()(img.detach().half(), txt.detach().half(), torch.tensor(10.0), torch.tensor(-10.0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_python_float_scale_and_bias_are_accepted():
    img, txt, scale, bias = features(5, 4)
    torch.testing.assert_close(SigLipLoss()(img, txt, 10.0, -10.0), SigLipLoss()(img, txt, scale, bias))


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_chunked_equals_dense_value_and_gradients(chunk):
    from mmcl.losses import SigLipLoss

    def leaves(seed=5):
        g = torch.Generator().manual_seed(seed)
        x = torch.nn.functional.normalize(torch.randn(11, 7, generator=g, dtype=torch.float64), dim=-1)
        y = torch.nn.functional.normalize(torch.randn(11, 7, generator=g, dtype=torch.float64), dim=-1)
        scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
        return [t.requires_grad_() for t in (x, y, scale, bias)]

    dense_in, chunked_in = leaves(), leaves()
    dense = SigLipLoss()(*dense_in)
    chunked = SigLipLoss(chunk_size=chunk)(*chunked_in)
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-12)
    dense.backward()
    chunked.backward()
    for a, b in zip(chunked_in, dense_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size"):
        SigLipLoss(chunk_size=0)
