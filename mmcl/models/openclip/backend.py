"""The ``open_clip`` model backend: any model open_clip builds, trained by mmcl.

``model: {backend: open_clip, name: ViT-B-32, pretrained: /w/vit_b32.safetensors}`` builds the model
with open_clip itself (its own ViT and text transformer, timm towers, Hugging Face text towers,
SigLIP's logit bias, ConvNeXt, ...), so the model computes exactly what open_clip computes, and uses
open_clip's tokenizer and preprocessing, so it sees what it saw in pretraining. ``name`` is an
architecture open_clip knows (``open_clip.list_models()``), a model-config JSON file, a
``local-dir:`` folder or an ``hf-hub:`` id in the local Hugging Face cache. ``pretrained`` is a local
weights file (``.safetensors``, or ``.pt`` / ``.bin`` read with ``weights_only=True``).

A run or pretrained folder of such a model keeps ``open_clip_config.json`` (the model config and
the preprocessing), so it rebuilds offline without the original name or files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...recipe import AugmentConfig, ModelConfig
from ...weights import load_state_file
from ..backends import ModelBackend, register_backend
from ..library_model import LibraryClipModel
from .config import OPEN_CLIP_CONFIG

LOCAL_DIR, HF_HUB = "local-dir:", "hf-hub:"


def _register_json(path: Path) -> str:
    """Register a model-config JSON with open_clip under its file name; returns the name."""
    import open_clip  # optional at import time: only this backend needs it

    data = json.loads(path.read_text())
    cfg = data.get("model_cfg", data)
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ConfigError(f"model.name: {path} is not an open_clip model config (no vision_cfg / text_cfg)")
    open_clip.factory._MODEL_CONFIGS[path.stem] = cfg  # what add_model_config does, for one file
    return path.stem


def open_clip_name(cfg: ModelConfig) -> str:
    """The name open_clip builds: a known architecture, a registered JSON, ``local-dir:`` or ``hf-hub:``."""
    name = cfg.name or ""
    if name.endswith(".json") and Path(name).is_file():
        return _register_json(Path(name))
    if Path(name).is_dir() and (Path(name) / OPEN_CLIP_CONFIG).is_file():
        return LOCAL_DIR + str(Path(name))
    return name


class OpenClipTokenize:
    """open_clip's tokenizer as mmcl's ``Tokenize``: texts -> ``{"input_ids", "attention_mask"}``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.max_length = int(getattr(tokenizer, "context_length", 77))
        self.pad_id = int(getattr(tokenizer, "pad_id", None) or 0)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}


