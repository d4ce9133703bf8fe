"""open_clip interop: an exported mmcl model gives the same embeddings in open_clip (both ways of
loading it), open_clip models import into mmcl, and what cannot be mapped is refused by name."""

from __future__ import annotations

import json

import pytest
import torch

from mmcl.errors import ConfigError
from mmcl.interop import export_open_clip, from_pretrained, import_open_clip, load_pretrained
from mmcl.models.openclip.config import OPEN_CLIP_MEAN, OPEN_CLIP_STD

from ..conftest import MINILM, TINY_BERT
from .conftest import TEXTS, PickleBomb, state_equal, tiny_model

open_clip = pytest.importorskip("open_clip")
ATOL = 1e-5


def _mmcl_embeddings(model, images, texts, preprocess=None, tokenize=None):
    from mmcl.data import Tokenize, image_transforms, load_tokenizer
    from mmcl.recipe import AugmentConfig

    preprocess = preprocess or image_transforms(model.vision.data_config(), AugmentConfig(enabled=False))[1]
    tokenize = tokenize or Tokenize(load_tokenizer(model.cfg.text), model.cfg.text.max_length)
    pixels = torch.stack([preprocess(im) for im in images])
    with torch.no_grad():
        return pixels, model.encode_image(pixels), model.encode_text(**tokenize(texts))


def _open_clip_embeddings(oc_model, preprocess, tokenizer, images, texts):
    oc_model.eval()
    pixels = torch.stack([preprocess(im) for im in images])
    with torch.no_grad():
        return (
            pixels,
            oc_model.encode_image(pixels, normalize=True),
            oc_model.encode_text(tokenizer(texts), normalize=True),
        )


