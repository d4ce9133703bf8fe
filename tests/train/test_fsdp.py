"""Sharded training (``train.sharding: fsdp``, FSDP2) with 2 gloo processes on CPU: the same losses
and final weights as DDP with 2 processes and, for models without BatchNorm, as one process with
the whole batch (default suite: ViT + BERT with InfoNCE; slow: every loss and the quickstart
model); checkpoints that resume exactly across 2 -> 1 -> 2 processes and export.

Tolerance (fp32): losses rtol 1e-5, atol 1e-6; weights rtol 1e-4, atol 1e-5 (as the DDP-vs-one-process
test). Measured when written: FSDP vs DDP weights differ by at most ~1e-7, vs one process ~1e-6.

Every process launch pays seconds of imports, so each launch trains several recipes in a row: run
as a script under torchrun, this file trains the recipes named on its command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

LOSS_TOL = {"rtol": 1e-5, "atol": 1e-6}
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-5}
LOSSES = {
    "infonce": {"name": "infonce"},
    "siglip": {"name": "siglip"},
    # small k and an open gate: the clusters shape the negatives from the first steps
    "cluster_infonce": {"name": "cluster_infonce", "kwargs": {"k": 4, "gate": 1.1, "false_negatives": "mask"}},
}
QUICKSTART_MODEL = {  # recipes/quickstart.yaml's towers (a ResNet-10 and a 2-layer BERT)
    "vision": {
        "name": "resnet18",
        "kwargs": {"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256]},
        "image_size": 48,
    },
    "text": {
        "config": {
            "model_type": "bert",
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 512,
        },
        "pooler": "mean",
        "max_length": 32,
    },
    "embed_dim": 128,
}
STEPS = 4


def recipe(corpus, out: Path, model: str, loss: str, batch: int, **train) -> dict:
    """A ViT + BERT or quickstart-model recipe for the tiny corpus, dropout off (the set-ups draw
    different numbers of random masks per process), no evaluation."""
    from ..conftest import tiny_recipe_dict

    # a given peak: no GEMM is timed at start-up
    data = tiny_recipe_dict(corpus, out, steps=STEPS, checkpoint_every=2, peak_flops=1e12, **train)
    data["data"]["batch_size"] = batch
    data["eval"]["datasets"] = []
    data["loss"] = LOSSES[loss]
    if model == "quickstart":
        tokenizer = data["model"]["text"]["tokenizer"]
        data["model"] = json.loads(json.dumps(QUICKSTART_MODEL))
        data["model"]["text"]["tokenizer"] = tokenizer
    if loss == "siglip":
        data["model"].update(logit_bias_init=-10.0, logit_scale_init=10.0)
    data["model"]["text"]["config"] = {
        **data["model"]["text"]["config"],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    return data


def launch(paths: list[Path], processes: int) -> str:
    """Train the recipes at ``paths`` one after another in ``processes`` processes; the output."""
    cmd = [sys.executable, __file__, *map(str, paths)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), *cmd[1:]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def losses(run: Path) -> list[float]:
    return [json.loads(x)["train/loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]


def weights(run: Path, step: int = STEPS) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) == STEPS
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), **LOSS_TOL)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], **WEIGHT_TOL, msg=name)


def write(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def train_here(data: dict) -> None:
    """One process, in this one (no second start-up)."""
    import mmcl
    from mmcl.recipe import recipe_from_dict

    mmcl.Trainer(recipe_from_dict(data)).fit()


@pytest.fixture(scope="module")
def straight(tiny_corpus, tmp_path_factory):
    """ViT + BERT, infonce: 2 FSDP processes at batch 4, then 2 DDP processes at batch 4 (the same
    launch), and one process at batch 8 (in this one)."""
    root = tmp_path_factory.mktemp("fsdp")
    fsdp = write(recipe(tiny_corpus, root / "fsdp", "vitbert", "infonce", 4, sharding="fsdp"), root / "fsdp.yaml")
    out = launch([fsdp, write(recipe(tiny_corpus, root / "ddp", "vitbert", "infonce", 4), root / "ddp.yaml")], 2)
    train_here(recipe(tiny_corpus, root / "one", "vitbert", "infonce", 8))
    return root, out


def test_fsdp_equals_one_process_with_the_whole_batch(straight):
    root, out = straight
    assert "4 per process x 2 processes" in out and "sharded with FSDP2" in out
    assert_same_run(root / "one", root / "fsdp")


def test_fsdp_equals_ddp(straight):
    root, _ = straight
    assert_same_run(root / "ddp", root / "fsdp")


def test_a_sharded_checkpoint_holds_whole_weights_and_optimizer_shards(straight):
    root, _ = straight
    ckpt = root / "fsdp" / "checkpoints" / f"step-{STEPS:07d}"
    assert sorted(p.name for p in (ckpt / "optimizer").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert weights(root / "fsdp").keys() == weights(root / "one").keys()
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["optimizer"] is None and state["world_size"] == 2
    assert not list((root / "fsdp" / "checkpoints").glob(".tmp-*"))


def test_resume_across_two_one_two_processes_and_export(straight, tmp_path):
    """The FSDP run's step-2 checkpoint (what a stop at step 2 leaves) resumed by one unsharded
    process to step 3, then by 2 FSDP processes to step 4: the straight run's losses and weights.
    The optimizer state goes sharded -> whole (DCP re-shards it for 1 process) -> sharded."""
    from mmcl import cli

    root, _ = straight
    run = tmp_path / "resumed"
    shutil.copytree(root / "fsdp", run)
    shutil.rmtree(run / "checkpoints" / f"step-{STEPS:07d}")
    (run / "checkpoints" / "latest").write_text("step-0000002\n")
    data = yaml.safe_load((root / "fsdp.yaml").read_text())
    data["train"].update(output_dir=str(run), resume="latest")
    data["data"]["batch_size"], data["train"]["stop_at_step"] = 8, 3
    train_here(data)
    assert "optimizer" not in {p.name for p in (run / "checkpoints" / "step-0000003").iterdir()}  # whole
    data["data"]["batch_size"], data["train"]["stop_at_step"] = 4, None
    out = launch([write(data, tmp_path / "two.yaml")], 2)
    assert f"resumed from {run / 'checkpoints' / 'step-0000003'}" in out
    assert_same_run(root / "fsdp", run)
    assert cli.main(["export", "open_clip", str(run), str(tmp_path / "oc")]) == 0  # verified with open_clip
    assert cli.main(["export", "pretrained", str(run), str(tmp_path / "pre")]) == 0


# -- slow: every loss, the quickstart model, DDP as a second reference, FSDP options ---------------

PAIRS = [("vitbert", loss) for loss in LOSSES] + [("quickstart", loss) for loss in LOSSES]
# FSDP options that must not change the result (compared with one process at the whole batch)
OPTIONS = {
    "no-reshard": {"reshard_after_forward": False},
    "fused-adamw": {"fused_adamw": True},  # one kind of tensor per fused call: the groups are split
    "accumulated": {"accumulation_steps": 2},  # GradCache, 2 micro-batches of 2 per process
}


@pytest.fixture(scope="module")
def matrix(tiny_corpus, tmp_path_factory):
    """One process at batch 8, DDP and FSDP with 2 processes at batch 4, over :data:`PAIRS`; FSDP
    also with :data:`OPTIONS`. Three launches in all."""
    root = tmp_path_factory.mktemp("fsdp-matrix")
    plans = {"one": (1, {}), "ddp": (2, {}), "fsdp": (2, {"sharding": "fsdp"})}
    for mode, (processes, train) in plans.items():
        paths = []
        for model, loss in PAIRS:
            if mode == "one" and model == "quickstart":
                continue  # BatchNorm normalises each process's batch: one process differs by design
            name = f"{mode}-{model}-{loss}"
            data = recipe(tiny_corpus, root / name, model, loss, 8 // processes, **train)
            paths.append(write(data, root / f"{name}.yaml"))
        if mode == "fsdp":
            for option, extra in OPTIONS.items():
                batch = 2 if option == "accumulated" else 4
                data = recipe(tiny_corpus, root / f"fsdp-{option}", "vitbert", "infonce", batch, **train, **extra)
                paths.append(write(data, root / f"fsdp-{option}.yaml"))
        launch(paths, processes)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSSES))
def test_fsdp_equals_ddp_and_one_process(matrix, loss):
    assert_same_run(matrix / f"ddp-vitbert-{loss}", matrix / f"fsdp-vitbert-{loss}")
    assert_same_run(matrix / f"one-vitbert-{loss}", matrix / f"fsdp-vitbert-{loss}")


@pytest.mark.slow
@pytest.mark.parametrize("loss", list(LOSSES))
def test_fsdp_equals_ddp_on_the_quickstart_model(matrix, loss):
    """ResNet stages and BERT layers sharded; BatchNorm makes 2 processes differ from one process
    (each normalises its own batch) under DDP and FSDP alike, so DDP is the reference."""
    assert_same_run(matrix / f"ddp-quickstart-{loss}", matrix / f"fsdp-quickstart-{loss}")


@pytest.mark.slow
@pytest.mark.parametrize("option", list(OPTIONS))
def test_fsdp_options_keep_the_result(matrix, option):
    assert_same_run(matrix / "one-vitbert-infonce", matrix / f"fsdp-{option}")


def test_sharding_refuses_what_it_does_not_support(tiny_corpus, tmp_path):
    from mmcl.errors import ConfigError
    from mmcl.recipe import recipe_from_dict

    for key, value, message in [
        ("ema_decay", 0.99, "train.ema_decay"),
        ("precision", "fp16", "train.precision: fp16"),
        ("compile", True, "train.compile"),
    ]:
        data = recipe(tiny_corpus, tmp_path, "vitbert", "infonce", 4, sharding="fsdp", **{key: value})
        with pytest.raises(ConfigError, match=f"train.sharding: fsdp does not support {message}"):
            recipe_from_dict(data)
    data = recipe(tiny_corpus, tmp_path, "vitbert", "infonce", 4, sharding="zero3")
    with pytest.raises(ConfigError, match="train.sharding"):
        recipe_from_dict(data)


def test_an_accelerate_fsdp_launch_shards_and_deepspeed_is_refused(tiny_corpus, tmp_path, monkeypatch):
    """recipes/accelerate/fsdp.yaml turns on train.sharding: fsdp (Accelerate's own FSDP plugin, which
    would quietly run DDP on CPU, is switched off); a DeepSpeed launch is refused in one line."""
    import os

    from mmcl.errors import ConfigError
    from mmcl.recipe import recipe_from_dict
    from mmcl.train.build import make_accelerator

    r = recipe_from_dict(recipe(tiny_corpus, tmp_path, "vitbert", "infonce", 4))
    assert r.train.sharding == "none"
    # setenv (not delenv) first, so teardown removes what the launch set in this process: a
    # remembered launch must not leak into the tests that run after this one
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("MMCL_ACCELERATE_FSDP", "0")
    make_accelerator(r)
    assert r.train.sharding == "fsdp" and os.environ["ACCELERATE_USE_FSDP"] == "false"
    second = recipe_from_dict(recipe(tiny_corpus, tmp_path, "vitbert", "infonce", 4))
    make_accelerator(second)  # a second Trainer in the same launched process shards too
    assert second.train.sharding == "fsdp"
    r = recipe_from_dict(recipe(tiny_corpus, tmp_path, "vitbert", "infonce", 4, ema_decay=0.99))
    with pytest.raises(ConfigError, match="Accelerate's FSDP config: train.sharding: fsdp does not support"):
        make_accelerator(r)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("MMCL_ACCELERATE_FSDP", "0")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="does not support DeepSpeed"):
        make_accelerator(r)


def test_the_accelerate_fsdp_test_leaves_no_launch_behind():
    """Runs after the test above (file order): nothing of its launch is left in this process."""
    import os

    assert os.environ.get("MMCL_ACCELERATE_FSDP") in (None, "0")
    assert os.environ.get("ACCELERATE_USE_FSDP", "false") == "false"


@pytest.mark.slow
def test_accelerate_launch_with_the_fsdp_config_trains_sharded(straight, tmp_path):
    """``accelerate launch --config_file recipes/accelerate/fsdp.yaml`` on a recipe without
    train.sharding: the FSDP run's losses and weights, and the run folder records the sharding."""
    root, _ = straight
    data = yaml.safe_load((root / "fsdp.yaml").read_text())
    del data["train"]["sharding"]
    data["train"]["output_dir"] = str(tmp_path / "run")
    config = Path(__file__).parents[2] / "recipes" / "accelerate" / "fsdp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    cmd += ["--num_processes", "2", "--mixed_precision", "no", "-m", "mmcl.cli", "train"]
    res = subprocess.run([*cmd, str(write(data, tmp_path / "plain.yaml"))], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "4 per process x 2 processes" in res.stdout and "sharded with FSDP2" in res.stdout
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["train"]["sharding"] == "fsdp"
    assert_same_run(root / "fsdp", tmp_path / "run")


def test_shard_units_are_blocks_and_stages():
    import timm
    from transformers import BertConfig, BertModel

    from mmcl.train.sharding import shard_units

    vit = timm.create_model("vit_tiny_patch16_224", depth=3, img_size=32, num_classes=0)
    resnet = timm.create_model("resnet18", layers=[2, 1, 1, 1], num_classes=0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    assert shard_units(vit) == list(vit.blocks)
    assert shard_units(resnet) == [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    assert shard_units(bert) == list(bert.encoder.layer)


if __name__ == "__main__":  # under torchrun: train each recipe named on the command line, in order
    from accelerate.state import PartialState

    import mmcl

    # a run's end_training destroys the process group, which the next run in this process needs
    destroy, PartialState.destroy_process_group = PartialState.destroy_process_group, lambda self, group=None: None
    for path in sys.argv[1:]:
        mmcl.Trainer(mmcl.load_recipe(path)).fit()
    destroy(PartialState())
