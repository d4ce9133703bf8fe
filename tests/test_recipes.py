"""Every recipe in recipes/ loads and trains 2 steps at its smoke-test size (`mmcl train R --smoke`),
with its own model and loss, on generated data."""

import json
import math
from pathlib import Path

import pytest
import yaml

from mmcl.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
# full-size open_clip ViT-B-32 / B-16 (~150M parameters, ~1.8 GB checkpoints with the optimizer state): slow;
# the default suite trains finetune-open-clip.yaml on a tiny open_clip model (tests/test_readme_finetune.py)
FULL_SIZE = {
    "finetune-open-clip.yaml",
    "negclip-coco.yaml",
    "cluster-guided-finetune.yaml",
    "lora-vit-b16.yaml",
    "flyp-open-clip.yaml",
}


def test_there_are_recipes_for_the_families_users_run():
    assert {
        "quickstart.yaml",
        "clip-vit-b32-wds.yaml",
        "clip-vit-b16-wds.yaml",
        "siglip-vit-b16-wds.yaml",
        "lit-minilm-quickstart.yaml",
        "cluster-negatives-quickstart.yaml",
        "simclr-quickstart.yaml",
        "moco-quickstart.yaml",
        "supcon-quickstart.yaml",
        "paired-quickstart.yaml",
        "simclr-resnet50-imagenet.yaml",
        "moco-v2-resnet50-imagenet.yaml",
        "supcon-resnet50-imagenet.yaml",
        "paired-resnet50-csv.yaml",
        "densecl-quickstart.yaml",
        "densecl-crowded.yaml",
        "densecl-resnet50-imagenet.yaml",
    } <= set(RECIPES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in FULL_SIZE else n for n in RECIPES])
def test_recipe_smoke(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their _base_ and packaged paths relative to the repository
    text = (ROOT / "recipes" / name).read_text()
    header = text.split("\n\n")[0]
    assert "command:" in header and "hardware:" in header and "expected:" in header, "header comment"
    assert main(["train", f"recipes/{name}", "--smoke", f"train.output_dir={tmp_path}"]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-0000002" / "model.safetensors").is_file()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train/loss"] for x in logged if "train/loss" in x]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)  # two finite steps (not NaN, not inf)
    records = json.loads((run / "results.json").read_text())
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    if recipe["model"]["kind"] == "image_image":  # no text tower: kNN, and retrieval between paired images
        paired = ["image_retrieval"] if recipe["data"]["image2_key"] is not None else []
        dense = ["dense_probe"] if recipe["model"]["dense"] else []
        assert {r["task"] for r in records} == {"knn", *paired, *dense}
    else:
        assert {r["task"] for r in records} == {"zeroshot", "retrieval"}
