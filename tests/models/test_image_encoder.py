"""ImageEncoder (model.kind: image_image): shared and two-tower forward/backward, the SSL heads, and
the MoCo momentum key encoder (no gradient, not optimised, EMA update)."""

import pytest
import torch

from mmcl.models import ImageEncoder, create_model
from mmcl.models.heads import projection_head
from mmcl.recipe import ModelConfig, TrainConfig, VisionConfig
from mmcl.train.optim import create_optimizer

from ..conftest import TINY_VIT

TINY_RESNET = {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16]}}


def config(**kw) -> ModelConfig:
    kw.setdefault("vision", VisionConfig(**TINY_VIT))
    return ModelConfig(kind="image_image", embed_dim=8, **kw)


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def grads(module):
    return [p.grad for p in module.parameters() if p.requires_grad]


def test_shared_tower_forward_backward():
    model = create_model(config(head="mlp"))
    assert isinstance(model, ImageEncoder) and model.vision2 is None and model.key_encoder is None
    out = model(images(), images(seed=1))
    assert out.embeds.shape == out.embeds2.shape == (4, 8)
    torch.testing.assert_close(out.embeds.norm(dim=1), torch.ones(4))
    (out.embeds * out.embeds2).sum().backward()
    assert all(g is not None and g.abs().sum() > 0 for g in grads(model.vision))
    # both images went through the one tower: encode_image2 is encode_image
    x = images(seed=2)
    torch.testing.assert_close(model.encode_image2(x), model.encode_image(x))


def test_two_towers_of_different_architectures_forward_backward():
    model = create_model(config(head="linear", vision2=VisionConfig(**TINY_RESNET)))
    assert model.vision2 is not None and model.image2_proj is not model.image_proj
    out = model(images(), images(seed=1))
    assert out.embeds.shape == out.embeds2.shape == (4, 8)
    (out.embeds @ out.embeds2.T).diag().sum().backward()
    for tower in (model.vision, model.vision2, model.image_proj, model.image2_proj):
        # (timm zero-initialises each ResNet block's last BN, so some weights start with a zero gradient)
        assert all(g is not None for g in grads(tower)) and sum(g.abs().sum() for g in grads(tower)) > 0
    # the probes read the first tower's backbone features
    assert model.features(images()).shape == (4, model.vision.num_features)


@pytest.mark.parametrize("kind, has_bn", [("simclr", True), ("mocov2", False)])
def test_ssl_heads(kind, has_bn):
    head = projection_head(12, 6, kind)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == has_bn
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 12), (12, 6)]
    assert head(torch.randn(5, 12)).shape == (5, 6)
    with pytest.raises(ValueError, match="valid choices: linear, mlp, simclr, mocov2"):
        projection_head(4, 4, "byol")


def test_momentum_key_encoder_has_no_gradient_and_follows_the_ema():
    model = create_model(config(head="mocov2", momentum=0.9))
    key = model.key_encoder
    assert key is not None and not any(p.requires_grad for p in key.parameters())
    # starts as a copy of the online branch
    for (name, a), b in zip(key["vision"].named_parameters(), model.vision.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    out = model(images(), images(seed=1))
    assert not out.embeds2.requires_grad and out.embeds.requires_grad
    # the optimizer never sees the key encoder
    optimizer = create_optimizer(model, TrainConfig())
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in key.parameters()}
    out.embeds.sum().backward()
    optimizer.step()
    before = [p.detach().clone() for p in key.parameters()]
    online = [p.detach().clone() for p in list(model.vision.parameters()) + list(model.image_proj.parameters())]
    model.momentum_update()
    changed = 0
    for old, new, o in zip(before, key.parameters(), online):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * o)
        changed += int(not torch.equal(new, old))
    assert changed > 0


def test_two_towers_momentum_follows_the_second_tower():
    model = create_model(config(momentum=0.5, vision2=VisionConfig(**TINY_RESNET)))
    assert type(model.key_encoder["vision"].trunk) is type(model.vision2.trunk)
    with torch.no_grad():
        for p in model.vision2.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.key_encoder["vision"].parameters()]
    model.momentum_update()
    for old, new, o in zip(before, model.key_encoder["vision"].parameters(), model.vision2.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * o)


@pytest.mark.parametrize("vision", [TINY_RESNET, TINY_VIT], ids=["cnn", "vit"])
def test_dense_head_outputs_per_location_and_its_key_copy_follows_the_ema(vision):
    model = create_model(config(vision=VisionConfig(**vision), dense=True, momentum=0.5, head="mocov2"))
    x = images()
    with torch.no_grad():  # the pooled path of the dense forward equals the plain tower
        fmap = model.vision.forward_map(x)
        torch.testing.assert_close(model.vision.pool(fmap), model.vision(x))
    out = model(x, images(seed=1))
    grid = model.vision.dense_features(x).shape[2:]
    s = grid[0] * grid[1]
    assert out.dense.shape == out.dense2.shape == (4, s, 8)
    assert out.feature_map.shape == (4, s, model.vision.num_features)
    torch.testing.assert_close(out.dense.norm(dim=-1), torch.ones(4, s))
    assert not out.dense2.requires_grad and out.dense.requires_grad
    (out.embeds.sum() + out.dense.sum()).backward()
    assert all(g is not None for g in grads(model.dense_proj))
    assert not any(p.grad is not None for p in model.key_encoder.parameters())
    before = [p.clone() for p in model.key_encoder["dense"].parameters()]
    with torch.no_grad():
        for p in model.dense_proj.parameters():
            p.add_(1.0)
    model.momentum_update()
    for b, k, o in zip(before, model.key_encoder["dense"].parameters(), model.dense_proj.parameters()):
        torch.testing.assert_close(k, 0.5 * b + 0.5 * o)
