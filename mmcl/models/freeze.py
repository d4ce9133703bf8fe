"""Freezing by pattern (big_vision's ``frozen`` / optax ``multi_transform`` by name): ``model.freeze``
lists regular expressions over the model's parameter names (``model.named_parameters()``, the same
names as in its state dict and checkpoints); a parameter whose whole name matches one of them is
frozen, unless its name also matches one of ``model.unfreeze``.

Frozen parameters get ``requires_grad=False``: they receive no gradient and the optimizer leaves
them out, so they stay bitwise unchanged (weight decay included). A BatchNorm layer whose weight and
bias are both frozen becomes timm's ``FrozenBatchNorm2d`` (as in mmcl's and timm's tower locking), so
its running statistics stay as loaded too. Works for every backend: the names are whatever the
backend's model calls its parameters (``vision.trunk.blocks.0.attn.qkv.weight`` for timm_hf,
``model.visual.transformer.resblocks.0...`` for open_clip, ``model.vision_model.encoder.layers.0...``
for hf).
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import ConfigError


def compile_patterns(patterns: list[str], key: str) -> list[re.Pattern]:
    """The regexes of ``key``; a bad one is a :class:`ConfigError` naming it."""
    out = []
    for i, pattern in enumerate(patterns):
        try:
            out.append(re.compile(pattern))
        except re.error as e:
            raise ConfigError(f"{key}[{i}]: {pattern!r} is not a regular expression ({e})") from None
    return out


def _examples(names: list[str], n: int = 6) -> str:
    """A few parameter names, spread over the model (first, middle, last)."""
    if len(names) <= n:
        return ", ".join(names)
    picked = [names[round(i * (len(names) - 1) / (n - 1))] for i in range(n)]
    return ", ".join(picked) + f" (of {len(names)})"


def frozen_names(names: list[str], freeze: list[str], unfreeze: list[str] = ()) -> set[str]:
    """The names ``freeze`` matches (``re.fullmatch``) less those ``unfreeze`` matches. Every
    pattern must match some name: one that matches none is a :class:`ConfigError` that shows names."""
    fr, un = compile_patterns(list(freeze), "model.freeze"), compile_patterns(list(unfreeze), "model.unfreeze")
    for key, patterns in (("model.freeze", fr), ("model.unfreeze", un)):
        for i, p in enumerate(patterns):
            if not any(p.fullmatch(n) for n in names):
                raise ConfigError(
                    f"{key}[{i}]: {p.pattern!r} matches no parameter name (the whole name must match); "
                    f"the model's names look like: {_examples(names)}"
                )
    return {n for n in names if any(p.fullmatch(n) for p in fr) and not any(p.fullmatch(n) for p in un)}


def _freeze_batch_norms(model: nn.Module) -> int:
    """Replace each BatchNorm2d whose affine parameters are all frozen by a FrozenBatchNorm2d."""
    from timm.layers import freeze_batch_norm_2d

    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)) or not name:
            continue
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, freeze_batch_norm_2d(module))
            replaced += 1
    return replaced


def apply_freeze(model: nn.Module, freeze: list[str], unfreeze: list[str] = ()) -> set[str]:
    """Freeze the parameters of ``model`` that ``freeze`` names (less ``unfreeze``); returns their names."""
    if not freeze:
        if unfreeze:
            raise ConfigError("model.unfreeze lists exceptions to model.freeze, which is empty; set model.freeze")
        return set()
    names = [n for n, _ in model.named_parameters()]
    frozen = frozen_names(names, freeze, unfreeze)
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    _freeze_batch_norms(model)
    return frozen
