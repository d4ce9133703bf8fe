"""A real 2-process CPU run (torchrun, gloo) with per-process batch B follows the same loss
trajectory, and ends with the same weights, as one process with batch 2B."""

import json
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file

from ..conftest import tiny_recipe_dict


def write_recipe(corpus, out, batch_size, path):
    data = tiny_recipe_dict(corpus, out, steps=5, checkpoint_every=100)
    data["data"]["batch_size"] = batch_size
    data["eval"]["datasets"] = []
    # no dropout: the two set-ups draw different numbers of random masks per process
    data["model"]["text"]["config"] = {
        **data["model"]["text"]["config"],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def losses(run):
    return [json.loads(x)["train/loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]


def test_two_processes_match_one_process_with_the_whole_batch(tiny_corpus, tmp_path):
    one = write_recipe(tiny_corpus, tmp_path / "one", 8, tmp_path / "one.yaml")
    two = write_recipe(tiny_corpus, tmp_path / "two", 4, tmp_path / "two.yaml")
    res = subprocess.run([sys.executable, "-m", "mmcl.cli", "train", str(one)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mmcl.cli", "train", str(two)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 per process x 2 processes" in res.stdout and "MULTI_CPU" in res.stdout
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 5  # one line per step: only the main process logs
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
    wa = load_file(str(tmp_path / "one" / "checkpoints" / "step-0000005" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "checkpoints" / "step-0000005" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5, msg=name)


def test_resume_with_another_world_size(tiny_corpus, tmp_path):
    """1 process at batch 8 stops at step 2; 2 processes at batch 4 resume it. The global batch and
    data order are unchanged, so losses and weights follow the straight 1-process run."""
    straight = write_recipe(tiny_corpus, tmp_path / "straight", 8, tmp_path / "straight.yaml")
    res = subprocess.run([sys.executable, "-m", "mmcl.cli", "train", str(straight)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]

    first = write_recipe(tiny_corpus, tmp_path / "resized", 8, tmp_path / "first.yaml")
    res = subprocess.run(
        [sys.executable, "-m", "mmcl.cli", "train", str(first), "train.stop_at_step=2", "train.checkpoint_every=2"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    second = write_recipe(tiny_corpus, tmp_path / "resized", 4, tmp_path / "second.yaml")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "mmcl.cli",
            "train",
            str(second),
            "train.resume=latest",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout and "4 per process x 2 processes" in res.stdout
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resized")
    assert len(a) == len(b) == 5
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
    wa = load_file(str(tmp_path / "straight" / "checkpoints" / "step-0000005" / "model.safetensors"))
    wb = load_file(str(tmp_path / "resized" / "checkpoints" / "step-0000005" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5, msg=name)


def test_resume_with_a_larger_global_batch_continues_at_the_same_sample(tiny_corpus, tmp_path):
    """1 x 8 for 2 steps, then 2 x 8: the epoch continues at sample 16 and every sample of it is
    trained on exactly once."""
    first = write_recipe(tiny_corpus, tmp_path / "run", 8, tmp_path / "first.yaml")
    common = ["train.record_samples=true", "train.steps=4"]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmcl.cli",
            "train",
            str(first),
            "train.stop_at_step=2",
            "train.checkpoint_every=2",
            *common,
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "mmcl.cli",
            "train",
            str(first),
            "train.resume=latest",
            *common,
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "continuing at sample 16 of epoch 0" in res.stdout
    steps = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [len(s["index"]) for s in steps] == [8, 8, 16, 16]
    ids = [i for s in steps for i in s["index"]]
    assert sorted(ids) == list(range(48))
