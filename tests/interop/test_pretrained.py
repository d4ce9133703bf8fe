"""save_pretrained / from_pretrained / load_pretrained / push_to_hub: self-contained folders,
identical models, safetensors only."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import torch
import yaml

from mmcl.errors import ConfigError
from mmcl.interop import from_pretrained, load_pretrained, save_pretrained
from mmcl.models import DualEncoder

from ..conftest import tiny_recipe_dict
from .conftest import TEXTS, PickleBomb, state_equal, tiny_model


def _eval_transform(model):
    from mmcl.data import image_transforms
    from mmcl.recipe import AugmentConfig

    return image_transforms(model.vision.data_config(), AugmentConfig(enabled=False))[1]


def _tokenize(model):
    from mmcl.data import Tokenize, load_tokenizer

    return Tokenize(load_tokenizer(model.cfg.text), model.cfg.text.max_length)


@torch.no_grad()
def test_save_load_round_trip_gives_the_same_model(vit_model, images, tmp_path):
    out = vit_model.save_pretrained(tmp_path / "pre")
    names = sorted(p.name for p in out.iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"} <= set(names)
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "DualEncoder" and config["text_config"]["model_type"] == "bert"
    assert config["model"]["text"]["config"] is None and config["model"]["embed_dim"] == 16
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["input_size"] == [3, 160, 160] and pre["mean"] == [0.5, 0.5, 0.5] and pre["interpolation"] == "bicubic"

    model, tokenize, preprocess = load_pretrained(out)
    assert isinstance(model, DualEncoder) and not model.training
    assert state_equal(model, vit_model)
    # the same transform and tokens as the original's, and identical embeddings
    ref_tf, ref_tok = _eval_transform(vit_model), _tokenize(vit_model)
    pixels = torch.stack([preprocess(im) for im in images])
    assert torch.equal(pixels, torch.stack([ref_tf(im) for im in images]))
    batch = tokenize(TEXTS)
    assert all(torch.equal(batch[k], ref_tok(TEXTS)[k]) for k in batch)
    assert torch.equal(model.encode_image(pixels), vit_model.encode_image(pixels))
    assert torch.equal(model.encode_text(**batch), vit_model.encode_text(**batch))
    # the class method and the loaded model's config are self-contained: saving again works
    again = DualEncoder.from_pretrained(out)
    assert state_equal(again, vit_model)
    assert again.cfg.text.config["hidden_size"] == 32 and again.cfg.text.tokenizer == str(out)
    assert state_equal(from_pretrained(again.save_pretrained(tmp_path / "again")), vit_model)


def test_options_survive_save_and_load(tmp_path):
    model = tiny_model(
        "test_resnet",
        seed=1,
        head="mlp",
        logit_bias_init=-10.0,
        vision_fields={"image_size": 64, "pool": "max"},
        text_fields={"pooler": "cls"},
    )
    loaded = from_pretrained(save_pretrained(model, tmp_path / "pre"))
    assert state_equal(loaded, model)
    assert loaded.cfg.head == "mlp" and loaded.cfg.vision.pool == "max" and loaded.cfg.text.pooler == "cls"
    assert loaded.cfg.logit_bias_init == -10.0 and float(loaded.logit_bias) == -3.25
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), model.encode_image(x))
    assert loaded.vision.data_config()["input_size"] == (3, 64, 64)


def test_loading_never_unpickles(vit_model, tmp_path):
    out = save_pretrained(vit_model, tmp_path / "pre")
    (out / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    torch.save({"weights": PickleBomb(marker)}, out / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"safetensors only.*pytorch_model\.bin"):
        from_pretrained(out)
    assert not marker.exists()


def test_loading_refuses_non_builtin_text_models(vit_model, tmp_path):
    out = save_pretrained(vit_model, tmp_path / "pre")
    config = json.loads((out / "config.json").read_text())
    config["text_config"]["model_type"] = "my_remote_model"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="not a built-in transformers model type"):
        from_pretrained(out)


def test_unknown_folders_and_keys_are_named(vit_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a pretrained folder"):
        from_pretrained(tmp_path / "empty")
    out = save_pretrained(vit_model, tmp_path / "pre")
    config = json.loads((out / "config.json").read_text())
    config["model"]["vision"]["nmae"] = "x"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="did you mean 'name'"):
        from_pretrained(out)


def test_push_to_hub_uploads_the_saved_folder(vit_model, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            # the folder is complete at upload time: it loads, and it is the model
            files = sorted(p.name for p in Path(folder_path).iterdir())
            same = state_equal(from_pretrained(folder_path), vit_model)
            calls.append(("upload_folder", repo_id, files, same, kwargs))
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert vit_model.push_to_hub("someone/tiny-clip", token="tok", private=True) == "commit-info"
    assert calls[0] == ("init", "tok")
    assert calls[1] == ("create_repo", "someone/tiny-clip", {"private": True, "exist_ok": True, "repo_type": "model"})
    _, repo, files, same, kwargs = calls[2]
    assert repo == "someone/tiny-clip" and same
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(files)
    assert kwargs["repo_type"] == "model"


def test_hub_repo_ids_download_safe_files_only(vit_model, tmp_path, monkeypatch):
    import huggingface_hub

    out = save_pretrained(vit_model, tmp_path / "snapshot")
    seen = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        seen.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model, tokenize, _ = load_pretrained("someone/tiny-clip", revision="v1")
    assert state_equal(model, vit_model) and tokenize.max_length == 24
    assert seen["repo_id"] == "someone/tiny-clip" and seen["revision"] == "v1"
    assert "model.safetensors" in seen["allow_patterns"]
    pickles = ["pytorch_model.bin", "open_clip_pytorch_model.bin", "model.pt", "model.pth", "tokenizer.pkl"]
    assert not [f for f in pickles for p in seen["allow_patterns"] if fnmatch.fnmatch(f, p)]


@pytest.fixture(scope="module")
def run_dir(tiny_corpus, tmp_path_factory):
    """A run folder as `mmcl train` writes it, with model and EMA weights that differ."""
    from mmcl.data import load_tokenizer
    from mmcl.models import create_model, text_model_config
    from mmcl.recipe import recipe_from_dict
    from mmcl.train.checkpoint import save_checkpoint
    from mmcl.train.run_dir import save_run_metadata

    root = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict(tiny_recipe_dict(tiny_corpus, root))
    text_config = text_model_config(recipe.model.text)
    torch.manual_seed(0)
    model = create_model(recipe.model, text_config=text_config)
    torch.manual_seed(1)
    ema = create_model(recipe.model, text_config=text_config)
    save_run_metadata(root, recipe, text_config, load_tokenizer(recipe.model.text))
    save_checkpoint(root, 4, model, {"step": 4}, keep=1, extra_models={"ema": ema})
    return root, model, ema


def test_run_folders_load_with_their_ema_by_default(run_dir, tmp_path):
    root, model, ema = run_dir
    assert state_equal(from_pretrained(root), ema)
    assert state_equal(from_pretrained(root, ema=False), model)
    loaded, tokenize, preprocess = load_pretrained(root, ema=False)
    assert tokenize.max_length == 24 and preprocess is not None
    assert state_equal(from_pretrained(save_pretrained(loaded, tmp_path / "pre")), model)


RECORDS = [
    {"dataset": "shapes-test", "task": "zeroshot", "metrics": {"acc1": 0.5, "acc5": 0.75, "num_items": 8}},
    {
        "dataset": "shapes-test",
        "task": "retrieval",
        "metrics": {
            "image_retrieval_recall@1": 0.25,
            "text_retrieval_recall@1": 0.375,
            "image_retrieval_mean_rank": 3.5,
        },
    },
]


@pytest.fixture
def evaluated_run(run_dir, tmp_path):
    """A copy of ``run_dir`` whose step-4 checkpoint (its EMA) was evaluated, and an older results.json."""
    import shutil

    root = tmp_path / "evaluated"
    shutil.copytree(run_dir[0], root)
    (root / "eval").mkdir()
    records = [{**r, "model": "tiny", "pretrained": "step-4", "step": 4} for r in RECORDS]
    (root / "eval" / "step-0000004.json").write_text(json.dumps(records))
    (root / "results.json").write_text(json.dumps([{**records[0], "step": 2}]))  # not these weights
    return root


def _card(folder):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def test_export_writes_a_card_the_hub_parser_reads(evaluated_run, tmp_path, capsys):
    """Licence, datasets, base model and the run's results in the Hub's model-index, the recipe,
    and how to load the model; read back with huggingface_hub's own card parser."""
    from mmcl.cli import main

    out = tmp_path / "pre"
    args = ["export", "pretrained", str(evaluated_run), str(out), "--license", "mit", "--dataset", "someone/shapes"]
    assert main([*args, "--base-model", "someone/start"]) == 0
    assert f"model card: {out / 'README.md'}" in capsys.readouterr().out
    card = _card(out)
    data = card.data
    assert data.license == "mit" and data.datasets == ["someone/shapes"] and data.base_model == "someone/start"
    assert data.library_name == "mmcl" and data.pipeline_tag == "zero-shot-image-classification"
    assert data.model_name == "tiny"
    got = {(r.dataset_name, r.task_type, r.metric_type): r.metric_value for r in data.eval_results}
    assert got == {  # the headline metrics of step 4 (the EMA the export wrote), not the older results.json
        ("shapes-test", "zero-shot-image-classification", "acc1"): 0.5,
        ("shapes-test", "zero-shot-image-classification", "acc5"): 0.75,
        ("shapes-test", "image-text-retrieval", "image_retrieval_recall@1"): 0.25,
        ("shapes-test", "image-text-retrieval", "text_retrieval_recall@1"): 0.375,
    }
    assert "| shapes-test | Zero-shot image classification | acc1 | 50.00% |" in card.text
    assert f'mmcl.load_pretrained("{out}")' in card.text and f"mmcl export open_clip {out} OUT" in card.text
    recipe = yaml.safe_load(card.text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert recipe == yaml.safe_load((evaluated_run / "recipe.yaml").read_text())
    assert yaml.safe_load((out / "training_recipe.yaml").read_text()) == recipe

    # defaults: apache-2.0 and the recipe's training data by name (never a local path)
    assert main(["export", "pretrained", str(evaluated_run), str(tmp_path / "plain")]) == 0
    plain = _card(tmp_path / "plain").data
    assert plain.license == "apache-2.0" and plain.datasets == ["shapes0"] and plain.base_model is None
    # the trained weights are not what the run evaluated (its EMA): no results, and the card says why
    assert main(["export", "pretrained", str(evaluated_run), str(tmp_path / "raw"), "--weights", "model"]) == 0
    raw = _card(tmp_path / "raw")
    assert raw.data.eval_results is None and "the run evaluated the EMA of its weights" in raw.text
    # a folder exported again keeps its card's facts
    assert main(["export", "pretrained", str(out), str(tmp_path / "again")]) == 0
    again = _card(tmp_path / "again").data
    assert again.license == "mit" and again.datasets == ["someone/shapes"] and again.eval_results == data.eval_results
    # an open_clip export's card loads it with open_clip
    assert main(["export", "open_clip", str(evaluated_run), str(tmp_path / "oc"), "--no-verify"]) == 0
    oc = _card(tmp_path / "oc")
    assert oc.data.library_name == "open_clip" and oc.data.eval_results == data.eval_results
    assert f'open_clip.create_model_and_transforms("local-dir:{tmp_path / "oc"}")' in oc.text


def test_cards_of_changed_weights_and_of_the_hub(evaluated_run, monkeypatch, tmp_path):
    import huggingface_hub

    model = from_pretrained(evaluated_run)
    with torch.no_grad():
        model.logit_scale.add_(1.0)  # a fine-tune
    card = _card(save_pretrained(model, tmp_path / "tuned"))
    assert card.data.eval_results is None and "The weights changed after they were loaded" in card.text

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            uploaded["card"] = _card(Path(folder_path))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    from_pretrained(evaluated_run).push_to_hub("someone/tiny-clip", license="cc-by-4.0")
    card = uploaded["card"]
    assert card.data.license == "cc-by-4.0" and len(card.data.eval_results) == 4
    assert 'mmcl.load_pretrained("someone/tiny-clip")' in card.text
