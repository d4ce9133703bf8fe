"""LoRA / DoRA adapters through peft (``model.adapter``) on every backend: a zero update at the start,
the hand-counted trainable parameters, only adapters change in training, merging keeps the
embeddings, and exports load with no peft."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

import mmcl
from mmcl.errors import ConfigError
from mmcl.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, count_trainable, has_adapters, merge_adapters
from mmcl.models.backends import get_backend
from mmcl.recipe import ModelConfig, recipe_from_dict
from mmcl.recipe.load import build_section
from mmcl.train import latest_checkpoint

from ..conftest import MINILM, TINY_BERT, TINY_VIT, tiny_recipe_dict
from .library_models import write_hf, write_open_clip

TEXTS = ["a red circle", "two blue squares above a green star"]
TARGETS = {
    "timm_hf": {"vision": ["qkv", "fc1"], "text": ["query", "value"]},
    # open_clip's nn.MultiheadAttention: peft adapts its in_proj and out_proj together
    "open_clip": {"vision": ["attn", "c_fc"], "text": ["attn", "c_proj"]},
    "hf": {"vision": ["q_proj", "v_proj"], "text": ["q_proj", "v_proj"]},
}


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter-models")
    config, weights = write_open_clip(root, "tiny-oc-clip")
    return {
        "timm_hf": {"vision": TINY_VIT, "text": {"config": TINY_BERT, "tokenizer": MINILM}, "embed_dim": 16},
        "open_clip": {"backend": "open_clip", "name": str(config), "pretrained": str(weights)},
        "hf": {"backend": "hf", "path": str(write_hf(root, "clip"))},
    }


def build(section: dict, adapter: dict | None = None, seed: int = 0):
    cfg = build_section(ModelConfig, {**section, "adapter": adapter}, "model")
    torch.manual_seed(seed)
    model = mmcl.create_model(cfg).eval()
    return model, get_backend(cfg).tokenizer(cfg, model)


def embeddings(model, tokenize) -> torch.Tensor:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return torch.cat([model.encode_image(images), model.encode_text(**tokenize(TEXTS))])


def hand_count(base: torch.nn.Module, names: list[str], r: int) -> int:
    """r * (in + out) per adapted Linear; an nn.MultiheadAttention: its in_proj (d -> 3d) and out_proj."""
    total = 0
    for name in names:
        m = base.get_submodule(name)
        if isinstance(m, torch.nn.MultiheadAttention):
            d = m.embed_dim
            total += r * (d + 3 * d) + r * (d + d)
        elif isinstance(m, torch.nn.Conv2d):  # A: r-channel k x k conv, B: 1x1 conv back to out channels
            total += r * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + r * m.out_channels
        else:
            total += r * (m.in_features + m.out_features)
    return total


@pytest.mark.parametrize("backend", ["timm_hf", "open_clip", "hf"])
def test_adapters_start_as_the_base_model_and_train_only_themselves(sections, backend):
    from mmcl.models.adapters import target_names
    from mmcl.recipe import AdapterConfig, TrainConfig
    from mmcl.train.optim import create_optimizer

    adapter = {"r": 4, "alpha": 8, "target_modules": TARGETS[backend]}
    base, tokenize = build(sections[backend])
    model, _ = build(sections[backend], adapter)
    # B = 0: no update yet (peft's MultiheadAttention adds the zero update to the weights: round-off only)
    assert (embeddings(model, tokenize) - embeddings(base, tokenize)).abs().max() <= 1e-6
    names = target_names(base, AdapterConfig(**adapter))
    assert len(names) >= 4
    trainable, total = count_trainable(model)
    assert trainable == hand_count(base, names, 4)
    assert total == count_trainable(base)[1] + trainable

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = create_optimizer(model.train(), TrainConfig(lr=1e-2, weight_decay=0.0))
    images = torch.randn(4, 3, 32, 32)
    batch = tokenize(TEXTS + TEXTS)
    for _ in range(3):
        image, text = model.encode_image(images), model.encode_text(**batch)
        loss = torch.nn.functional.cross_entropy(10 * image @ text.T, torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    moved = {k: float((after[k] - before[k]).abs().max()) for k in after}
    assert all(moved[k] > 0 for k in after if "lora_" in k)  # every adapter trained
    frozen = {k: v for k, v in moved.items() if "lora_" not in k}
    # nothing else did; peft's MultiheadAttention adds and subtracts the update in its weights in each
    # forward, which leaves float round-off there (open_clip); elsewhere they are bit for bit the same
    assert max(frozen.values()) <= (1e-6 if backend == "open_clip" else 0.0)

    merged = merge_adapters(model.eval())
    assert not has_adapters(merged) and merged.cfg.adapter is None and has_adapters(model)
    assert merged.state_dict().keys() == base.state_dict().keys()  # plain weights again
    diff = (embeddings(merged, tokenize) - embeddings(model, tokenize)).abs().max()
    assert diff <= 1e-5
    assert not torch.equal(embeddings(merged, tokenize), embeddings(base, tokenize))


def test_lora_on_the_convolutions_of_a_resnet_tower(sections):
    from mmcl.models.adapters import target_names
    from mmcl.recipe import AdapterConfig

    vision = {"name": "resnet18", "kwargs": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}, "image_size": 32}
    section = {**sections["timm_hf"], "vision": vision}
    adapter = {"r": 2, "target_modules": {"vision": ["conv2"], "text": ["query"]}}
    base, tokenize = build(section)
    model, _ = build(section, adapter)
    names = target_names(base, AdapterConfig(**adapter))
    assert len(names) == 5 and count_trainable(model)[0] == hand_count(base, names, 2)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    assert (embeddings(merge_adapters(model), tokenize) - embeddings(model, tokenize)).abs().max() <= 1e-5


def test_dora_and_trainable_logit_scale(sections):
    adapter = {"method": "dora", "r": 2, "target_modules": {"vision": ["qkv"]}, "trainable": ["logit_scale"]}
    base, tokenize = build(sections["timm_hf"])
    model, _ = build(sections["timm_hf"], adapter)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "logit_scale" in trained and any("lora_magnitude_vector" in n for n in trained)
    assert (embeddings(model, tokenize) - embeddings(base, tokenize)).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "adapter,message",
    [
        ({"target_modules": {"vision": ["nope"]}}, "no Linear layer of the vision tower is named 'nope'"),
        ({"target_modules": {"audio": ["qkv"]}}, "'audio' is not a tower; valid choices: vision, text"),
        ({"target_modules": {}}, "names no layer"),
        ({"r": 0, "target_modules": {"vision": ["qkv"]}}, "model.adapter.r must be >= 1"),
        ({"target_modules": {"vision": ["qkv"]}, "trainable": ["nothing_like_it"]}, "matches no parameter"),
    ],
)
def test_adapter_mistakes_are_one_line(tiny_corpus, tmp_path, adapter, message):
    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
    data["model"]["adapter"] = adapter
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mmcl.create_model(recipe_from_dict(data).model)


def test_out_proj_of_multihead_attention_is_refused(sections):
    with pytest.raises(ConfigError, match="out_proj of an nn.MultiheadAttention.*'attn'"):
        build(sections["open_clip"], {"target_modules": {"vision": ["out_proj"]}})


def lora_recipe(corpus, out_dir, **train) -> dict:
    data = tiny_recipe_dict(corpus, out_dir, **train)
    data["model"]["adapter"] = {"r": 4, "alpha": 8, "target_modules": TARGETS["timm_hf"], "trainable": ["_proj"]}
    return data


@pytest.mark.slow
def test_lora_run_saves_adapters_resumes_and_exports_without_peft(tiny_corpus, tmp_path):
    from safetensors.torch import load_file

    from ..conftest import assert_same_weights, straight_and_resumed

    straight, resumed = straight_and_resumed(tmp_path, lambda out: lora_recipe(tiny_corpus, out), stop_at=2)
    assert_same_weights(straight, resumed)
    adapters = load_file(str(straight / ADAPTER_WEIGHTS))
    assert adapters and all("lora_" in k for k in adapters)
    assert json.loads((straight / ADAPTER_CONFIG).read_text())["r"] == 4
    run = tmp_path / "straight"
    assert latest_checkpoint(run) == straight

    trained, tokenize, _ = mmcl.load_pretrained(run)
    assert has_adapters(trained)
    ref = embeddings(trained, tokenize)
    torch.save(ref, tmp_path / "ref.pt")
    out = tmp_path / "exported"
    res = subprocess.run(
        [sys.executable, "-m", "mmcl.cli", "export", "pretrained", str(run), str(out)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "adapter" not in json.dumps(json.loads((out / "config.json").read_text())["model"]).replace(
        '"adapter": null', ""
    )
    # a process where peft cannot be imported loads the export and gives the same embeddings
    script = f"""
import sys; sys.modules["peft"] = None
import torch, mmcl
from tests.models.test_adapters import embeddings
model, tokenize, _ = mmcl.load_pretrained({str(out)!r})
print("max_diff", float((embeddings(model, tokenize) - torch.load({str(tmp_path / "ref.pt")!r})).abs().max()))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.split("max_diff")[-1]) <= 1e-5


def test_lora_recipe_key_survives_the_run_folder(tiny_corpus, tmp_path):
    data = lora_recipe(tiny_corpus, tmp_path / "run", steps=1)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    saved = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert recipe_from_dict(saved).model.adapter.target_modules == TARGETS["timm_hf"]
