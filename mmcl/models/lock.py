"""Tower locking (LiT, Zhai et al. 2022): freeze a tower, or all of it but its last layers.

Frozen parameters get ``requires_grad=False``, so they receive no gradient and the optimizer
leaves them out (no weight decay either). In a locked timm tower, BatchNorm layers become
``FrozenBatchNorm2d``, so their running statistics stay as loaded.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def lock_timm(trunk: nn.Module, unlocked_groups: int = 0) -> None:
    """Freeze a timm model except its last ``unlocked_groups`` coarse layer groups."""
    from timm.models import group_modules, group_parameters
    from timm.utils.model import freeze

    if not hasattr(trunk, "group_matcher"):
        if unlocked_groups:
            raise ConfigError(f"{type(trunk).__name__} has no timm group_matcher; lock it fully (unlocked_groups: 0)")
        freeze(trunk)
        return
    groups = group_modules(trunk, trunk.group_matcher(coarse=True))
    order = sorted(groups)
    if unlocked_groups >= len(order):
        raise ConfigError(
            f"model.vision.unlocked_groups={unlocked_groups} but the tower has {len(order)} layer groups; "
            f"use 0..{len(order) - 1}"
        )
    locked = [name for g in order[: len(order) - unlocked_groups] for name in groups[g]]
    freeze(trunk, locked)
    # parameters of the trunk itself (a ViT's cls_token, pos_embed) belong to no submodule above
    params, by_group = dict(trunk.named_parameters()), group_parameters(trunk, trunk.group_matcher(coarse=True))
    for name in (n for g in order[: len(order) - unlocked_groups] for n in by_group.get(g, [])):
        params[name].requires_grad_(False)


def _layer_list(model: nn.Module, n_layers: int) -> nn.ModuleList | None:
    """The transformer's list of layers: the ModuleList with ``num_hidden_layers`` entries."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    return None


def lock_hf(transformer: nn.Module, unlocked_layers: int = 0) -> None:
    """Freeze a transformers model except its last ``unlocked_layers`` layers (and any final
    norm after them)."""
    for p in transformer.parameters():
        p.requires_grad_(False)
    if unlocked_layers == 0:
        return
    n = transformer.config.num_hidden_layers
    layers = _layer_list(transformer, n)
    if layers is None or unlocked_layers > n:
        raise ConfigError(f"model.text.unlocked_layers={unlocked_layers}: use 0..{n} for this {n}-layer tower")
    for layer in list(layers)[n - unlocked_layers :]:
        for p in layer.parameters():
            p.requires_grad_(True)
    in_layers = {id(p) for p in layers.parameters()}
    embeddings = transformer.get_input_embeddings()
    in_embeddings = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    # a final norm (e.g. some encoders' last LayerNorm) belongs to the top of the stack
    for name, module in transformer.named_modules():
        if isinstance(module, nn.LayerNorm) and "embed" not in name:
            for p in module.parameters(recurse=False):
                if id(p) not in in_layers and id(p) not in in_embeddings:
                    p.requires_grad_(True)
