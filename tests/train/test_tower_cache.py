"""The locked-tower cache (``model.vision.cache_locked``): training with it gives the losses and the
weights of training without it, over several epochs, for each backend; a resumed run rebuilds it
with the same result; and a tower whose output could change between epochs is refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict
from mmcl.train.tower_cache import image_tower

from ..conftest import assert_same_weights, straight_and_resumed, tiny_recipe_dict, train_section
from ..models.library_models import write_hf, write_open_clip

# 48 samples, batch 8: 6 steps an epoch, 15 steps = 2.5 epochs
STEPS = 15


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-models")
    return {"open_clip": write_open_clip(root, "tiny-oc-clip"), "hf": write_hf(root, "clip")}


def recipe(corpus, out_dir, files, backend: str, cache: bool, **train) -> dict:
    data = copy.deepcopy(tiny_recipe_dict(corpus, out_dir))  # TINY_VIT is shared
    if backend == "open_clip":  # locked with open_clip's own lock_image_tower
        config, weights = files["open_clip"]
        data["model"] = {"backend": "open_clip", "name": str(config), "pretrained": str(weights)}
        data["model"]["vision"] = {"lock": True}
    elif backend == "hf":  # locked with a freeze pattern
        data["model"] = {"backend": "hf", "path": str(files["hf"]), "freeze": [r"model\.vision_model\..*"]}
    else:  # timm_hf: the timm tower locked
        data["model"]["vision"]["lock"] = True
    data["model"].setdefault("vision", {})["cache_locked"] = cache
    data["train"] = train_section(out_dir, **{"steps": STEPS, "lr": 1e-3, "checkpoint_every": 6, **train})
    data["eval"] = {"datasets": []}
    return data


def losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train/loss"] for line in lines if "train/loss" in line]


@pytest.mark.parametrize("backend,accumulation", [("timm_hf", 1), ("timm_hf", 2), ("open_clip", 1), ("hf", 1)])
def test_cached_training_equals_uncached_training(files, tiny_corpus, tmp_path, backend, accumulation):
    """Bitwise: the same losses at every step and the same final weights (GradCache too)."""
    trainers = {}
    for cache in (False, True):
        data = recipe(tiny_corpus, tmp_path / str(cache), files, backend, cache)
        if accumulation > 1:  # two micro-batches of 4 a step: GradCache's two passes both read the cache
            data["data"]["batch_size"], data["train"]["accumulation_steps"] = 4, accumulation
        trainer = mmcl.Trainer(recipe_from_dict(data))
        trainer.fit()
        trainers[cache] = trainer
    cache = image_tower(trainers[True].unwrapped).forward.__self__
    first_pass = 8 * STEPS if accumulation == 1 else 2 * 8 * STEPS  # GradCache: a no-grad pass, then one with grad
    assert len(cache.store) == 48 and cache.misses == 48 and cache.hits == first_pass - 48
    assert not hasattr(image_tower(trainers[False].unwrapped).forward, "__self__") or not hasattr(
        image_tower(trainers[False].unwrapped).forward.__self__, "store"
    )
    assert losses(tmp_path / "True") == losses(tmp_path / "False")
    a, b = (trainers[c].unwrapped.state_dict() for c in (False, True))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_webdataset_streams_are_cached_by_their_sample_keys(files, tiny_corpus, tmp_path):
    """Shards, read as a stream: the ids are hashes of shard name and sample key, so a sample is
    found again in the next epoch whatever its place in the shuffled stream."""
    from ..data.corpora import img2dataset_shards

    img2dataset_shards(tiny_corpus, tmp_path / "shards", 3)
    runs = {}
    for cache in (False, True):
        data = recipe(tiny_corpus, tmp_path / str(cache), files, "timm_hf", cache)
        data["data"].update(train=str(tmp_path / "shards"), shuffle_block=16)
        runs[cache] = mmcl.Trainer(recipe_from_dict(data))
        runs[cache].fit()
    cache = image_tower(runs[True].unwrapped).forward.__self__
    assert len(cache.store) == 48 and cache.hits == 8 * STEPS - 48
    assert losses(tmp_path / "True") == losses(tmp_path / "False")


def test_a_resumed_run_rebuilds_the_cache_with_the_same_result(files, tiny_corpus, tmp_path):
    straight, resumed = straight_and_resumed(
        tmp_path, lambda out: recipe(tiny_corpus, out, files, "timm_hf", True), stop_at=8
    )
    assert_same_weights(straight, resumed)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_towers_whose_output_can_change_are_refused(files, tiny_corpus, tmp_path):
    data = recipe(tiny_corpus, tmp_path / "a", files, "timm_hf", True)
    data["model"]["vision"]["lock"] = False
    with pytest.raises(ConfigError, match=r"needs a locked image tower, but \d+ of its parameters train"):
        mmcl.Trainer(recipe_from_dict(data))
    data = recipe(tiny_corpus, tmp_path / "b", files, "timm_hf", True)
    data["model"]["vision"]["kwargs"] = {**data["model"]["vision"]["kwargs"], "proj_drop_rate": 0.1}
    with pytest.raises(ConfigError, match="depends on its batch or on chance"):
        mmcl.Trainer(recipe_from_dict(data))
    data = recipe(tiny_corpus, tmp_path / "c", files, "timm_hf", True)
    data["data"]["augment"] = {"enabled": True}
    with pytest.raises(ConfigError, match="set data.augment.enabled: false"):
        recipe_from_dict(data)


@pytest.mark.parametrize("backend", ["timm_hf", "hf"])
def test_a_batch_with_some_cached_samples_runs_only_the_others(files, backend):
    """Data parallel ranks and mixed batches: the samples not cached yet go through the tower, the
    rest come from the cache, and the batch's features equal the tower's on the whole batch."""
    from mmcl.recipe import ModelConfig
    from mmcl.recipe.load import build_section
    from mmcl.train.tower_cache import TowerCache, sample_keys

    from ..conftest import MINILM, TINY_BERT, TINY_VIT

    if backend == "hf":
        section = {"backend": "hf", "path": str(files["hf"]), "freeze": [r"model\.vision_model\..*"]}
    else:
        section = {"vision": {**TINY_VIT, "lock": True}, "text": {"config": TINY_BERT, "tokenizer": MINILM}}
    model = mmcl.create_model(build_section(ModelConfig, section, "model")).train()
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode_image(images)
    cache = TowerCache(image_tower(model))
    with torch.no_grad(), sample_keys(torch.tensor([10, 11, 12, 13])):
        model.encode_image(images[:4])
    with torch.no_grad(), sample_keys(torch.tensor([12, 13, 14, 15])):
        got = model.encode_image(images[2:])
    assert (cache.misses, cache.hits, sorted(cache.store)) == (6, 2, [10, 11, 12, 13, 14, 15])
    torch.testing.assert_close(got, expected[2:], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # outside a training step: the tower itself
        assert torch.equal(model.encode_image(images), expected)


@pytest.mark.slow
def test_two_processes_cache_their_own_samples_with_the_same_losses(files, tiny_corpus, tmp_path):
    """gloo, 2 CPU processes: each caches what it reads; the losses equal the uncached run's."""
    import subprocess
    import sys

    import yaml

    for cache in (False, True):
        data = recipe(tiny_corpus, tmp_path / str(cache), files, "timm_hf", cache)
        data["data"]["batch_size"] = 4
        (tmp_path / f"{cache}.yaml").write_text(yaml.safe_dump(data))
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        res = subprocess.run(
            [*launch, "-m", "mmcl.cli", "train", str(tmp_path / f"{cache}.yaml")], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr[-3000:]
    assert losses(tmp_path / "True") == losses(tmp_path / "False")
