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
    """The interface of a backend. ``build`` must not touch the network.

    Backends that wrap another library's whole model (``wraps_library``: open_clip, Hugging Face
    CLIP) also give the model's tokenizer and transforms, and write into a run or pretrained folder
    what rebuilds the model offline (``save_metadata`` / ``folder_config``)."""

    kinds: ClassVar[tuple[str, ...]] = ()
    wraps_library: ClassVar[bool] = False
    # the files save_metadata writes (a folder holding them is this backend's)
    folder_files: ClassVar[tuple[str, ...]] = ()

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        """The model for ``cfg``; ``text_config`` (a transformers config) builds a text tower with
        random init where a checkpoint supplies the weights; ``load_weights=False`` skips weights files."""
        raise NotImplementedError

    def check(self, cfg: ModelConfig) -> None:
        """Raise :class:`ConfigError` for what this backend cannot build (called before any work starts)."""

    def tokenizer(self, cfg: ModelConfig, model=None):
        """texts -> ``{"input_ids", "attention_mask"}`` (:class:`mmcl.data.Tokenize` or alike; its
        ``.tokenizer`` is the library's own), or None for image-only models."""
        if cfg.kind == "image_image":
            return None
        from ..data import Tokenize, load_tokenizer

        return Tokenize(load_tokenizer(cfg.text), cfg.text.max_length)

    def transforms(self, model, augment, located: bool = False):
        """``(train transform, eval transform)``: PIL image -> pixels."""
        from ..data.transforms import image_transforms

        return image_transforms(model.vision.data_config(), augment, located)

    def save_metadata(self, model, tokenize, folder) -> None:
        """Write what rebuilds the model offline into a run or pretrained folder."""

    def folder_config(self, section: dict, folder) -> dict:
        """A saved model section pointed at what :meth:`save_metadata` wrote into ``folder``."""
        return section

    def describe(self, model) -> str:
        return type(model).__name__

    def smoke_section(self, section: dict, root) -> dict:
        """The model section for ``mmcl train --smoke``: random init, and no file the machine may
        lack (``root``: a scratch folder for anything the smoke run has to write instead)."""
        return section

    def has_logit_bias(self, cfg: ModelConfig) -> bool:
        """Whether the model carries a learnable logit bias (sigmoid losses need one)."""
        return cfg.logit_bias_init is not None


def _no_library_keys(cfg: ModelConfig, backend: str) -> None:
    """``model.name`` / ``pretrained`` / ``path`` / ``kwargs`` belong to the library backends."""
    used = [k for k in ("name", "pretrained", "path") if getattr(cfg, k) is not None] + (
        ["kwargs"] if cfg.kwargs else []
    )
    if used:
        raise ConfigError(
            f"model.{used[0]} is for the backends that build a whole pretrained CLIP (open_clip, hf); backend "
            f"{backend} builds from model.vision and model.text (a pretrained CLIP: model.backend: open_clip or hf)"
        )


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
        _no_library_keys(cfg, "timm_hf")
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
        _no_library_keys(cfg, "timm")
        check_timm_name(cfg.vision, "model.vision")
        if cfg.vision2 is not None:
            check_timm_name(cfg.vision2, "model.vision2")


def check_model(cfg: ModelConfig) -> None:
    """The recipe's model section against its backend (raises :class:`ConfigError`)."""
    get_backend(cfg).check(cfg)
