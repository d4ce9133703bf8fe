"""Layer-wise lr decay (``train.layer_decay``): the optimizer's groups give each parameter the lr of
a hand-written table (BEiT's rule: lr * decay^(L + 1 - layer id)), keep the weight-decay split, and
the schedule scales each group's own lr."""

from __future__ import annotations

import re

import pytest

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import ModelConfig, TrainConfig, recipe_from_dict
from mmcl.recipe.load import build_section
from mmcl.train.optim import create_optimizer, create_scheduler

from ..conftest import MINILM, TINY_BERT, TINY_VIT, tiny_recipe_dict, train_section
from ..models.library_models import write_hf, write_open_clip

LR = 1e-3
# 2-block ViT and 2-layer BERT, decay 0.5: embeddings 0.5^3, block 1 0.5^2, block 2 0.5, after them 1
VIT2 = {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"], "depth": 2}}
BERT2 = {**TINY_BERT, "num_hidden_layers": 2}
TIMM_HF_TABLE = {
    "logit_scale": 1.0,
    "vision.trunk.cls_token": 0.125,
    "vision.trunk.pos_embed": 0.125,
    "vision.trunk.patch_embed.proj.weight": 0.125,
    "vision.trunk.blocks.0.attn.qkv.weight": 0.25,
    "vision.trunk.blocks.0.norm1.bias": 0.25,
    "vision.trunk.blocks.1.mlp.fc2.weight": 0.5,
    "vision.trunk.norm.weight": 1.0,
    "image_proj.weight": 1.0,
    "text.transformer.embeddings.word_embeddings.weight": 0.125,
    "text.transformer.embeddings.LayerNorm.weight": 0.125,
    "text.transformer.encoder.layer.0.attention.self.query.weight": 0.25,
    "text.transformer.encoder.layer.1.output.dense.bias": 0.5,
    "text_proj.weight": 1.0,
}
# one block per tower; vision 0.5 (embeddings 0.25, block 0.5), text 0.8 (embeddings 0.64, block 0.8)
OPEN_CLIP_TABLE = {
    "model.logit_scale": 1.0,
    "model.visual.conv1.weight": 0.25,
    "model.visual.class_embedding": 0.25,
    "model.visual.positional_embedding": 0.25,
    "model.visual.ln_pre.weight": 0.25,
    "model.visual.transformer.resblocks.0.attn.in_proj_weight": 0.5,
    "model.visual.ln_post.bias": 1.0,
    "model.visual.proj": 1.0,
    "model.token_embedding.weight": 0.64,
    "model.positional_embedding": 0.64,
    "model.transformer.resblocks.0.mlp.c_fc.weight": 0.8,
    "model.ln_final.weight": 1.0,
    "model.text_projection": 1.0,
}
HF_TABLE = {
    "model.logit_scale": 1.0,
    "model.vision_model.embeddings.patch_embedding.weight": 0.25,
    "model.vision_model.embeddings.class_embedding": 0.25,
    "model.vision_model.pre_layrnorm.weight": 0.25,
    "model.vision_model.encoder.layers.0.self_attn.q_proj.weight": 0.5,
    "model.vision_model.post_layernorm.weight": 1.0,
    "model.visual_projection.weight": 1.0,
    "model.text_model.embeddings.token_embedding.weight": 0.64,
    "model.text_model.encoder.layers.0.mlp.fc1.bias": 0.8,
    "model.text_model.final_layer_norm.bias": 1.0,
    "model.text_projection.weight": 1.0,
}


def no_decay(model, name: str, p) -> bool:
    """mmcl's weight-decay rule (mmcl.train.optim.param_groups), which layer decay keeps."""
    return p.ndim < 2 or name.endswith(".bias") or name in model.no_weight_decay_names()


def check_groups(model, optimizer, table: dict, factor: float = 1.0) -> None:
    """Each parameter of ``table`` is in one group whose lr is LR * its scale * ``factor`` and whose
    weight decay is mmcl's (0 for norms, biases, the logit scale, timm's no_weight_decay); every trained
    parameter is in exactly one group."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(group_of) == sum(len(g["params"]) for g in optimizer.param_groups) == len(named)
    for name, scale in table.items():
        group = group_of[id(named[name])]
        assert group["lr"] == pytest.approx(LR * scale * factor, rel=1e-12), name
        assert group["weight_decay"] == (0.0 if no_decay(model, name, named[name]) else 0.1), name


def build(section: dict):
    return mmcl.create_model(build_section(ModelConfig, section, "model"))


def train_cfg(layer_decay, warmup: int = 4) -> TrainConfig:
    return build_section(
        TrainConfig, {"lr": LR, "weight_decay": 0.1, "warmup_steps": warmup, "layer_decay": layer_decay}, "train"
    )


def test_timm_vit_and_bert_towers_follow_the_table_before_and_after_a_scheduler_step():
    model = build({"vision": VIT2, "text": {"config": BERT2, "tokenizer": MINILM}, "embed_dim": 16})
    cfg = train_cfg(0.5)
    optimizer = create_optimizer(model, cfg)
    scheduler = create_scheduler(optimizer, cfg)
    check_groups(model, optimizer, TIMM_HF_TABLE, factor=1 / 4)  # warm-up: step 0 runs at 1/4 of the lr
    optimizer.step()
    scheduler.step()
    check_groups(model, optimizer, TIMM_HF_TABLE, factor=2 / 4)
    assert scheduler.get_last_lr()[0] == pytest.approx(LR * 2 / 4)  # the first group is a base-lr one


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("decay-models")
    return {"open_clip": write_open_clip(root, "tiny-oc-clip"), "hf": write_hf(root, "clip")}


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_library_towers_follow_the_table_per_tower(files, backend):
    if backend == "open_clip":
        config, weights = files["open_clip"]
        model = build({"backend": "open_clip", "name": str(config), "pretrained": str(weights)})
    else:
        model = build({"backend": "hf", "path": str(files["hf"])})
    cfg = train_cfg({"vision": 0.5, "text": 0.8}, warmup=0)
    optimizer = create_optimizer(model, cfg)
    scheduler = create_scheduler(optimizer, cfg)
    table = OPEN_CLIP_TABLE if backend == "open_clip" else HF_TABLE
    check_groups(model, optimizer, table)
    optimizer.step()
    scheduler.step()
    check_groups(model, optimizer, table, factor=cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math_cos(1)))


def math_cos(step: int) -> float:
    import math

    return math.cos(math.pi * step / 1000)  # cosine over the default train.steps (1000), no warm-up


def test_one_tower_only_and_a_tower_without_blocks():
    cnn = {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}}
    model = build({"vision": cnn, "text": {"config": BERT2, "tokenizer": MINILM}, "embed_dim": 16})
    with pytest.raises(ConfigError, match=r"the vision tower has no transformer blocks.*\{text: 0.75\}"):
        create_optimizer(model, train_cfg(0.75))
    optimizer = create_optimizer(model, train_cfg({"text": 0.5}))
    named = dict(model.named_parameters())
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr[id(named["vision.trunk.conv1.weight"])] == LR  # the vision tower keeps the base lr
    assert lr[id(named["text.transformer.embeddings.word_embeddings.weight"])] == pytest.approx(LR * 0.125)


FROZEN = r"vision\.trunk\.(cls_token|pos_embed|patch_embed\..*)"


def test_the_recipe_key_reaches_the_trainer_and_leaves_frozen_parameters_out(tiny_corpus, tmp_path):
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    data["model"]["vision"] = VIT2
    data["model"]["text"]["config"] = BERT2
    data["model"]["freeze"] = [FROZEN]
    data["train"] = train_section(tmp_path / "run", steps=2, lr=LR, weight_decay=0.1, layer_decay=0.5, warmup_steps=0)
    trainer = mmcl.Trainer(recipe_from_dict(data))
    table = {k: v for k, v in TIMM_HF_TABLE.items() if not re.fullmatch(FROZEN, k)}
    assert len(table) == len(TIMM_HF_TABLE) - 3
    named = dict(trainer.unwrapped.named_parameters())
    group_of = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, scale in table.items():
        assert group_of[id(named[name])]["lr"] == pytest.approx(LR * scale), name
    assert id(named["vision.trunk.cls_token"]) not in group_of
    trainer.fit()
    with pytest.raises(ConfigError, match=r"train.layer_decay must be in \(0, 1\]"):
        data["train"]["layer_decay"] = 1.5
        recipe_from_dict(data)
