"""The loss base class, the loss registry and the public ``create_loss`` / ``list_losses``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..registry import Registry


class ContrastiveLoss(nn.Module):
    """What every registered loss is: an ``nn.Module`` that declares what it needs.

    The recipe check (:func:`mmcl.losses.checks.check_loss`) and the trainer read these class
    attributes; a loss never has to be probed for them. Override what differs from the defaults.

    Attributes:
        pairing: how the loss is called. ``"cross_modal"``: ``loss(image, text, logit_scale,
            logit_bias)``; ``"two_view"``: ``loss(z0, z1)`` (plus ``labels`` with ``needs_labels``);
            ``"dense"``: ``loss(z0, z1, dense_q, dense_k, map_q, map_k)``.
        symmetric_views: a two-view loss that may also treat an image and its caption as two views,
            so it trains image-text models too (with its own temperature; the logit scale is unused).
        needs_bias: the model must carry a learnable logit bias (``model.logit_bias_init``).
        needs_labels: class labels of the batch (image-image training).
        needs_momentum_encoder: a momentum key encoder (``model.momentum``): the loss scores
            queries against keys, and a model with such an encoder needs a loss that declares it.
        needs_dense_head: the model's dense head (``model.dense``), likewise both ways.
        takes_text_negatives: accepts hard-negative captions (``data.negatives_key``) as
            ``text_negatives=``.
        provides_clusters: keeps a per-sample cluster table (``sample_table()``) that
            ``data.sampler: clusters`` orders epochs by.
        stats_group: the prefix under which the trainer logs ``last_stats``.
        batch_inputs: batch keys the loss reads each step besides the features (e.g. ``"index"``,
            sample ids; ``"caption_key"``); the trainer hands them over with :meth:`set_batch`.
    """

    pairing: ClassVar[str] = "cross_modal"
    symmetric_views: ClassVar[bool] = False
    needs_bias: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    needs_momentum_encoder: ClassVar[bool] = False
    needs_dense_head: ClassVar[bool] = False
    takes_text_negatives: ClassVar[bool] = False
    provides_clusters: ClassVar[bool] = False
    stats_group: ClassVar[str] = "negatives"

    def __init__(self):
        super().__init__()
        self.last_stats: dict[str, float] = {}  # logged by the trainer under stats_group

    @property
    def batch_inputs(self) -> tuple[str, ...]:
        """Batch keys :meth:`set_batch` wants this step (may depend on the loss's options)."""
        return ()

    def set_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        """Receive this step's :attr:`batch_inputs`, concatenated over micro-batches, before the call."""

    def check_recipe(self, recipe) -> None:
        """Raise :class:`~mmcl.errors.ConfigError` for what this loss cannot train in ``recipe``
        beyond what the declarations say (called once, before any work starts)."""


LOSSES: Registry[type] = Registry("loss")
DEFAULT_LOSS = "infonce"  # what a recipe without loss.name trains with (CLIP's loss)


def register_loss(name: str):
    """Class decorator: register a :class:`ContrastiveLoss` subclass under ``name``."""
    add = LOSSES.register(name)

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, ContrastiveLoss)):
            raise TypeError(
                f"register_loss({name!r}): {cls!r} must be a subclass of mmcl.losses.ContrastiveLoss, which "
                "declares what the loss needs (pairing, bias, labels, ...)"
            )
        return add(cls)

    return decorator


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
    if loss_fn.pairing == "two_view":
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
    if loss_fn.pairing == "dense":
        if dense is None or dense[0] is None:
            raise ValueError("this loss scores feature-map locations: the model needs its dense head (model.dense)")
        return loss_fn(z0, z1, *dense) + 0.0 * logit_scale
    if loss_fn.needs_labels:
        if labels is None:
            raise ValueError(
                "this loss needs class labels: a labelled image folder (ROOT/<class>/...) or data.label_key"
            )
        if index is not None:
            labels = torch.where(labels >= 0, labels, -1 - index.to(labels.dtype))
        return loss_fn(z0, z1, labels) + 0.0 * logit_scale
    return call_cross_modal(loss_fn, z0, z1, logit_scale, logit_bias)
