"""Tiny pretrained CLIPs as users hold them, written to files by the tests themselves (no network):
open_clip model-config JSONs with a weights file, and Hugging Face CLIPModel / SiglipModel folders
with their tokenizer and image processor."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..conftest import MINILM

OPEN_CLIP_CONFIGS = {
    # open_clip's own ViT and text transformer (CLIP)
    "tiny-oc-clip": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    # SigLIP-style: the same towers with a learnable logit bias and SigLIP's initial scale (not named
    # "siglip": open_clip picks a sentencepiece tokenizer from the Hub for names containing it)
    "tiny-oc-sigmoid": {
        "embed_dim": 16,
        "init_logit_bias": -10,
        "init_logit_scale": 2.302585092994046,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
}


def write_open_clip(root: Path, name: str, seed: int = 0) -> tuple[Path, Path]:
    """``(model-config JSON, weights .safetensors)`` of a random-init open_clip model."""
    import open_clip

    root.mkdir(parents=True, exist_ok=True)
    config = root / f"{name}.json"
    config.write_text(json.dumps(OPEN_CLIP_CONFIGS[name]))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    weights = root / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


def write_hf(root: Path, kind: str, seed: int = 0) -> Path:
    """A random-init Hugging Face ``CLIPModel`` (``kind="clip"``), ``SiglipModel`` (``"siglip"``) or
    ``VisionTextDualEncoderModel`` (``"dual"``: a ViT and a BERT) folder with a tokenizer (the packaged
    MiniLM's) and an image processor, as ``save_pretrained`` writes them."""
    from transformers import (
        AutoTokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    from mmcl.recipe import resolve_path

    out = root / f"hf-{kind}"
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(MINILM))
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": tokenizer.vocab_size,
        "max_position_embeddings": 24,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(seed)
    if kind == "dual":
        from transformers import BertConfig, VisionTextDualEncoderConfig, ViTConfig, ViTImageProcessor
        from transformers import VisionTextDualEncoderModel as Dual

        config = VisionTextDualEncoderConfig.from_vision_text_configs(
            ViTConfig(**vision), BertConfig(**text), projection_dim=16
        )
        model = Dual(config)
        processor = ViTImageProcessor(size={"height": 32, "width": 32})
    elif kind == "clip":
        # CLIP pools the text at its end-of-text token: BERT's [SEP] here
        text.update(eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        with torch.no_grad():  # SigLIP's initial scale and bias (a random init leaves them at 0)
            model.logit_scale.fill_(2.302585092994046)
            model.logit_bias.fill_(-10.0)
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out
