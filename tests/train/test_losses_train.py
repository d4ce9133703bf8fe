"""Every registered image-text loss trains end to end through a recipe (generated from the registry)."""

import json

import pytest

import mmcl
from mmcl.losses import LOSSES
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict

CROSS_MODAL = [n for n in mmcl.list_losses() if getattr(LOSSES.get(n), "pairing", "") == "cross_modal"]


@pytest.mark.parametrize("name", CROSS_MODAL)
def test_cross_modal_loss_trains(tiny_corpus, tmp_path, name):
    data = tiny_recipe_dict(tiny_corpus, tmp_path, steps=3, checkpoint_every=100)
    data["loss"] = {"name": name}
    data["eval"]["datasets"] = []
    if getattr(LOSSES.get(name), "needs_bias", False):
        data["model"].update(logit_bias_init=-10.0, logit_scale_init=10.0)
    mmcl.Trainer(recipe_from_dict(data)).fit()
    losses = [json.loads(x)["train/loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(v == v for v in losses)


def test_siglip_bias_is_learned(tiny_corpus, tmp_path):
    data = tiny_recipe_dict(tiny_corpus, tmp_path, steps=2, checkpoint_every=100)
    data["loss"] = {"name": "siglip"}
    data["eval"]["datasets"] = []
    data["model"].update(logit_bias_init=-10.0, logit_scale_init=10.0)
    trainer = mmcl.Trainer(recipe_from_dict(data))
    trainer.fit()
    assert trainer.unwrapped.logit_bias.item() != -10.0
