"""Generated from the backend registry: every registered model backend builds a tiny model, and
that model saves and reloads (``save_pretrained`` / ``load_pretrained``) with identical embeddings.
A backend registered without a tiny config here fails, so a new one is tested the moment it exists."""

import pytest
import torch

import mmcl
from mmcl.errors import ConfigError
from mmcl.models import list_backends
from mmcl.recipe import ModelConfig
from mmcl.recipe.load import build_section

from ..conftest import MINILM, TINY_BERT, TINY_VIT
from .library_models import write_hf, write_open_clip


def _open_clip(root):
    config, weights = write_open_clip(root, "tiny-oc-clip")
    return {"name": str(config), "pretrained": str(weights)}


# each backend's tiny model section; library backends write their files under the test's folder first
TINY = {
    "timm_hf": lambda root: {"vision": TINY_VIT, "text": {"config": TINY_BERT, "tokenizer": MINILM}, "embed_dim": 16},
    "timm": lambda root: {"kind": "image_image", "vision": TINY_VIT, "head": "mlp", "embed_dim": 16},
    "open_clip": _open_clip,
    "hf": lambda root: {"path": str(write_hf(root, "clip"))},
}


def tiny_config(name: str, root) -> ModelConfig:
    return build_section(ModelConfig, {**TINY[name](root), "backend": name}, "model")


def test_every_backend_has_a_tiny_config():
    assert set(list_backends()) == set(TINY), "add a tiny model section for each new backend to TINY"
    assert mmcl.list_backends() == list_backends()


@pytest.mark.parametrize("name", list_backends())
def test_backend_builds_saves_and_reloads_with_identical_embeddings(name, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(name, tmp_path / "files")
    model = mmcl.create_model(cfg).eval()
    images = torch.randn(2, 3, 32, 32)
    model.save_pretrained(tmp_path / "saved")
    loaded, tokenize, _ = mmcl.load_pretrained(tmp_path / "saved")
    assert loaded.cfg.backend == name
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=0)
        if cfg.kind == "image_text":
            batch = tokenize(["a red circle", "two blue squares"])
            torch.testing.assert_close(loaded.encode_text(**batch), model.encode_text(**batch), rtol=0, atol=0)


def test_an_unknown_or_mismatched_backend_is_one_clear_error(tmp_path):
    section = TINY["timm_hf"](tmp_path)
    with pytest.raises(
        ConfigError, match="'nope' is not a model backend; valid choices: auto, hf, open_clip, timm, timm_hf"
    ):
        mmcl.create_model(build_section(ModelConfig, {**section, "backend": "nope"}, "model"))
    with pytest.raises(ConfigError, match="builds model.kind image_image, not 'image_text'"):
        mmcl.create_model(build_section(ModelConfig, {**section, "kind": "image_text", "backend": "timm"}, "model"))
