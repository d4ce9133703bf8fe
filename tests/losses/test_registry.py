"""Generated from the loss registry: every registered loss is a ContrastiveLoss that declares what it
needs, runs on tiny features the way its declaration says it is called, and gives a finite scalar
with gradients. A loss registered without a case here fails."""

import pytest
import torch
import torch.nn.functional as F

import mmcl
from mmcl.losses import LOSSES, ContrastiveLoss, register_loss
from mmcl.losses.base import call_cross_modal, call_image_image

# kwargs each loss needs for a tiny batch of 8 (queues and banks sized down)
KWARGS = {
    "infonce": {},
    "siglip": {},
    "triplet": {},
    "ntxent": {},
    "hcl": {},
    "dcl": {},
    "dclw": {},
    "supcon": {},
    "moco": {"queue_size": 16},
    "densecl": {"queue_size": 16},
    "cluster_infonce": {"k": 2, "bank_size": 16},
}


def test_every_loss_has_a_case():
    assert set(mmcl.list_losses()) == set(KWARGS), "add kwargs for each new loss to KWARGS"


@pytest.mark.parametrize("name", mmcl.list_losses())
def test_loss_runs_as_declared(name):
    torch.manual_seed(0)
    loss_fn = mmcl.create_loss(name, **KWARGS[name])
    assert isinstance(loss_fn, ContrastiveLoss)
    assert loss_fn.pairing in ("cross_modal", "two_view", "dense")
    z0 = F.normalize(torch.randn(8, 16), dim=-1).requires_grad_()
    z1 = F.normalize(torch.randn(8, 16), dim=-1).requires_grad_()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0) if loss_fn.needs_bias else None
    loss_fn.set_batch({"index": torch.arange(8)} if "index" in loss_fn.batch_inputs else {})
    if loss_fn.pairing == "dense":
        dense = [F.normalize(torch.randn(8, 4, 16), dim=-1) for _ in range(2)] + [torch.randn(8, 4, 16)] * 2
        loss = call_image_image(loss_fn, z0, z1, scale, dense=dense)
    elif loss_fn.needs_labels:
        loss = call_image_image(loss_fn, z0, z1, scale, labels=torch.arange(8) % 3)
    else:
        loss = call_cross_modal(loss_fn, z0, z1, scale, bias)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert z0.grad is not None and torch.isfinite(z0.grad).all()


def test_register_loss_requires_the_base_class():
    with pytest.raises(TypeError, match="must be a subclass of mmcl.losses.ContrastiveLoss"):

        @register_loss("not_a_contrastive_loss")
        class Plain(torch.nn.Module):
            pass

    assert "not_a_contrastive_loss" not in LOSSES
