"""The CLIP a user already has: open_clip models and Hugging Face CLIPModel / SiglipModel folders as
mmcl backends. Before any training mmcl's embeddings equal the library's own; they train with mmcl's
losses from `mmcl train`; and they export back to their library with equal embeddings."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

import mmcl
from mmcl.cli import main
from mmcl.models.backends import get_backend
from mmcl.recipe import ModelConfig
from mmcl.recipe.load import build_section

from ..conftest import train_section
from .library_models import write_hf, write_open_clip

TEXTS = ["a red circle", "two blue squares above a green star", "x"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("library-models")
    out = {name: write_open_clip(root, name) for name in ("tiny-oc-clip", "tiny-oc-sigmoid")}
    out.update({f"hf-{kind}": write_hf(root, kind) for kind in ("clip", "siglip", "dual")})
    return out


def section(files, which: str) -> dict:
    if which.startswith("hf-"):
        return {"backend": "hf", "path": str(files[which])}
    config, weights = files[which]
    return {"backend": "open_clip", "name": str(config), "pretrained": str(weights)}


def build(files, which: str):
    cfg = build_section(ModelConfig, section(files, which), "model")
    model = mmcl.create_model(cfg).eval()
    return model, get_backend(cfg).tokenizer(cfg, model)


@pytest.mark.parametrize("which", ["tiny-oc-clip", "tiny-oc-sigmoid"])
def test_open_clip_embeddings_equal_open_clips_own(files, which):
    import open_clip

    model, tokenize = build(files, which)
    theirs = open_clip.create_model(which)
    open_clip.load_checkpoint(theirs, str(files[which][1]), weights_only=True)
    theirs.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = open_clip.get_tokenizer(which)(TEXTS)
    assert torch.equal(tokenize(TEXTS)["input_ids"], ids)  # open_clip's own tokenizer
    with torch.no_grad():
        assert (model.encode_image(images) - theirs.encode_image(images, normalize=True)).abs().max() <= 1e-6
        assert (model.encode_text(**tokenize(TEXTS)) - theirs.encode_text(ids, normalize=True)).abs().max() <= 1e-6
    assert (model.logit_bias is not None) == (which == "tiny-oc-sigmoid")


@pytest.mark.parametrize("which", ["hf-clip", "hf-siglip", "hf-dual"])
def test_hf_embeddings_equal_transformers_own(files, which):
    from transformers import AutoModel, AutoTokenizer

    model, tokenize = build(files, which)
    theirs = AutoModel.from_pretrained(files[which]).eval()
    tok = AutoTokenizer.from_pretrained(files[which])
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    siglip = which == "hf-siglip"  # SigLIP: fixed-length padding and no attention mask, as pretrained
    batch = tok(TEXTS, padding="max_length" if siglip else True, max_length=24, truncation=True, return_tensors="pt")
    kwargs = {"input_ids": batch["input_ids"]} if siglip else dict(batch)
    with torch.no_grad():
        ref_i = F.normalize(theirs.get_image_features(pixel_values=images).pooler_output, dim=-1)
        ref_t = F.normalize(theirs.get_text_features(**kwargs).pooler_output, dim=-1)
        assert (model.encode_image(images) - ref_i).abs().max() <= 1e-6
        assert (model.encode_text(**tokenize(TEXTS)) - ref_t).abs().max() <= 1e-6


def test_open_clip_model_saves_reloads_and_exports_to_open_clip(files, tmp_path):
    import open_clip

    model, tokenize = build(files, "tiny-oc-clip")
    images = torch.randn(2, 3, 32, 32)
    model.save_pretrained(tmp_path / "saved")
    again, tokenize2, preprocess = mmcl.load_pretrained(tmp_path / "saved")
    result = mmcl.export_open_clip(model, tmp_path / "oc", name="tiny-oc-export")
    assert result["max_abs_diff"] <= 1e-6
    theirs, _, _ = open_clip.create_model_and_transforms("tiny-oc-clip", pretrained=str(result["weights"]))
    theirs.eval()
    with torch.no_grad():
        ours_i, ours_t = model.encode_image(images), model.encode_text(**tokenize(TEXTS))
        assert torch.equal(again.encode_image(images), ours_i)
        assert torch.equal(again.encode_text(**tokenize2(TEXTS)), ours_t)
        assert (theirs.encode_image(images, normalize=True) - ours_i).abs().max() <= 1e-6
    assert preprocess.transforms[0].size == 32  # open_clip's own preprocessing


def write_recipe(tmp_path, tiny_corpus, files, which: str, loss: str, **train) -> str:
    data = {
        "name": which,
        "data": {"train": str(tiny_corpus / "train.csv"), "batch_size": 8, "augment": {"enabled": False}},
        "model": section(files, which),
        "loss": {"name": loss, "kwargs": {"k": 2, "bank_size": 64} if loss == "cluster_infonce" else {}},
        "train": train_section(tmp_path / f"run-{loss}", **{"steps": 2, "lr": 1e-4, **train}),
        "eval": {
            "datasets": [
                {
                    "name": "test",
                    "path": str(tiny_corpus / "test.csv"),
                    "tasks": ["zeroshot", "retrieval"],
                    "classnames": str(tiny_corpus / "classnames.txt"),
                    "templates": str(tiny_corpus / "templates.txt"),
                }
            ]
        },
    }
    path = tmp_path / f"{which}-{loss}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def cli(capsys, *args):
    """``mmcl ARGS`` in this process (the CLI's own entry point); returns what it printed."""
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "which,loss",
    [("tiny-oc-clip", "infonce"), ("tiny-oc-clip", "cluster_infonce"), ("tiny-oc-sigmoid", "siglip")],
)
def test_open_clip_trains_from_a_recipe_and_exports(files, tiny_corpus, tmp_path, capsys, which, loss):
    import open_clip

    out = cli(capsys, "train", write_recipe(tmp_path, tiny_corpus, files, which, loss))
    assert f"weights: open_clip model <- {files[which][1]}" in out
    assert "embed_dim" not in out  # the recipe's model.embed_dim (256) is not this model's (16)
    run = tmp_path / f"run-{loss}"
    assert json.loads((run / "results.json").read_text())[0]["task"] == "zeroshot"
    cli(capsys, "export", "open_clip", str(run), str(tmp_path / "oc"))
    trained, tokenize, _ = mmcl.load_pretrained(run)
    theirs, _, _ = open_clip.create_model_and_transforms(
        which, pretrained=str(tmp_path / "oc" / "open_clip_model.safetensors")
    )
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (theirs.eval().encode_image(images, normalize=True) - trained.encode_image(images)).abs().max() <= 1e-6
        ids = open_clip.get_tokenizer(which)(TEXTS)
        assert (theirs.encode_text(ids, normalize=True) - trained.encode_text(**tokenize(TEXTS))).abs().max() <= 1e-6


