"""InfoNCE against hand-written math and against open_clip's ClipLoss (value and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import InfoNCELoss


def reference_infonce(img, txt, scale):
    """Written from the formula, one row at a time."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        row = torch.stack([scale * img[i] @ txt[j] for j in range(n)])
        col = torch.stack([scale * txt[i] @ img[j] for j in range(n)])
        total = total - torch.log_softmax(row, 0)[i] - torch.log_softmax(col, 0)[i]
    return total / (2 * n)


def features(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1).requires_grad_()
    scale = torch.tensor(1 / 0.07, dtype=dtype, requires_grad=True)
    return img, txt, scale


@pytest.mark.parametrize("n,d", [(2, 3), (6, 5), (17, 8)])
def test_matches_handwritten_reference(n, d):
    img, txt, scale = features(n, d)
    loss = mmcl.create_loss("infonce")(img, txt, scale)
    ref = reference_infonce(img, txt, scale)
    assert loss.dim() == 0
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)


def test_matches_open_clip_loss_and_gradients():
    from open_clip.loss import ClipLoss

    ours_in, theirs_in = features(12, 16, seed=1), features(12, 16, seed=1)
    ours = InfoNCELoss()(*ours_in)
    theirs = ClipLoss()(*theirs_in)
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-6, atol=1e-7)
    ours.backward()
    theirs.backward()
    for a, b in zip(ours_in, theirs_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-8)


def test_perfect_alignment_gives_small_loss_and_uniform_gives_log_n():
    eye = torch.eye(8, dtype=torch.float64)
    assert InfoNCELoss()(eye, eye, torch.tensor(100.0, dtype=torch.float64)).item() < 1e-6
    same = F.normalize(torch.ones(8, 4, dtype=torch.float64), dim=-1)
    assert math.isclose(InfoNCELoss()(same, same, torch.tensor(10.0)).item(), math.log(8), rel_tol=1e-6)


def test_label_smoothing_changes_loss_and_is_validated():
    img, txt, scale = features()
    assert not torch.isclose(InfoNCELoss(label_smoothing=0.1)(img, txt, scale), InfoNCELoss()(img, txt, scale))
    with pytest.raises(ValueError, match="label_smoothing"):
        InfoNCELoss(label_smoothing=1.5)


def test_fp16_features_give_fp32_finite_loss():
    img, txt, _ = features(dtype=torch.float32)
    loss = InfoNCELoss()(img.detach().half(), txt.detach().half(), torch.tensor(100.0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_shape_mismatch_and_unknown_loss_fail_clearly():
    with pytest.raises(ValueError, match="differ in shape"):
        InfoNCELoss()(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))
    with pytest.raises(KeyError, match="valid choices: .*infonce"):
        mmcl.create_loss("nope")


@pytest.mark.parametrize("chunk", [1, 5, 7, 64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_equals_dense_value_and_gradients(chunk, smoothing):
    dense_in, chunked_in = features(13, 6, seed=3), features(13, 6, seed=3)
    dense = InfoNCELoss(label_smoothing=smoothing)(*dense_in)
    chunked = InfoNCELoss(label_smoothing=smoothing, chunk_size=chunk)(*chunked_in)
    torch.testing.assert_close(chunked, dense, rtol=1e-12, atol=1e-12)
    dense.backward()
    chunked.backward()
    for a, b in zip(chunked_in, dense_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size"):
        InfoNCELoss(chunk_size=0)
