"""WiSE-FT: theta(alpha) = (1 - alpha) theta_start + alpha theta_finetuned, against the hand-computed
mix, from `mmcl wise-ft` on a fine-tuning run (a LoRA one: merged first) that started from another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmcl
from mmcl.cli import main
from mmcl.errors import ConfigError
from mmcl.models.adapters import merge_adapters
from mmcl.models.wise_ft import interpolate_weights, interpolated_model
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict


def tiny_model(seed: int, **model):
    data = tiny_recipe_dict(Path("/nonexistent"), Path("/nonexistent"))
    data["model"].update(model)
    cfg = recipe_from_dict(data, model_only=True).model
    torch.manual_seed(seed)
    return mmcl.create_model(cfg)


def test_interpolation_endpoints_and_midpoint_by_hand():
    start, tuned = tiny_model(0).state_dict(), tiny_model(1).state_dict()
    start["steps_seen"], tuned["steps_seen"] = torch.tensor(3), torch.tensor(5)  # an integer buffer
    at0, at1, mid = (interpolate_weights(start, tuned, a) for a in (0.0, 1.0, 0.5))
    for name in start:
        assert torch.equal(at1[name], tuned[name]), name
        if start[name].is_floating_point():
            assert torch.equal(at0[name], start[name]), name
            hand = (0.5 * start[name].double() + 0.5 * tuned[name].double()).float()
            assert torch.equal(mid[name], hand), name
        else:  # integer buffers (BatchNorm's num_batches_tracked): the fine-tuned model's
            assert torch.equal(at0[name], tuned[name]) and torch.equal(mid[name], tuned[name]), name
    scale = (start["logit_scale"] + tuned["logit_scale"]) / 2  # in log space: a geometric mean of the scales
    assert torch.allclose(mid["logit_scale"], scale)


def test_different_architectures_are_refused_in_one_line():
    start, tuned = tiny_model(0), tiny_model(1, embed_dim=8)
    with pytest.raises(
        ConfigError, match=r"^wise-ft: the start and fine-tuned models differ in architecture .*--start"
    ):
        interpolated_model(start, tuned, 0.5)


def write(tmp_path, name: str, data: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_wise_ft_cli_on_a_lora_fine_tuning_run(tiny_corpus, tmp_path, capsys):
    pre = tiny_recipe_dict(tiny_corpus, tmp_path / "pre", steps=2)
    assert main(["train", write(tmp_path, "pre", pre)]) == 0
    tune = tiny_recipe_dict(tiny_corpus, tmp_path / "tune", steps=2, lr=5e-2)
    tune["model"]["init_from"] = str(tmp_path / "pre")
    tune["model"]["adapter"] = {
        "r": 2,
        "target_modules": {"vision": ["qkv"], "text": ["query"]},
        "trainable": ["_proj"],
    }
    assert main(["train", write(tmp_path, "tune", tune)]) == 0
    capsys.readouterr()

    out = tmp_path / "sweep"
    args = ["wise-ft", str(tmp_path / "tune"), "--alphas", "0,0.5,1", "--output", str(out)]
    args += ["--dataset", str(tiny_corpus / "test.csv"), "--dataset", str(tiny_corpus / "novel.csv")]
    assert main([*args, "--save-alpha", "0.5", str(tmp_path / "mid")]) == 0
    printed = capsys.readouterr().out
    assert f"start: {tmp_path / 'pre'}" in printed and "best alpha:" in printed
    result = json.loads((out / "wise_ft.json").read_text())
    assert [r["alpha"] for r in result["alphas"]] == [0.0, 0.5, 1.0]
    assert result["best_alpha"] in (0.0, 0.5, 1.0)
    assert len(result["selected_by"]) == 2 and (out / "wise_ft.png").stat().st_size > 1000
    # alpha 1 is the fine-tuned run's own evaluation (its merged LoRA weights)
    own = {
        f"{r['dataset']}/{r['task']}": r["metrics"]
        for r in json.loads((tmp_path / "tune" / "results.json").read_text())
    }
    assert result["alphas"][-1]["metrics"]["test/zeroshot/acc1"] == pytest.approx(own["test/zeroshot"]["acc1"])

    # the saved alpha-0.5 model is the hand mix of the start and the merged fine-tuned weights
    start = load_file(str(tmp_path / "pre" / "checkpoints" / "step-0000002" / "model.safetensors"))
    tuned = merge_adapters(mmcl.from_pretrained(tmp_path / "tune")).state_dict()
    saved = load_file(str(tmp_path / "mid" / "model.safetensors"))
    assert saved.keys() == tuned.keys()
    for name, value in saved.items():
        hand = (
            (0.5 * start[name].double() + 0.5 * tuned[name].double()).float()
            if value.is_floating_point()
            else tuned[name]
        )
        assert torch.equal(value, hand), name
    assert json.loads((tmp_path / "mid" / "config.json").read_text())["model"]["adapter"] is None


def test_start_of_a_library_backend_run_is_its_pretrained_weights(tmp_path):
    from mmcl.models.wise_ft import start_model

    from ..models.library_models import write_open_clip

    config, weights = write_open_clip(tmp_path, "tiny-oc-clip")
    section = {"backend": "open_clip", "name": str(config), "pretrained": str(weights), "adapter": {"r": 2}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump({"model": section, "train": {"seed": 0}}))
    model, source = start_model(tmp_path / "run")
    assert source == str(weights)
    ours = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
    assert all(torch.equal(ours[k], v) for k, v in load_file(str(weights)).items())
    (tmp_path / "run" / "recipe.yaml").write_text(
        yaml.safe_dump({"model": tiny_recipe_dict(tmp_path, tmp_path)["model"]})
    )
    with pytest.raises(ConfigError, match="started from random init.*--start"):
        start_model(tmp_path / "run")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--alphas", "0,2"], "--alphas: comma-separated numbers in [0, 1]"),
        (["--alphas", "a,b"], "--alphas: comma-separated numbers in [0, 1]"),
        (["train.lr=1"], "only takes eval.* overrides"),
        ([], "is not an mmcl run folder"),
    ],
)
def test_wise_ft_cli_mistakes_are_one_line(tmp_path, capsys, args, message):
    assert main(["wise-ft", str(tmp_path), *args]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmcl: error:") and message in err and "\n" not in err
