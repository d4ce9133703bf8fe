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