class OpenClipModel(LibraryClipModel):
    """An open_clip model behind mmcl's model interface (:class:`LibraryClipModel`); the open_clip
    model itself is ``.model``."""

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.model.encode_image(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, input_ids: torch.Tensor, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        # open_clip's text towers mask padding themselves (causal mask, or the pad id for HF towers)
        x = self.model.encode_text(input_ids)
        return F.normalize(x, dim=-1) if normalize else x

    def towers(self) -> list[nn.Module]:
        text = getattr(self.model, "transformer", None) or getattr(self.model, "text", None)
        return [m for m in (self.model.visual, text) if isinstance(m, nn.Module)]

    def preprocess_cfg(self) -> dict:
        """open_clip's preprocessing of this model (size, mean, std, interpolation, resize mode)."""
        return dict(self.model.visual.preprocess_cfg)


@register_backend("open_clip")
class OpenClipBackend(ModelBackend):
    """Models open_clip builds (``model.name``, ``model.pretrained``); see the module docstring."""

    kinds = ("image_text",)
    wraps_library = True
    folder_files = (OPEN_CLIP_CONFIG,)

    def check(self, cfg: ModelConfig) -> None:
        import open_clip

        if not cfg.name:
            raise ConfigError(
                "model.name: the open_clip backend needs an architecture (open_clip.list_models(), e.g. ViT-B-32), "
                "a model-config JSON, a local-dir: folder or an hf-hub: id"
            )
        name = open_clip_name(cfg)
        if not name.startswith((LOCAL_DIR, HF_HUB)) and name not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
            raise ConfigError(
                f"model.name: {cfg.name!r} is not an open_clip architecture, a model-config JSON file or an open_clip "
                "folder" + (f"; close matches: {', '.join(close)}" if close else "; see open_clip.list_models()")
            )
        if cfg.pretrained is not None and not cfg.pretrained.startswith(HF_HUB) and not Path(cfg.pretrained).is_file():
            raise ConfigError(f"model.pretrained: weights file not found: {cfg.pretrained}")

    def build(self, cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
        import open_clip

        name = open_clip_name(cfg)
        kwargs = dict(cfg.kwargs)
        if cfg.vision.patch_dropout:
            kwargs["force_patch_dropout"] = cfg.vision.patch_dropout
        try:
            # an hf-hub: model reads its weights from the local cache with open_clip's safe loader
            hub = load_weights and name.startswith(HF_HUB)
            model = open_clip.create_model(name, pretrained=None, load_weights=hub, **kwargs)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ConfigError(f"model: open_clip cannot build {cfg.name!r} with {kwargs}: {e}") from None
        if load_weights and cfg.pretrained:
            _load_open_clip_weights(model, cfg.pretrained)
        if cfg.vision.grad_checkpointing or cfg.text.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if cfg.vision.lock:
            model.lock_image_tower(unlocked_groups=cfg.vision.unlocked_groups, freeze_bn_stats=True)
        if cfg.text.lock:
            model.lock_text_tower(unlocked_layers=cfg.text.unlocked_layers, freeze_layer_norm=True)
        wrapped = OpenClipModel(cfg, model)
        wrapped.weights_note = cfg.pretrained if (load_weights and cfg.pretrained) else "random init"
        return wrapped

    def tokenizer(self, cfg: ModelConfig, model=None) -> OpenClipTokenize:
        import open_clip

        try:
            return OpenClipTokenize(open_clip.get_tokenizer(open_clip_name(cfg)))
        except OSError as e:  # an HF tokenizer that is not in the local cache
            first = str(e).strip().splitlines()[0]
            raise ConfigError(f"model.name: the tokenizer of {cfg.name!r} is not available offline ({first})") from None

    def transforms(self, model, augment: AugmentConfig, located: bool = False):
        """open_clip's own eval transform; for training, open_clip's too unless ``data.augment``
        is on, then mmcl's augmentation at open_clip's size, mean and std."""
        import open_clip

        pre = model.preprocess_cfg()
        eval_tf = open_clip.image_transform(
            pre["size"],
            is_train=False,
            mean=pre["mean"],
            std=pre["std"],
            resize_mode=pre.get("resize_mode"),
            interpolation=pre.get("interpolation"),
            fill_color=pre.get("fill_color", 0),
        )
        if not augment.enabled:
            return eval_tf, eval_tf
        from ...data.transforms import image_transforms

        size = pre["size"][-1] if isinstance(pre["size"], (list, tuple)) else pre["size"]
        config = {"input_size": (3, size, size), "mean": pre["mean"], "std": pre["std"]}
        config["interpolation"] = pre.get("interpolation", "bicubic")
        train_tf, _ = image_transforms(config, augment, located)
        return train_tf, eval_tf

    def save_metadata(self, model, tokenize, folder: Path) -> None:
        """``open_clip_config.json``: what ``open_clip.create_model("local-dir:FOLDER")`` builds."""
        import open_clip

        model_cfg = open_clip.get_model_config(open_clip_name(model.cfg))
        if model_cfg is None:
            raise ConfigError(f"open_clip has no model config for {model.cfg.name!r}")
        pre = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.preprocess_cfg().items()}
        data = {"model_cfg": model_cfg, "preprocess_cfg": pre}
        (Path(folder) / OPEN_CLIP_CONFIG).write_text(json.dumps(data, indent=2) + "\n")

    def folder_config(self, section: dict, folder: Path) -> dict:
        """The saved model section, pointed at the folder's ``open_clip_config.json``."""
        return {**section, "name": str(folder), "pretrained": None, "init_from": None}

    def has_logit_bias(self, cfg: ModelConfig) -> bool:
        import open_clip

        model_cfg = {**(open_clip.get_model_config(open_clip_name(cfg)) or {}), **cfg.kwargs}
        return model_cfg.get("init_logit_bias") is not None  # model.kwargs: {init_logit_bias: -10} adds one

    def describe(self, model) -> str:
        return f"open_clip {model.cfg.name} ({type(model.model).__name__})"

    def smoke_section(self, section: dict, root) -> dict:
        """The architecture as written, at random init (no weights file); ViTs at 64 px (same
        layers and widths, fewer patches)."""
        out = {**section, "pretrained": None}
        if "vit" in str(section.get("name", "")).lower():
            out["kwargs"] = {**(section.get("kwargs") or {}), "force_image_size": 64}
        return out


def _load_open_clip_weights(model: nn.Module, path: str) -> None:
    """open_clip's own checkpoint loading (key remapping, position-embedding resizing), after mmcl
    has read the file safely once, so a refusal is one line naming the file."""
    import open_clip

    if path.startswith(HF_HUB):
        raise ConfigError(
            "model.pretrained: give a local weights file; for an hf-hub: model use model.name: hf-hub:..."
        )
    load_state_file(path, "model.pretrained file")
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ConfigError(
            f"model.pretrained: {path} does not fit the open_clip model ({'; '.join(lines[:2])[:300]})"
        ) from None
