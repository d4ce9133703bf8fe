"""Model backends: what builds a model from a recipe's ``model`` section.

A backend is registered by name (``@register_backend("timm_hf")``), like timm's models; the recipe's
``model.backend`` names one (``auto``: by ``model.kind``), and :func:`mmcl.list_backends` lists them.
Each one builds the model, checks its part of a recipe before any work starts, and describes where
its weights came from. Saving and loading go through the model's own ``save_pretrained`` /
``from_pretrained``, so a registered backend is saved, loaded and exported like the others.

    timm_hf   image_text: a timm vision tower and a Hugging Face text tower (DualEncoder)
    timm      image_image: one or two timm vision towers with projection heads (ImageEncoder)
"""

from __future__ import annotations

import difflib
from typing import ClassVar

from torch import nn

from ..errors import ConfigError
from ..recipe import ModelConfig, VisionConfig
from ..registry import Registry
from .dual_encoder import DualEncoder
from .image_encoder import ImageEncoder
from .text import HFTextTower
from .vision import TimmVisionTower

BACKENDS: Registry[type] = Registry("model backend")
register_backend = BACKENDS.register
DEFAULT_BACKEND = {"image_text": "timm_hf", "image_image": "timm"}


def list_backends(pattern: str = "*") -> list[str]:
    """Registered model backends (``model.backend`` in a recipe)."""
    return BACKENDS.list(pattern)


def backend_name(cfg: ModelConfig) -> str:
    return DEFAULT_BACKEND[cfg.kind] if cfg.backend == "auto" else cfg.backend


def get_backend(cfg: ModelConfig) -> ModelBackend:
    name = backend_name(cfg)
    if name not in BACKENDS:
        raise ConfigError(
            f"model.backend: {name!r} is not a model backend; valid choices: auto, {', '.join(list_backends())}"
        )
    backend = BACKENDS.get(name)()
    if cfg.kind not in backend.kinds:
        raise ConfigError(
            f"model.backend: {name!r} builds model.kind {', '.join(backend.kinds)}, not {cfg.kind!r}; "
            f"for {cfg.kind} use: {', '.join(n for n in list_backends() if cfg.kind in BACKENDS.get(n).kinds)}"
        )
    return backend


class ModelBackend:
    """The interface of a backend. ``build`` must not touch the network."""

    kinds: ClassVar[tuple[str, ...]] = ()

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        """The model for ``cfg``; ``text_config`` (a transformers config) builds a text tower with
        random init where a checkpoint supplies the weights; ``load_weights=False`` skips weights files."""
        raise NotImplementedError

    def check(self, cfg: ModelConfig) -> None:
        """Raise :class:`ConfigError` for what this backend cannot build (called before any work starts)."""


def check_timm_name(v: VisionConfig, key: str) -> None:
    import timm  # here: a recipe's other mistakes are reported before timm loads

    if not timm.is_model(v.name):
        close = difflib.get_close_matches(v.name, timm.list_models(), n=5)
        raise ConfigError(
            f"{key}.name: {v.name!r} is not a timm model"
            + (f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()")
        )


@register_backend("timm_hf")
class TimmHFBackend(ModelBackend):
    """A CLIP-style :class:`~mmcl.models.DualEncoder`: timm vision tower + Hugging Face text tower."""

    kinds = ("image_text",)

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        vision = TimmVisionTower(cfg.vision, load_weights=load_weights)
        return DualEncoder(cfg, vision, HFTextTower(cfg.text, hf_config=text_config))

    def check(self, cfg: ModelConfig) -> None:
        check_timm_name(cfg.vision, "model.vision")
        if cfg.text.config is not None:
            from transformers import CONFIG_MAPPING

            model_type = cfg.text.config.get("model_type")
            if model_type not in CONFIG_MAPPING:
                raise ConfigError(
                    f"model.text.config.model_type: {model_type!r} is not a transformers model type; "
                    "valid choices include: bert, roberta, distilbert, xlm-roberta, electra"
                )


@register_backend("timm")
class TimmBackend(ModelBackend):
    """Vision towers only (:class:`~mmcl.models.ImageEncoder`): SimCLR, MoCo, SupCon, paired images."""

    kinds = ("image_image",)

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        vision = TimmVisionTower(cfg.vision, load_weights=load_weights)
        vision2 = None
        if cfg.vision2 is not None:
            vision2 = TimmVisionTower(cfg.vision2, load_weights=load_weights, key="model.vision2")
        return ImageEncoder(cfg, vision, vision2)

    def check(self, cfg: ModelConfig) -> None:
        check_timm_name(cfg.vision, "model.vision")
        if cfg.vision2 is not None:
            check_timm_name(cfg.vision2, "model.vision2")


def check_model(cfg: ModelConfig) -> None:
    """The recipe's model section against its backend (raises :class:`ConfigError`)."""
    get_backend(cfg).check(cfg)
