"""WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the weight-space
ensemble ``theta(alpha) = (1 - alpha) * theta_start + alpha * theta_finetuned`` of a fine-tuned
model and the weights it started from.

What is interpolated: every floating-point tensor of the state dict, parameters and buffers alike;
the logit scale too, in the log space it is stored in (a geometric mean of the two temperatures;
rankings, so zero-shot accuracy and retrieval recall, do not depend on it); a BatchNorm's running
mean and variance linearly (an approximation: the statistics of the interpolated network are not
the interpolation of the two). Integer buffers (position ids, ``num_batches_tracked``) are taken
from the fine-tuned model. ``alpha = 0`` gives the start weights and ``alpha = 1`` the fine-tuned
ones bit for bit. Adapters (LoRA) are merged first, so the start is the base model and the
fine-tuned model its merged weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from torch import nn

from ..errors import ConfigError
from ..recipe import ModelConfig
from ..recipe.load import build_section
from .adapters import merge_adapters


def check_same_architecture(start: dict, finetuned: dict) -> None:
    """Raise a one-line ``ConfigError`` unless both state dicts hold the same names and shapes."""
    missing, extra = sorted(set(finetuned) - set(start)), sorted(set(start) - set(finetuned))
    shapes = sorted(k for k in set(start) & set(finetuned) if start[k].shape != finetuned[k].shape)
    if missing or extra or shapes:
        raise ConfigError(
            "wise-ft: the start and fine-tuned models differ in architecture "
            f"(only fine-tuned: {missing[:3]}, only start: {extra[:3]}, other shapes: {shapes[:3]}); "
            "give the weights the run started from (--start)"
        )


def interpolate_weights(start: dict, finetuned: dict, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * finetuned`` for every floating-point tensor; other tensors
    from ``finetuned``. Endpoints are exact copies."""
    check_same_architecture(start, finetuned)
    out = {}
    for name, theirs in finetuned.items():
        ours = start[name]
        if not theirs.is_floating_point() or alpha == 1:
            out[name] = theirs.clone()
        elif alpha == 0:
            out[name] = ours.to(theirs.dtype).clone()
        else:
            mixed = (1 - alpha) * ours.double() + alpha * theirs.to(ours.device).double()
            out[name] = mixed.to(theirs.dtype)
    return out


def interpolated_model(start: nn.Module, finetuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``finetuned`` (plain weights, adapters merged) holding the weights at ``alpha``."""
    finetuned = merge_adapters(finetuned)
    model = copy.deepcopy(finetuned)
    weights = interpolate_weights(merge_adapters(start).state_dict(), finetuned.state_dict(), alpha)
    model.load_state_dict(weights, strict=True)
    return model


def _pretrained_source(cfg: ModelConfig) -> str | None:
    """What in a model section loads pretrained weights (None: all random init)."""
    if cfg.pretrained or cfg.path:
        return cfg.pretrained or cfg.path
    sources = [cfg.vision.weights, cfg.text.path if cfg.kind == "image_text" else None]
    if cfg.vision.kwargs.get("pretrained"):
        sources.append(f"timm pretrained {cfg.vision.name}")
    found = [s for s in sources if s]
    return ", ".join(found) if found else None


def start_model(run_dir: str | Path, start: str | Path | None = None) -> tuple[nn.Module, str]:
    """``(model, where it came from)``: the weights a run started from, with adapters merged.

    ``start`` (a pretrained, run or open_clip folder) when given; else the run's ``model.init_from``;
    else the model its recipe builds from pretrained weights (``model.pretrained`` / ``model.path``
    of a library backend; ``model.vision.weights`` / ``model.text.path``), with the run's seed for
    any part that starts from random init.
    """
    from .factory import create_model
    from .pretrained import from_pretrained

    if start is not None:
        return merge_adapters(from_pretrained(start, device="cpu")), str(start)
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not an mmcl run folder (no recipe.yaml)")
    data = yaml.safe_load(path.read_text())
    section = dict(data["model"], adapter=None)
    if section.get("init_from"):
        return merge_adapters(from_pretrained(section["init_from"], device="cpu")), section["init_from"]
    cfg = build_section(ModelConfig, section, "model")
    source = _pretrained_source(cfg)
    if source is None:
        raise ConfigError(
            f"wise-ft: {run_dir} started from random init (no model.init_from, pretrained weights or text path); "
            "give the weights to interpolate with: --start FOLDER"
        )
    from accelerate.utils import set_seed

    set_seed(int(data.get("train", {}).get("seed", 0)))  # random-init parts drawn as the run drew them
    return create_model(cfg).eval(), source
