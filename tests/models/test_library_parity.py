"""A user's open_clip model under data parallelism: 2 gloo processes at batch B follow the losses and
end with the weights of one process at batch 2B (open_clip's towers have no dropout by default).
The tiny config runs by default; every loss and the real ViT-B-32 (random init) are `slow`."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from ..conftest import run_one_and_two_processes, train_section
from .library_models import OPEN_CLIP_CONFIGS, write_open_clip


def _files(tmp_path, name, kwargs):
    if name in OPEN_CLIP_CONFIGS:
        config, weights = write_open_clip(tmp_path / "files", name)
        return str(config), str(weights)
    # a real open_clip architecture by name, its random-init weights saved as a user's file
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(name, **kwargs)
    weights = tmp_path / "files" / f"{name}.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return name, str(weights)


def _losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]


def _check_parity(tmp_path, tiny_corpus, name, loss, steps=3, sharding="none"):
    # a sigmoid loss on a CLIP architecture: open_clip adds SigLIP's logit bias when asked
    kwargs = {"init_logit_bias": -10.0} if loss == "siglip" and name not in OPEN_CLIP_CONFIGS else {}
    config, weights = _files(tmp_path, name, kwargs)
    for run, batch in (("one", 8), ("two", 4)):
        data = {
            "name": f"parity-{loss}",
            "data": {"train": str(tiny_corpus / "train.csv"), "batch_size": batch, "augment": {"enabled": False}},
            "model": {"backend": "open_clip", "name": config, "pretrained": weights, "kwargs": kwargs},
            "loss": {"name": loss, "kwargs": {"k": 2, "bank_size": 64} if loss == "cluster_infonce" else {}},
            "train": train_section(
                tmp_path / run,
                steps=steps,
                lr=1e-4,
                checkpoint_every=steps,
                sharding=sharding if run == "two" else "none",
            ),
            "eval": {"datasets": []},
        }
        (tmp_path / f"{run}.yaml").write_text(yaml.safe_dump(data))
    run_one_and_two_processes(tmp_path)
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == steps
    import torch

    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6)
    last = f"checkpoints/step-{steps:07d}/model.safetensors"
    wa, wb = load_file(str(tmp_path / "one" / last)), load_file(str(tmp_path / "two" / last))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5, msg=key)


def test_open_clip_two_processes_match_one_process(tmp_path, tiny_corpus):
    _check_parity(tmp_path, tiny_corpus, "tiny-oc-clip", "infonce")


def test_open_clip_fsdp_two_processes_match_one_process(tmp_path, tiny_corpus):
    """train.sharding: fsdp shards open_clip's resblocks (FSDP2); the run equals one unsharded process."""
    _check_parity(tmp_path, tiny_corpus, "tiny-oc-clip", "infonce", sharding="fsdp")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,loss", [("tiny-oc-sigmoid", "siglip"), ("tiny-oc-clip", "cluster_infonce"), ("tiny-oc-sigmoid", "infonce")]
)
def test_open_clip_two_processes_match_one_process_every_loss(tmp_path, tiny_corpus, name, loss):
    _check_parity(tmp_path, tiny_corpus, name, loss)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["infonce", "siglip", "cluster_infonce"])
def test_vit_b_32_native_towers_two_processes_match_one_process(tmp_path, tiny_corpus, loss):
    """open_clip's ViT-B-32 (its own ViT and text transformer), random init from a local file; for
    siglip with SigLIP's logit bias (``model.kwargs: {init_logit_bias: -10}``): a SigLIP-style ViT-B-32."""
    _check_parity(tmp_path, tiny_corpus, "ViT-B-32", loss, steps=2)