@pytest.fixture
def no_pretrained_text_weights(monkeypatch):
    """open_clip must build the HF text tower from its config, never read pretrained weights."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"AutoModel.from_pretrained{args} called")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)


def test_export_gives_the_same_embeddings_in_open_clip(vit_model, images, tmp_path, no_pretrained_text_weights):
    result = export_open_clip(vit_model, tmp_path / "oc")
    out = result["dir"]
    assert result["max_abs_diff"] <= 1e-4
    assert (out / "open_clip_model.safetensors").is_file() and (out / "text" / "config.json").is_file()
    cfg = json.loads((out / "open_clip_config.json").read_text())
    vision, text = cfg["model_cfg"]["vision_cfg"], cfg["model_cfg"]["text_cfg"]
    assert vision["timm_model_name"] == "test_vit" and vision["timm_pool"] == "" and vision["timm_proj"] == "linear"
    assert text["hf_pooler_type"] == "mean_pooler" and text["hf_proj_type"] == "linear" and text["context_length"] == 24
    assert cfg["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5] and cfg["preprocess_cfg"]["size"] == 160

    oc_model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    assert float(oc_model.logit_scale) == 2.5
    pixels, image, text_emb = _open_clip_embeddings(oc_model, preprocess, tokenizer, images, TEXTS)
    ref_pixels, ref_image, ref_text = _mmcl_embeddings(vit_model, images, TEXTS)
    assert torch.allclose(pixels, ref_pixels, atol=ATOL)  # the same preprocessing
    assert torch.allclose(image, ref_image, atol=ATOL)
    assert torch.allclose(text_emb, ref_text, atol=ATOL)


def test_export_through_add_model_config_and_a_bin_file(tmp_path, images, no_pretrained_text_weights):
    model = tiny_model(
        "test_resnet",
        seed=2,
        logit_bias_init=-10.0,
        vision_fields={"image_size": 64, "pool": "max"},
        text_fields={"pooler": "cls"},
    )
    result = export_open_clip(model, tmp_path / "oc", name="mmcl-interop-test-resnet", weights_format="bin")
    weights = result["weights"]
    assert weights.name == "open_clip_pytorch_model.bin"
    torch.load(weights, weights_only=True)  # a plain state dict

    open_clip.add_model_config(result["model_config"])
    assert "mmcl-interop-test-resnet" in open_clip.list_models()
    pp = result["preprocess_cfg"]
    assert pp["interpolation"] == "bilinear" and pp["size"] == 64
    oc_model, _, preprocess = open_clip.create_model_and_transforms(
        "mmcl-interop-test-resnet",
        pretrained=str(weights),
        image_mean=pp["mean"],
        image_std=pp["std"],
        image_interpolation=pp["interpolation"],
    )
    assert float(oc_model.logit_bias) == -3.25
    tokenizer = open_clip.get_tokenizer("mmcl-interop-test-resnet")
    pixels, image, text = _open_clip_embeddings(oc_model, preprocess, tokenizer, images, TEXTS)
    ref_pixels, ref_image, ref_text = _mmcl_embeddings(model, images, TEXTS)
    assert pixels.shape[-2:] == (64, 64)
    assert torch.allclose(pixels, ref_pixels, atol=ATOL)
    assert torch.allclose(image, ref_image, atol=ATOL)
    assert torch.allclose(text, ref_text, atol=ATOL)


def test_round_trip_mmcl_open_clip_mmcl_is_the_original(tmp_path, images):
    model = tiny_model(
        "test_resnet",
        seed=3,
        logit_bias_init=-10.0,
        vision_fields={"image_size": 64, "pool": "max", "kwargs": {"drop_path_rate": 0.1}},
        text_fields={"pooler": "cls"},
    )
    out = export_open_clip(model, tmp_path / "oc")["dir"]
    back = import_open_clip(out)
    assert state_equal(back, model)
    a, b = back.cfg, model.cfg
    assert (a.embed_dim, a.head, a.logit_bias_init, a.text.pooler, a.text.max_length) == (16, "linear", -10, "cls", 24)
    for field in ("name", "pool", "image_size", "kwargs"):
        assert getattr(a.vision, field) == getattr(b.vision, field)
    assert a.text.config["hidden_size"] == 32
    # the same preprocessing and embeddings; mmcl.from_pretrained reads open_clip folders too
    loaded, tokenize, preprocess = load_pretrained(out)
    assert state_equal(loaded, model)
    ours = _mmcl_embeddings(loaded, images, TEXTS, preprocess, tokenize)
    for x, y in zip(ours, _mmcl_embeddings(model, images, TEXTS)):
        assert torch.equal(x, y)


def test_timm_kwargs_travel_in_a_timm_config_folder(tmp_path, images, no_pretrained_text_weights):
    """open_clip passes no kwargs to timm, so a tower built with some (the quickstart's narrow ResNet,
    a tiny ViT) is named local-dir:OUT/vision, whose config.json timm builds it from."""
    from ..conftest import TINY_VIT

    for vision, kwargs, fields in [
        ("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}, {"image_size": 48}),
        (TINY_VIT["name"], {**TINY_VIT["kwargs"], "global_pool": "avg", "drop_rate": 0.1}, {}),
    ]:
        model = tiny_model(vision, vision_fields={"kwargs": kwargs, **fields})
        out = export_open_clip(model, tmp_path / vision)["dir"]
        name = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]["timm_model_name"]
        assert name == f"local-dir:{out / 'vision'}"
        assert json.loads((out / "vision" / "config.json").read_text())["model_args"] == kwargs
        oc_model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
        got = _open_clip_embeddings(oc_model, preprocess, tokenizer, images, TEXTS)
        for x, y in zip(got, _mmcl_embeddings(model, images, TEXTS)):
            assert torch.allclose(x, y, atol=ATOL)
        back = import_open_clip(out.rename(tmp_path / f"{vision}-moved"))
        assert state_equal(back, model) and back.cfg.vision.name == vision and back.cfg.vision.kwargs == kwargs
        assert back.cfg.vision.image_size == model.cfg.vision.image_size


def test_a_moved_export_still_imports(vit_model, tmp_path):
    out = export_open_clip(vit_model, tmp_path / "oc", verify=False)["dir"]
    moved = out.rename(tmp_path / "moved")
    assert state_equal(import_open_clip(moved), vit_model)


def test_import_an_open_clip_model_and_fine_tune_it(tmp_path, images):
    """A model open_clip built and saved itself (its default timm_pool 'avg' on a ViT, a training
    checkpoint with DDP prefixes) imports with the same embeddings, trains with an mmcl loss, and saves."""
    from mmcl.losses import create_loss
    from mmcl.recipe import resolve_path

    text_dir = tmp_path / "bert"
    from transformers import BertConfig

    BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}).save_pretrained(text_dir)
    tok_dir = resolve_path(MINILM)
    model_cfg = {
        "embed_dim": 16,
        "init_logit_bias": -10.0,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_pool": "avg", "timm_proj": "linear", "image_size": 160},
        "text_cfg": {
            "hf_model_name": str(text_dir),
            "hf_tokenizer_name": tok_dir,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
            "context_length": 20,
        },
    }
    config_path = tmp_path / "oc-native.json"
    config_path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(config_path)
    torch.manual_seed(5)
    oc_model, _, preprocess = open_clip.create_model_and_transforms("oc-native", pretrained_text=False)
    tokenizer = open_clip.get_tokenizer("oc-native")
    ckpt = tmp_path / "epoch_1.pt"
    state = {f"module.{k}": v for k, v in oc_model.state_dict().items()}  # as DDP training saves it
    torch.save({"epoch": 1, "name": "oc-native", "state_dict": state}, ckpt)

    model = import_open_clip(config_path, pretrained=ckpt)
    assert model.cfg.vision.pool == "avg" and model.cfg.logit_bias_init == -10.0
    assert model.cfg.text.max_length == 20 and model.cfg.text.tokenizer == tok_dir
    # open_clip's default (OpenAI) statistics are what its preprocess used; the import keeps them
    data = model.vision.data_config()
    assert tuple(data["mean"]) == pytest.approx(OPEN_CLIP_MEAN) and tuple(data["std"]) == pytest.approx(OPEN_CLIP_STD)
    pixels, image, text = _open_clip_embeddings(oc_model, preprocess, tokenizer, images, TEXTS)
    ref_pixels, ref_image, ref_text = _mmcl_embeddings(model, images, TEXTS)
    assert torch.allclose(pixels, ref_pixels, atol=ATOL)
    assert torch.allclose(image, ref_image, atol=ATOL)
    assert torch.allclose(text, ref_text, atol=ATOL)

    # fine-tune one step with an mmcl loss
    from mmcl.data import Tokenize, load_tokenizer

    model.train()
    loss_fn = create_loss("siglip")
    batch = Tokenize(load_tokenizer(model.cfg.text), 20)(TEXTS)
    before = model.image_proj.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(ref_pixels, **batch)
    loss = loss_fn(out.image_embeds, out.text_embeds, out.logit_scale, out.logit_bias)
    loss = loss if isinstance(loss, torch.Tensor) else loss.loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.image_proj.weight)
    assert model.logit_bias.grad is not None
    # and save it as an mmcl pretrained folder
    saved = from_pretrained(model.save_pretrained(tmp_path / "finetuned"))
    assert state_equal(saved, model)


def test_unsupported_mmcl_settings_are_named(tmp_path, monkeypatch):
    model = tiny_model("test_vit", head="mlp")
    with pytest.raises(ConfigError, match=r"model\.head 'mlp'.*supported: 'linear'"):
        export_open_clip(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()  # nothing written
    from mmcl.models import create_model
    from mmcl.recipe import ModelConfig, TextConfig, VisionConfig

    distil = create_model(
        ModelConfig(
            vision=VisionConfig(name="test_vit"),
            text=TextConfig(
                config={"model_type": "distilbert", "dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64},
                tokenizer=MINILM,
            ),
            embed_dim=16,
        )
    )
    with pytest.raises(ConfigError, match=r"model_type 'distilbert'.*supported: bert, roberta, xlm-roberta"):
        export_open_clip(distil, tmp_path / "c")


def test_an_unfaithful_export_is_caught_and_removed(vit_model, tmp_path, monkeypatch):
    from mmcl.models.openclip import config as openclip_config

    # map mmcl's mean pooling onto open_clip's first-token pooling: the check must notice
    monkeypatch.setitem(openclip_config.POOLERS, "mean", "cls_last_hidden_state_pooler")
    with pytest.raises(ConfigError, match="embeddings of the exported model differ"):
        export_open_clip(vit_model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_unsupported_open_clip_settings_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        import_open_clip("ViT-B-32", pretrained=tmp_path / "none.safetensors")
    message = str(err.value)
    assert "vision_cfg without timm_model_name" in message and "text_cfg without hf_model_name" in message
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_pool": "abs_attn", "timm_proj": "mlp"},
        "text_cfg": {"hf_model_name": "bert-base-uncased", "hf_pooler_type": "cls_pooler"},
    }
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        import_open_clip(tmp_path / "bad.json", pretrained=tmp_path / "none.safetensors")
    message = str(err.value)
    for part in ("timm_proj 'mlp'", "timm_pool 'abs_attn'", "hf_proj_type 'mlp'", "hf_pooler_type 'cls_pooler'"):
        assert part in message


def test_import_refuses_pickled_code(vit_model, tmp_path):
    out = export_open_clip(vit_model, tmp_path / "oc", verify=False)["dir"]
    marker = tmp_path / "pickle-ran"
    bomb = tmp_path / "evil.bin"
    torch.save({"state_dict": {"x": PickleBomb(marker)}}, bomb)
    with pytest.raises(ConfigError, match="never unpickles"):
        import_open_clip(out, pretrained=bomb)
    assert not marker.exists()


def test_cli_export_commands(vit_model, tmp_path, capsys):
    import argparse

    from mmcl.cli.export import add_parser

    parser = argparse.ArgumentParser(prog="mmcl")
    add_parser(parser.add_subparsers(dest="command"))
    pre = tmp_path / "pre"
    vit_model.save_pretrained(pre)

    def run(*argv):
        args = parser.parse_args(["export", *argv])
        return args.func(args)

    assert run("open_clip", str(pre), str(tmp_path / "oc"), "--name", "cli-test") == 0
    printed = capsys.readouterr().out
    assert "local-dir:" in printed and "max abs difference" in printed
    assert (tmp_path / "oc" / "cli-test.json").is_file()
    assert run("pretrained", str(tmp_path / "oc"), str(tmp_path / "back")) == 0
    assert state_equal(from_pretrained(tmp_path / "back"), vit_model)
    with pytest.raises(ConfigError, match="for mmcl run folders"):
        run("pretrained", str(pre), str(tmp_path / "x"), "--weights", "ema")


def test_eval_adapters_take_exported_folders(vit_model, images, tmp_path):
    from mmcl.eval.adapters import MmclAdapter, OpenClipAdapter, load_adapter

    pre = vit_model.save_pretrained(tmp_path / "pre")
    oc = export_open_clip(vit_model, tmp_path / "oc", verify=False)["dir"]
    ours, theirs = load_adapter(str(pre), device="cpu"), load_adapter(str(oc), device="cpu")
    assert isinstance(ours, MmclAdapter) and isinstance(theirs, OpenClipAdapter)
    for adapter in (ours, theirs):
        pixels = torch.stack([adapter.preprocess(im) for im in images])
        _, ref_image, ref_text = _mmcl_embeddings(vit_model, images, TEXTS)
        assert torch.allclose(adapter.encode_image(pixels), ref_image, atol=ATOL)
        assert torch.allclose(adapter.encode_text(TEXTS), ref_text, atol=ATOL)


def test_mmcl_command_has_export_once_hooked(vit_model, tmp_path):
    from mmcl import cli

    parser = cli._parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    if "export" not in commands:
        pytest.skip("`mmcl export` is not hooked into mmcl/cli.py yet")
    pre = vit_model.save_pretrained(tmp_path / "pre")
    assert cli.main(["export", "open_clip", str(pre), str(tmp_path / "oc")]) == 0
    assert cli.main(["export", "pretrained", str(tmp_path / "oc"), str(tmp_path / "back")]) == 0
    assert state_equal(from_pretrained(tmp_path / "back"), vit_model)
    assert cli.main(["export", "open_clip", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
