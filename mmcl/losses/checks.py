"""Whether a recipe's loss fits its model and data, asked of the loss itself.

Every registered loss declares what it needs (:class:`~mmcl.losses.base.ContrastiveLoss`): how it
is called, a logit bias, labels, a momentum encoder, a dense head, hard-negative captions, a
cluster table. This module compares those declarations with the recipe and names no loss.
"""

from __future__ import annotations

import inspect

from ..data.samplers import get_sampler
from ..errors import ConfigError
from ..models.backends import get_backend
from ..recipe import Recipe
from .base import DEFAULT_LOSS, LOSSES, ContrastiveLoss, create_loss, list_losses


def _kwargs_hint(name: str) -> str:
    """Which keyword arguments a loss takes, and how to drop ones inherited from a base recipe."""
    params = [
        p
        for p in inspect.signature(LOSSES.get(name)).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("rank", "world_size")
    ]
    return (
        f"; valid keys: {', '.join(p.name for p in params) or 'none'}. loss.kwargs merge with the base"
        " recipe's: replace them whole with the override loss.kwargs={...} or, in a recipe,"
        " kwargs: {_replace_: true, ...}"
    )


def _losses_where(flag) -> str:
    return ", ".join(n for n in list_losses() if flag(LOSSES.get(n))) or "none"


def check_loss(recipe: Recipe) -> ContrastiveLoss:
    """Build the recipe's loss and check it against the model and data sections.

    Returns:
        The loss (so callers need not build it twice).

    Raises:
        ConfigError: naming the key and the valid choices.
    """
    lo, m, d = recipe.loss, recipe.model, recipe.data
    if lo.name is None:
        lo.name = DEFAULT_LOSS  # resolved once, so the run folder's recipe.yaml names it
    if lo.name not in LOSSES:
        raise ConfigError(f"loss.name: unknown loss {lo.name!r}; valid choices: {', '.join(list_losses())}")
    try:
        loss = create_loss(lo.name, **lo.kwargs)
    except (TypeError, ValueError) as e:
        hint = _kwargs_hint(lo.name) if isinstance(e, TypeError) else ""
        raise ConfigError(f"loss.kwargs {lo.kwargs} are not valid for {lo.name!r}: {e}{hint}") from None
    if m.kind == "image_image":
        _check_image_image(recipe, loss)
    elif loss.pairing != "cross_modal" and not loss.symmetric_views:
        fits = _losses_where(lambda c: c.pairing == "cross_modal" or c.symmetric_views)
        raise ConfigError(
            f"loss.name: {lo.name!r} is a two-view loss for image-image training; image-text training needs "
            f"one of: {fits}"
        )
    if d.negatives_key is not None and not loss.takes_text_negatives:
        raise ConfigError(
            f"data.negatives_key: hard-negative captions are scored by loss.name: "
            f"{_losses_where(lambda c: c.takes_text_negatives)} (got {lo.name!r})"
        )
    if get_sampler(d.sampler).needs_loss_clusters and not loss.provides_clusters:
        raise ConfigError(
            f"data.sampler: {d.sampler} groups batches by the clusters of loss.name: "
            f"{_losses_where(lambda c: c.provides_clusters)} (got {lo.name!r}); valid choices with this loss: random"
        )
    if loss.needs_bias and not get_backend(m).has_logit_bias(m):
        raise ConfigError(
            f"loss {lo.name!r} needs a learnable logit bias: set model.logit_bias_init (SigLIP's paper uses -10, "
            "with model.logit_scale_init: 10), or train a model that has one (an open_clip or Hugging Face SigLIP)"
        )
    loss.check_recipe(recipe)
    return loss


def _check_image_image(recipe: Recipe, loss: ContrastiveLoss) -> None:
    """What image-image training (``model.kind: image_image``) asks of the loss and the model."""
    name, m = recipe.loss.name, recipe.model
    if loss.needs_momentum_encoder and m.momentum is None:
        raise ConfigError(
            f"loss.name: {name} scores queries against keys of a momentum encoder: use it together "
            "with model.momentum (e.g. 0.999)"
        )
    if m.momentum is not None and not loss.needs_momentum_encoder:
        raise ConfigError(
            "model.momentum builds a MoCo key encoder, which only loss.name: "
            f"{_losses_where(lambda c: c.needs_momentum_encoder)} uses (got {name!r})"
        )
    if loss.needs_dense_head and not m.dense:
        raise ConfigError(f"loss.name: {name} needs the dense head: set model.dense: true")
    if m.dense and not loss.needs_dense_head:
        raise ConfigError(
            f"model.dense builds a dense head, which only loss.name: {_losses_where(lambda c: c.needs_dense_head)} "
            f"trains (got {name!r})"
        )
