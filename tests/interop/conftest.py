"""Tiny models for the interop tests: stock timm test towers (open_clip builds timm towers from the
name alone) and a one-layer BERT with the packaged MiniLM tokenizer, all random-initialised."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from ..conftest import MINILM, TINY_BERT


def tiny_model(vision: str = "test_vit", seed: int = 0, **model):
    """A DualEncoder on CPU, eval mode; ``model`` updates the model section (``vision_kwargs`` for
    ``model.vision`` fields)."""
    from mmcl.models import create_model
    from mmcl.recipe import ModelConfig, TextConfig, VisionConfig

    vision_fields = model.pop("vision_fields", {})
    text_fields = model.pop("text_fields", {})
    cfg = ModelConfig(
        vision=VisionConfig(name=vision, **vision_fields),
        text=TextConfig(config=dict(TINY_BERT), tokenizer=MINILM, max_length=24, **text_fields),
        embed_dim=16,
        **model,
    )
    torch.manual_seed(seed)
    m = create_model(cfg).eval()
    with torch.no_grad():  # move the scale and bias off their init values, so a round trip shows
        m.logit_scale.fill_(2.5)
        if m.logit_bias is not None:
            m.logit_bias.fill_(-3.25)
    return m


@pytest.fixture(scope="session")
def vit_model():
    return tiny_model("test_vit")


@pytest.fixture(scope="session")
def images():
    """Three PIL images of different shapes (resize and centre crop both matter)."""
    rng = np.random.default_rng(0)
    sizes = [(200, 170), (96, 128), (160, 160)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


TEXTS = ["a red circle left of a blue square", "a photo of a cat", "two  spaces and   more"]


def state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class PickleBomb:
    """Unpickling it creates a folder: proof that a loader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
