"""Folders written by mmcl 1a9a2c2 (before the redesign) still load and give the same embeddings.

tests/fixtures/legacy_1a9a2c2/ holds a run folder (checkpoint with EMA), a pretrained folder and an
open_clip export of one tiny model, plus the embeddings that version computed for two images and
two captions (``make.py`` there says how they were made).
"""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmcl

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_1a9a2c2"


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURE / "expected.safetensors"))


@pytest.fixture
def legacy(tmp_path):
    """A copy, as a user who moved the folders elsewhere would have."""
    dst = tmp_path / "legacy"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("make.py", "expected.safetensors"))
    return dst


def embeddings(model, expected, tokenize=None):
    with torch.no_grad():
        images = model.encode_image(expected["images"])
        texts = None
        if tokenize is not None:
            batch = tokenize(["a red circle", "a big blue star"])
            assert torch.equal(batch["input_ids"], expected["input_ids"])
            texts = model.encode_text(**batch)
    return images, texts


@pytest.mark.parametrize("folder", ["run", "pretrained"])
def test_run_and_pretrained_folders_load_with_the_same_embeddings(legacy, expected, folder):
    model, tokenize, _ = mmcl.load_pretrained(legacy / folder)
    images, texts = embeddings(model, expected, tokenize)
    torch.testing.assert_close(images, expected["image_embeds"], rtol=0, atol=1e-6)
    torch.testing.assert_close(texts, expected["text_embeds"], rtol=0, atol=1e-6)


def test_run_folder_without_ema(legacy, expected):
    model = mmcl.from_pretrained(legacy / "run", ema=False)
    images, _ = embeddings(model, expected)
    torch.testing.assert_close(images, expected["image_embeds_no_ema"], rtol=0, atol=1e-6)


def test_open_clip_export_imports(legacy, expected):
    model = mmcl.import_open_clip(legacy / "open_clip")
    images, _ = embeddings(model, expected)
    torch.testing.assert_close(images, expected["image_embeds"], rtol=0, atol=1e-5)  # exported with the EMA


def test_legacy_checkpoint_resumes(legacy, tiny_corpus):
    """Training continues from the old checkpoint (weights, optimizer state, RNG, data position)."""
    run = legacy / "run"
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["train"] = str(tiny_corpus / "train.csv")
    recipe["model"]["text"]["tokenizer"] = str(run / "tokenizer")
    recipe["train"].update(output_dir=str(run), resume="latest", steps=3)
    recipe["eval"]["datasets"] = []
    trainer = mmcl.Trainer(mmcl.recipe.recipe_from_dict(recipe))
    trainer.fit()
    assert trainer.step == 3
    assert (run / "checkpoints" / "step-0000003" / "model.safetensors").is_file()
