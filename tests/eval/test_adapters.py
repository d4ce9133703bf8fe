"""Model adapters: mmcl runs, open_clip models and transformers CLIP folders behind one protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmcl.errors import ConfigError
from mmcl.eval.adapters import HFClipAdapter, load_adapter
from mmcl.recipe import resolve_path

from ..conftest import MINILM


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    out = tmp_path_factory.mktemp("hf_clip")
    tok = AutoTokenizer.from_pretrained(resolve_path(MINILM))
    config = CLIPConfig(
        text_config={
            "vocab_size": tok.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 40,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def test_hf_clip_adapter_equals_the_model_itself(hf_clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    adapter = load_adapter(str(hf_clip_dir), device="cpu")
    assert isinstance(adapter, HFClipAdapter)
    image = Image.new("RGB", (48, 40), (200, 30, 30))
    pixels = adapter.preprocess(image)
    assert pixels.shape == (3, 32, 32)
    model = CLIPModel.from_pretrained(hf_clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(hf_clip_dir)
    texts = ["a red square", "a much longer caption about a blue circle"]
    with torch.no_grad():
        want_img = model.get_image_features(pixel_values=pixels[None])
        batch = tok(texts, padding=True, return_tensors="pt")
        want_txt = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    want_img = getattr(want_img, "pooler_output", want_img)
    want_txt = getattr(want_txt, "pooler_output", want_txt)
    assert torch.allclose(adapter.encode_image(pixels[None]), F.normalize(want_img, dim=-1), atol=1e-5)
    assert torch.allclose(adapter.encode_text(texts), F.normalize(want_txt, dim=-1), atol=1e-5)


def test_hf_clip_zero_shot_through_the_cli(hf_clip_dir, tiny_corpus, tmp_path):
    import json

    from mmcl.cli import main

    out = tmp_path / "r.json"
    args = ["eval", "zeroshot", "--model", str(hf_clip_dir), "--dataset", str(tiny_corpus / "test.csv")]
    assert main([*args, "--output", str(out), "--no-progress", "--device", "cpu"]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == hf_clip_dir.name and record["task"] == "zeroshot_classification"
    assert 0 <= record["metrics"]["acc1"] <= 1 and record["metrics"]["num_classes"] == 32


def test_load_adapter_errors(tmp_path):
    with pytest.raises(ConfigError, match="open_clip has no architecture 'ViT-Q-99'"):
        load_adapter("ViT-Q-99")
    with pytest.raises(ConfigError, match="neither an mmcl run .* it holds: a.txt"):
        (tmp_path / "a.txt").write_text("x")
        load_adapter(str(tmp_path))
    with pytest.raises(ConfigError, match="choose one of: auto, mmcl, open_clip, hf"):
        load_adapter("ViT-B-32", model_type="timm")
    with pytest.raises(ConfigError, match="weights 'missing.pt' not found"):
        load_adapter("ViT-B-32", pretrained="missing.pt")
    with pytest.raises(ConfigError, match="not an mmcl run folder"):
        load_adapter(str(tmp_path), model_type="mmcl")
