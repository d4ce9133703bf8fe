"""``create_model``: a dual encoder from the recipe's model section."""

from __future__ import annotations

from transformers import PretrainedConfig

from ..config import ModelConfig
from .dual_encoder import DualEncoder
from .text import HFTextTower
from .vision import TimmVisionTower


def create_model(
    cfg: ModelConfig, text_config: PretrainedConfig | None = None, load_weights: bool = True
) -> DualEncoder:
    """Build the model. Nothing touches the network.

    Args:
        cfg: model section of a recipe.
        text_config: build the text tower from this transformers config (random init) instead of
            its ``path``; used when a checkpoint supplies all the weights.
        load_weights: read ``cfg.vision.weights``; off when a checkpoint supplies them.
    """
    vision = TimmVisionTower(cfg.vision, load_weights=load_weights)
    text = HFTextTower(cfg.text, hf_config=text_config)
    return DualEncoder(cfg, vision, text)
