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


def call_cross_modal(loss_fn: nn.Module, image_features, text_features, logit_scale, logit_bias=None, **extra):
    """Score image/text features with any registered loss.

    Cross-modal losses (InfoNCE, SigLIP, ...) get the model's logit scale and bias. Two-view losses
    (NT-Xent, HCL, DCL, SupCon) treat an image and its caption as the two views of one sample and use
    their own fixed temperature; the scale then gets a zero gradient (it stays in the graph so that
    gradient caching and DDP see every parameter used). ``extra``: keyword inputs of the loss, e.g.
    ``text_negatives`` for ``infonce``.
    """
    if getattr(loss_fn, "pairing", "cross_modal") == "two_view":
        return loss_fn(image_features, text_features) + 0.0 * logit_scale
    return loss_fn(image_features, text_features, logit_scale, logit_bias, **extra)
