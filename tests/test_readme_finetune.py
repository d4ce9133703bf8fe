"""The README's second example, "Fine-tune a pretrained CLIP", run command by command as written.

The user's files (/w/vit_b32.safetensors, /w/clip_folder, pairs.csv) become files this test writes;
by default the open_clip architecture ViT-B-32 becomes a tiny open_clip model-config JSON (the slow
test keeps ViT-B-32 at random init). A short run is appended to each train command (2 steps, batch 8,
fp32, no workers): the recipes' own sizes are for a GPU and a real corpus."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

import mmcl
from mmcl.cli import main

from .models.library_models import write_hf, write_open_clip

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["data.batch_size=8", "data.num_workers=0", "train.steps=2", "train.precision=fp32", "train.progress=false"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fine-tune a pretrained CLIP", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("mmcl ")]


def test_the_readme_shows_the_contract():
    commands = readme_commands()
    assert [c.split()[:3] for c in commands] == [
        ["mmcl", "train", "recipes/finetune-open-clip.yaml"],
        ["mmcl", "export", "open_clip"],
        ["mmcl", "train", "recipes/finetune-hf-clip.yaml"],
        ["mmcl", "export", "hf"],
    ]


def _run(commands, files: dict[str, str]) -> None:
    for command in commands:
        for theirs, ours in files.items():
            command = command.replace(theirs, ours)
        args = shlex.split(command)[1:]
        args = [str(ROOT / a) if a.startswith("recipes/") else a for a in args]
        assert main(args + (SHORT if args[0] == "train" else [])) == 0, command


def _check_exports(tmp_path) -> None:
    import open_clip
    import torch.nn.functional as F
    from transformers import AutoModel

    texts = ["a red circle", "two blue squares"]
    name = f"local-dir:{tmp_path / 'exported/oc'}"
    theirs, _, _ = open_clip.create_model_and_transforms(name)
    ours, tokenize, _ = mmcl.load_pretrained(tmp_path / "runs/finetune-open-clip")
    images = torch.randn(2, 3, *ours.preprocess_cfg()["size"])
    with torch.no_grad():
        assert (theirs.eval().encode_image(images, normalize=True) - ours.encode_image(images)).abs().max() <= 1e-6
        ref_t = theirs.encode_text(open_clip.get_tokenizer(name)(texts), normalize=True)
        assert (ref_t - ours.encode_text(**tokenize(texts))).abs().max() <= 1e-6
    hf = AutoModel.from_pretrained(tmp_path / "exported/hf").eval()
    ours, tokenize, _ = mmcl.load_pretrained(tmp_path / "runs/finetune-hf-clip")
    images, batch = torch.randn(2, 3, 32, 32), tokenize(texts)
    with torch.no_grad():
        ref_i = F.normalize(hf.get_image_features(pixel_values=images).pooler_output, dim=-1)
        ref_t = F.normalize(hf.get_text_features(**batch).pooler_output, dim=-1)
        assert (ours.encode_image(images) - ref_i).abs().max() <= 1e-6
        assert (ours.encode_text(**batch) - ref_t).abs().max() <= 1e-6


def _files(tmp_path, tiny_corpus, architecture: str) -> dict[str, str]:
    if architecture == "ViT-B-32":
        import open_clip
        from safetensors.torch import save_file

        torch.manual_seed(0)
        state = open_clip.create_model("ViT-B-32").state_dict()
        weights = tmp_path / "w" / "vit_b32.safetensors"
        weights.parent.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
        name = "ViT-B-32"
    else:
        config, weights = write_open_clip(tmp_path / "w", architecture)
        name = str(config)
    return {
        "model.name=ViT-B-32": f"model.name={name}",
        "/w/vit_b32.safetensors": str(weights),
        "/w/clip_folder": str(write_hf(tmp_path / "w", "clip")),
        "data.train=pairs.csv": f"data.train={tiny_corpus / 'train.csv'}",
    }


def test_the_readme_fine_tuning_commands_run(tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and exported/ land here, as they would in the user's folder
    _run(readme_commands(), _files(tmp_path, tiny_corpus, "tiny-oc-clip"))
    _check_exports(tmp_path)


@pytest.mark.slow
def test_the_readme_fine_tuning_commands_run_with_vit_b_32(tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(readme_commands(), _files(tmp_path, tiny_corpus, "ViT-B-32"))
    _check_exports(tmp_path)
