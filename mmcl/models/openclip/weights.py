"""Mapping state dicts between mmcl's dual encoder and open_clip's ``CustomTextCLIP``:

mmcl                         open_clip
vision.trunk.*               visual.trunk.*
image_proj.weight            visual.head.proj.weight     (timm_proj "linear", no bias)
text.transformer.*           text.transformer.*
text_proj.weight             text.proj.weight            (hf_proj_type "linear")
logit_scale, logit_bias      logit_scale, logit_bias
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...errors import ConfigError
from ...weights import load_state_file as read_weights

# (mmcl prefix, open_clip prefix); exact keys first
_EXACT = {
    "image_proj.weight": "visual.head.proj.weight",
    "text_proj.weight": "text.proj.weight",
    "logit_scale": "logit_scale",
    "logit_bias": "logit_bias",
}


_PREFIXES = (("vision.trunk.", "visual.trunk."), ("text.transformer.", "text.transformer."))


def to_open_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """mmcl's state dict under open_clip's names (see the module docstring)."""
    out = {}
    for key, value in model.state_dict().items():
        out[_rename(key, to_open_clip=True)] = value
    return out


def from_open_clip_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip state dict under mmcl's names."""
    return {_rename(k, to_open_clip=False): v for k, v in state.items()}


def _rename(key: str, to_open_clip: bool) -> str:
    exact = _EXACT if to_open_clip else {v: k for k, v in _EXACT.items()}
    if key in exact:
        return exact[key]
    for mmcl_prefix, oc_prefix in _PREFIXES:
        src, dst = (mmcl_prefix, oc_prefix) if to_open_clip else (oc_prefix, mmcl_prefix)
        if key.startswith(src):
            return dst + key[len(src) :]
    side = "mmcl" if to_open_clip else "open_clip"
    raise ConfigError(f"{side} parameter {key!r} has no counterpart on the other side")


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own storage (safetensors refuses shared memory)."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors``, or from a torch file loaded with ``weights_only=True``
    (plain tensors and containers; a pickle that would run code is refused, not run). open_clip
    training checkpoints (``{"state_dict": ...}``) and DDP / torch.compile prefixes are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"open_clip weights not found: {path}")
    state = read_weights(path, "open_clip weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state
