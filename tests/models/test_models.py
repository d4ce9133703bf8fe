"""Dual encoder forward/backward over timm and Hugging Face towers, including the packaged MiniLM."""

import math

import pytest
import torch

import mmcl
from mmcl.data import Tokenize, load_tokenizer
from mmcl.recipe import ModelConfig, TextConfig, VisionConfig

from ..conftest import MINILM, TINY_BERT

VISION = {
    "vit": VisionConfig(
        name="vit_tiny_patch16_224",
        kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
    ),
    "convnext": VisionConfig(name="test_convnext", image_size=32),
    "resnet": VisionConfig(name="resnet10t", image_size=32),
}
TEXT = {
    "bert-inline": TextConfig(config=TINY_BERT, tokenizer=MINILM, pooler="mean"),
    "minilm-pretrained": TextConfig(path=MINILM, pooler="cls"),
}


@pytest.mark.parametrize("vision", list(VISION))
@pytest.mark.parametrize("text", list(TEXT))
def test_forward_backward(vision, text):
    torch.manual_seed(0)
    cfg = ModelConfig(vision=VISION[vision], text=TEXT[text], embed_dim=24)
    model = mmcl.create_model(cfg)
    tok = Tokenize(load_tokenizer(cfg.text), 16)(["a red circle", "a small blue star at the top left"])
    size = model.vision.data_config()["input_size"][-1]
    out = model(torch.randn(2, 3, size, size), tok["input_ids"], tok["attention_mask"])
    assert isinstance(out, mmcl.DualEncoderOutput)
    assert out.image_embeds.shape == out.text_embeds.shape == (2, 24)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(2))
    assert math.isclose(out.logit_scale.item(), 1 / 0.07, rel_tol=1e-5)
    loss = mmcl.create_loss("infonce")(out.image_embeds, out.text_embeds, out.logit_scale)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_pretrained_minilm_loads_real_weights():
    """The packaged MiniLM is pretrained: paraphrases embed closer than unrelated text."""
    model = mmcl.create_model(ModelConfig(vision=VISION["vit"], text=TextConfig(path=MINILM)))
    tok = Tokenize(load_tokenizer(TextConfig(path=MINILM)), 32)
    batch = tok(["a dog runs in the park", "a puppy is running on grass", "quarterly tax filing deadline"])
    with torch.no_grad():
        h = torch.nn.functional.normalize(model.text(batch["input_ids"], batch["attention_mask"]), dim=-1)
    assert h[0] @ h[1] > h[0] @ h[2] + 0.2


def test_logit_scale_clamped_at_max():
    model = mmcl.create_model(ModelConfig(vision=VISION["vit"], text=TEXT["bert-inline"]))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert math.isclose(model.logit_scale.exp().item(), 100.0, rel_tol=1e-5)


def test_vision_weights_from_local_file(tmp_path):
    from safetensors.torch import save_file

    cfg = VISION["vit"]
    src = mmcl.create_model(ModelConfig(vision=cfg, text=TEXT["bert-inline"]))
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.vision.trunk.state_dict().items()}, str(path))
    loaded = mmcl.create_model(
        ModelConfig(vision=VisionConfig(name=cfg.name, kwargs=cfg.kwargs, weights=str(path)), text=TEXT["bert-inline"])
    )
    for (name, a), b in zip(src.vision.trunk.state_dict().items(), loaded.vision.trunk.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_bad_tower_arguments_are_config_errors():
    from mmcl.errors import ConfigError

    with pytest.raises(ConfigError, match="not accepted by timm model 'resnet10t'"):
        mmcl.create_model(
            ModelConfig(vision=VisionConfig(name="resnet10t", kwargs={"img_size": 32}), text=TEXT["bert-inline"])
        )


def test_vit_image_size_without_img_size_builds_for_that_size():
    """model.vision.image_size: 32 on a ViT built for 224 px: the tower is built for 32 px, not
    refused mid-run ("Input height (32) doesn't match model (224)")."""
    cfg = VisionConfig(name="vit_tiny_patch16_224", image_size=32, kwargs={"patch_size": 8, "depth": 1})
    tower = mmcl.models.TimmVisionTower(cfg)
    assert tower.data_config()["input_size"] == (3, 32, 32)
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, tower.num_features)
    with pytest.raises(mmcl.ConfigError, match="image_size is 32 but model.vision.kwargs.img_size is 64"):
        mmcl.models.TimmVisionTower(VisionConfig(name="vit_tiny_patch16_224", image_size=32, kwargs={"img_size": 64}))
