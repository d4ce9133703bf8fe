"""The loss registry and the public ``create_loss`` / ``list_losses``."""

from __future__ import annotations

import torch
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


def call_image_image(loss_fn: nn.Module, z0, z1, logit_scale, logit_bias=None, labels=None, index=None, dense=None):
    """Score the embeddings of two views (or two image modalities) with any registered loss.

    Two-view losses get ``(z0, z1)``; SupCon also gets ``labels``, where an unlabelled item
    (label < 0) becomes a class of its own (its sample ``index``), so its only positive is its other
    view. Cross-modal losses (InfoNCE, SigLIP, cluster-guided) treat the two images as two
    modalities with the model's logit scale (and bias); MoCo gets (queries, keys). Dense losses
    (DenseCL) also get ``dense``: (dense queries, dense keys, query backbone features, key backbone
    features), from a model with a dense head.
    """
    if getattr(loss_fn, "pairing", None) == "dense":
        if dense is None or dense[0] is None:
            raise ValueError("this loss scores feature-map locations: the model needs its dense head (model.dense)")
        return loss_fn(z0, z1, *dense) + 0.0 * logit_scale
    if getattr(loss_fn, "needs_labels", False):
        if labels is None:
            raise ValueError(
                "this loss needs class labels: a labelled image folder (ROOT/<class>/...) or data.label_key"
            )
        if index is not None:
            labels = torch.where(labels >= 0, labels, -1 - index.to(labels.dtype))
        return loss_fn(z0, z1, labels) + 0.0 * logit_scale
    return call_cross_modal(loss_fn, z0, z1, logit_scale, logit_bias)
