"""Freezing by pattern (``model.freeze`` / ``model.unfreeze``): the names a recipe's regexes pick on
a tiny model of each backend equal hand-written lists, and the frozen parameters stay bitwise
unchanged through training with weight decay while the rest train."""

from __future__ import annotations

import pytest
import torch

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import ModelConfig, recipe_from_dict
from mmcl.recipe.load import build_section

from ..conftest import MINILM, TINY_BERT, TINY_VIT, tiny_recipe_dict, train_section
from .library_models import write_hf, write_open_clip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("freeze-models")
    return {"open_clip": write_open_clip(root, "tiny-oc-clip"), "hf": write_hf(root, "clip")}


def model_section(files, backend: str) -> dict:
    if backend == "open_clip":
        config, weights = files["open_clip"]
        return {"backend": "open_clip", "name": str(config), "pretrained": str(weights)}
    if backend == "hf":
        return {"backend": "hf", "path": str(files["hf"])}
    return {"vision": TINY_VIT, "text": {"config": TINY_BERT, "tokenizer": MINILM, "max_length": 24}, "embed_dim": 16}


# per backend: (freeze, unfreeze, the names frozen, written out by hand)
CASES = {
    "timm_hf": (
        [r"vision\.trunk\.(cls_token|pos_embed|patch_embed\..*)", r"text\.transformer\.embeddings\..*"],
        [r".*LayerNorm\..*"],
        {
            "vision.trunk.cls_token",
            "vision.trunk.pos_embed",
            "vision.trunk.patch_embed.proj.weight",
            "vision.trunk.patch_embed.proj.bias",
            "text.transformer.embeddings.word_embeddings.weight",
            "text.transformer.embeddings.position_embeddings.weight",
            "text.transformer.embeddings.token_type_embeddings.weight",
        },
    ),
    "open_clip": (
        [r"model\.visual\.(conv1|ln_pre)\..*", r"model\.(token|positional)_embedding.*"],
        [r".*\.bias"],
        {
            "model.visual.conv1.weight",
            "model.visual.ln_pre.weight",
            "model.token_embedding.weight",
            "model.positional_embedding",
        },
    ),
    "hf": (
        [r"model\.vision_model\.embeddings\..*", r"model\.text_projection\.weight"],
        [r".*class_embedding"],
        {
            "model.vision_model.embeddings.patch_embedding.weight",
            "model.vision_model.embeddings.position_embedding.weight",
            "model.text_projection.weight",
        },
    ),
}


@pytest.mark.parametrize("backend", list(CASES))
def test_patterns_freeze_the_hand_listed_names(files, backend):
    freeze, unfreeze, expected = CASES[backend]
    cfg = build_section(ModelConfig, {**model_section(files, backend), "freeze": freeze, "unfreeze": unfreeze}, "model")
    model = mmcl.create_model(cfg)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == expected


@pytest.mark.parametrize("backend", list(CASES))
def test_frozen_parameters_stay_bitwise_unchanged_through_training(files, tiny_corpus, tmp_path, backend):
    freeze, unfreeze, expected = CASES[backend]
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    data["model"] = {**model_section(files, backend), "freeze": freeze, "unfreeze": unfreeze}
    data["train"] = train_section(tmp_path / "run", steps=3, lr=1e-2, weight_decay=0.5, warmup_steps=0)
    data["eval"] = {"datasets": []}
    trainer = mmcl.Trainer(recipe_from_dict(data))
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(trainer.unwrapped.named_parameters())
    assert not in_optimizer & {id(named[n]) for n in expected}
    assert "trainable" in trainer._summary()
    trainer.fit()
    after = trainer.unwrapped.state_dict()
    for name in expected:
        assert torch.equal(after[name], before[name]), name
    changed = [n for n in named if n not in expected and not torch.equal(after[n], before[n])]
    assert len(changed) >= len(named) - len(expected) - 2  # every trained tensor moved (bar one with no gradient)


def test_a_pattern_that_matches_nothing_names_some_parameters(files):
    cfg = build_section(ModelConfig, {**model_section(files, "timm_hf"), "freeze": [r"visual\..*"]}, "model")
    with pytest.raises(ConfigError, match=r"model\.freeze\[0\]: .* matches no parameter.*vision\.trunk"):
        mmcl.create_model(cfg)
    cfg = build_section(ModelConfig, {**model_section(files, "timm_hf"), "freeze": ["("]}, "model")
    with pytest.raises(ConfigError, match=r"model\.freeze\[0\]: '\(' is not a regular expression"):
        mmcl.create_model(cfg)
    cfg = build_section(ModelConfig, {**model_section(files, "timm_hf"), "unfreeze": [r".*"]}, "model")
    with pytest.raises(ConfigError, match="model.unfreeze lists exceptions to model.freeze"):
        mmcl.create_model(cfg)


def test_a_frozen_batchnorm_keeps_its_statistics():
    section = {
        "vision": {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}, "image_size": 32},
        "text": {"config": TINY_BERT, "tokenizer": MINILM},
        "embed_dim": 16,
        "freeze": [r"vision\..*"],
    }
    model = mmcl.create_model(build_section(ModelConfig, section, "model")).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.vision.modules())
    before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    model.encode_image(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(v, before[k]) for k, v in model.vision.state_dict().items())
    assert all(p.requires_grad for p in model.text.parameters())


@pytest.mark.parametrize("backend", ["timm_hf", "open_clip"])
def test_lit_by_pattern_freezes_what_the_lock_keys_freeze(files, backend):
    """recipes/lit-freeze-quickstart.yaml's one pattern and the older model.vision.lock agree."""
    base = model_section(files, backend)
    pattern = r"vision\..*" if backend == "timm_hf" else r"model\.visual\..*"
    by_lock = mmcl.create_model(
        build_section(ModelConfig, {**base, "vision": {**base.get("vision", {}), "lock": True}}, "model")
    )
    by_pattern = mmcl.create_model(build_section(ModelConfig, {**base, "freeze": [pattern]}, "model"))
    trained = [{n for n, p in m.named_parameters() if p.requires_grad} for m in (by_lock, by_pattern)]
    assert trained[0] == trained[1] and len(trained[0]) > 0
    assert not any(n.startswith(pattern[:-4].replace("\\", "")) for n in trained[0])
