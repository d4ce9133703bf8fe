"""The loss registry and the public ``create_loss`` / ``list_losses``."""

from __future__ import annotations

from torch import nn

from ..registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")
register_loss = LOSSES.register


def create_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered loss by name, e.g. ``create_loss("infonce", label_smoothing=0.1)``."""
    return LOSSES.get(name)(**kwargs)


def list_losses(pattern: str = "*") -> list[str]:
    return LOSSES.list(pattern)
