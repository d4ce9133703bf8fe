"""``create_model``: the model a recipe's model section describes, built by its backend."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..recipe import ModelConfig
from .backends import get_backend
from .freeze import apply_freeze


def create_model(cfg: ModelConfig, text_config=None, load_weights: bool = True) -> nn.Module:
    """Build the model of ``cfg`` with its backend (:mod:`mmcl.models.backends`): a
    :class:`DualEncoder` or an :class:`ImageEncoder` for the built-in ones. Nothing touches the
    network.

    Args:
        cfg: model section of a recipe.
        text_config: build the text tower from this transformers config (random init) instead of
            its ``path``; used when a checkpoint supplies all the weights.
        load_weights: read ``cfg.vision.weights`` and ``cfg.init_from``; off when a checkpoint
            supplies the weights.
    """
    model = get_backend(cfg).build(cfg, text_config=text_config, load_weights=load_weights)
    if load_weights and cfg.init_from:
        init_from_pretrained(model, cfg.init_from)
    if cfg.adapter is not None:  # after the base weights: the adapters start as a zero update
        from .adapters import add_adapters

        add_adapters(model, cfg.adapter)
    apply_freeze(model, cfg.freeze, cfg.unfreeze)  # model.freeze regexes (a no-op when empty)
    return model


def weights_summary(model: nn.Module) -> str:
    """Where each tower's starting weights came from, in one line (printed at start-up)."""
    cfg = model.cfg
    if cfg.init_from:
        return f"all from model.init_from {cfg.init_from}"
    if hasattr(model, "weights_note"):  # a library's whole model (open_clip, Hugging Face)
        return f"{cfg.backend} model <- {model.weights_note}"
    parts = [f"vision <- {model.vision.weights_note}"]
    if getattr(model, "vision2", None) is not None:
        parts.append(f"vision2 <- {model.vision2.weights_note}")
    if cfg.kind != "image_image":
        parts.append(f"text <- {cfg.text.path} (pretrained)" if cfg.text.path else "text <- random init")
    return "; ".join(parts)


def init_from_pretrained(model: nn.Module, source: str) -> None:
    """Copy every weight of the model saved at ``source`` into ``model`` (same architecture)."""
    from .pretrained import from_pretrained  # it builds models with create_model

    if not Path(source).exists():
        raise ConfigError(f"model.init_from: {source} does not exist (a pretrained, run or open_clip folder)")
    from .adapters import merge_adapters

    theirs = merge_adapters(from_pretrained(source, device="cpu")).state_dict()  # a LoRA run: plain weights
    ours = model.state_dict()
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = [k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape]
    if missing or extra or shapes:
        raise ConfigError(
            f"model.init_from: {source} is not the model this recipe describes "
            f"(missing: {missing[:5]}, unexpected: {extra[:5]}, other shapes: {sorted(shapes)[:5]}); "
            "make the recipe's model section match the saved config.json"
        )
    model.load_state_dict(theirs, strict=True)
