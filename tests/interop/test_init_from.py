"""`model.init_from`: a recipe fine-tunes from a saved model (pretrained folder or open_clip export)."""

import pytest
import torch

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict

from ..conftest import tiny_recipe_dict


def test_a_recipe_starts_from_saved_weights_and_refuses_another_architecture(tiny_corpus, tmp_path):
    from mmcl.models import create_model

    d = tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=1)
    d["eval"]["datasets"] = []
    torch.manual_seed(123)
    source = create_model(recipe_from_dict(d).model)
    source.save_pretrained(tmp_path / "saved")

    d["model"]["init_from"] = str(tmp_path / "saved")
    torch.manual_seed(0)  # a different init: the weights must come from the folder
    trainer = mmcl.Trainer(recipe_from_dict(d))
    for name, value in source.state_dict().items():
        assert torch.equal(trainer.unwrapped.state_dict()[name], value), name
    trainer.fit()  # and it trains from there

    d["model"]["embed_dim"] = 8
    d["train"]["overwrite"] = True  # the folder holds the run above; these attempts fail before training
    with pytest.raises(ConfigError, match="not the model this recipe describes"):
        mmcl.Trainer(recipe_from_dict(d))
    d["model"]["init_from"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="does not exist"):
        mmcl.Trainer(recipe_from_dict(d))