@pytest.mark.parametrize("which,loss", [("hf-clip", "infonce"), ("hf-siglip", "siglip"), ("hf-dual", "infonce")])
def test_hf_model_trains_from_a_recipe_and_exports_in_its_own_class(files, tiny_corpus, tmp_path, capsys, which, loss):
    from transformers import AutoModel

    cli(capsys, "train", write_recipe(tmp_path, tiny_corpus, files, which, loss))
    run = tmp_path / f"run-{loss}"
    cli(capsys, "export", "hf", str(run), str(tmp_path / "hf"))
    theirs = AutoModel.from_pretrained(tmp_path / "hf").eval()
    classes = {"hf-clip": "CLIPModel", "hf-siglip": "SiglipModel", "hf-dual": "VisionTextDualEncoderModel"}
    assert type(theirs).__name__ == classes[which]
    trained, tokenize, _ = mmcl.load_pretrained(run)
    images, batch = torch.randn(2, 3, 32, 32), tokenize(TEXTS)
    kwargs = {"input_ids": batch["input_ids"]} if which == "hf-siglip" else batch
    with torch.no_grad():
        ref_i = F.normalize(theirs.get_image_features(pixel_values=images).pooler_output, dim=-1)
        ref_t = F.normalize(theirs.get_text_features(**kwargs).pooler_output, dim=-1)
        assert (trained.encode_image(images) - ref_i).abs().max() <= 1e-6
        assert (trained.encode_text(**batch) - ref_t).abs().max() <= 1e-6
    # and it is no longer the starting model: it trained
    start, _ = build(files, which)
    assert not torch.equal(start.encode_image(images), trained.encode_image(images))


def test_open_clip_resumes_exactly_with_grad_cache_and_ema(files, tiny_corpus, tmp_path):
    """A user's open_clip model, GradCache accumulation (2 micro-batches) and an EMA, stopped at
    step 2 and resumed: the weights (and the EMA) equal the straight run's."""
    from ..conftest import assert_same_weights, straight_and_resumed

    def recipe(out):
        data = yaml.safe_load(open(write_recipe(tmp_path, tiny_corpus, files, "tiny-oc-clip", "infonce")))
        data["train"] = train_section(out, steps=4, lr=1e-3, accumulation_steps=2, ema_decay=0.9, checkpoint_every=2)
        data["eval"] = {"datasets": []}
        return data

    straight, resumed = straight_and_resumed(tmp_path, recipe, stop_at=2)
    assert_same_weights(straight, resumed)
