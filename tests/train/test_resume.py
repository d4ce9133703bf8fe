"""Exact resume: N steps straight == N/2 steps, a stop, and a resume (weights, optimizer, data order)."""

import json

import pytest
import torch
from safetensors.torch import load_file

import mmcl
from mmcl.recipe import recipe_from_dict
from mmcl.train import latest_checkpoint, list_checkpoints

from ..conftest import tiny_recipe_dict


def train(corpus, out, overrides=None, **train_kw):
    data = tiny_recipe_dict(corpus, out, **train_kw)
    data["eval"]["datasets"] = []
    # Random crops and flips and BERT's dropout make the test sensitive to every RNG stream.
    data["data"]["augment"] = {"enabled": True, "scale": [0.5, 1.0], "hflip": 0.5}
    data["model"]["text"]["config"] = {**data["model"]["text"]["config"], "hidden_dropout_prob": 0.2}
    for key, value in (overrides or {}).items():
        section, name = key.split(".")
        data[section][name] = value
    mmcl.Trainer(recipe_from_dict(data)).fit()
    return latest_checkpoint(out)


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_stop_and_resume_equals_straight_run(tiny_corpus, tmp_path, accumulation):
    # 48 samples / batch 8 = 6 batches per epoch: 8 steps cross an epoch boundary after the stop.
    kw = {"steps": 8, "accumulation_steps": accumulation}
    straight = train(tiny_corpus, tmp_path / "a", checkpoint_every=100, **kw)
    first = train(tiny_corpus, tmp_path / "b", stop_at_step=4, checkpoint_every=100, **kw)
    assert first.name == "step-0000004"
    # The resumed leg uses 2 dataloader workers: the data order and augmentation must not change.
    resumed = train(tiny_corpus, tmp_path / "b", {"data.num_workers": 2}, resume="latest", **kw)
    assert resumed.name == "step-0000008"
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # Without restoring state the result differs: the test can fail.
    fresh = train(tiny_corpus, tmp_path / "c", checkpoint_every=100, seed=1, **kw)
    assert any(not torch.allclose(a[n], weights(fresh)[n]) for n in a)


def test_checkpoints_are_complete_rotated_and_logged(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_corpus, out, steps=6, checkpoint_every=1, keep_checkpoints=2)
    names = [p.name for p in list_checkpoints(out)]
    assert names == ["step-0000005", "step-0000006"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000006"
    assert not list((out / "checkpoints").glob(".tmp-*"))
    state = torch.load(out / "checkpoints" / "step-0000006" / "state.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state and "rng" in state
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == [1, 2, 3, 4, 5, 6]
    assert (out / "recipe.yaml").is_file() and (out / "tokenizer").is_dir()


def test_interrupted_write_leaves_previous_checkpoint(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_corpus, out, steps=2, checkpoint_every=100)
    # A crash mid-write leaves a temporary folder behind; it is never taken for a checkpoint.
    (out / "checkpoints" / ".tmp-step-0000003-999").mkdir()
    (out / "checkpoints" / "step-0000009").mkdir()  # incomplete: no files
    assert latest_checkpoint(out).name == "step-0000002"


def test_skipped_samples_counted_in_training(corpus_copy, tmp_path):
    import csv

    with open(corpus_copy / "train.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows[:3]:
        (corpus_copy / r["filepath"]).write_bytes(b"garbage")
    out = tmp_path / "run"
    train(corpus_copy, out, steps=6, checkpoint_every=100)  # one full epoch: every sample seen once
    state = torch.load(latest_checkpoint(out) / "state.pt", weights_only=True)
    assert state["skipped"] == {"corrupt_image": 3}
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["data/skipped_corrupt_image"] == 3


@pytest.mark.parametrize("lr", [1e6])
def test_non_finite_loss_stops_with_clear_error(tiny_corpus, tmp_path, lr):
    from mmcl.train import TrainingError

    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=20, lr=lr, grad_clip=None, warmup_steps=0)
    data["eval"]["datasets"] = []
    trainer = mmcl.Trainer(recipe_from_dict(data))
    with torch.no_grad():
        trainer.unwrapped.image_proj.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite for 5 steps"):
        trainer.fit()


def test_loss_state_travels_in_checkpoints(tiny_corpus, tmp_path):
    """A stateful loss (the MoCo key queue) is saved with the step and restored on resume."""
    from mmcl.losses import MoCoLoss

    data = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=2)
    data["eval"]["datasets"] = []
    trainer = mmcl.Trainer(recipe_from_dict(data))
    trainer.loss_fn = MoCoLoss(queue_size=8)
    trainer.loss_fn.enqueue(torch.randn(5, 4))
    path = trainer.save()
    data["train"]["resume"] = "latest"  # the folder now holds a checkpoint: this trainer continues it
    again = mmcl.Trainer(recipe_from_dict(data))
    again.loss_fn = MoCoLoss(queue_size=8)
    again.resume(path)
    torch.testing.assert_close(again.loss_fn.queue, trainer.loss_fn.queue)
    assert int(again.loss_fn.queue_len) == 5
