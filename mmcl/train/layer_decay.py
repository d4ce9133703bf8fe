"""Layer-wise learning-rate decay (BEiT, Bao et al. 2022; ELECTRA, Clark et al. 2020) for the
transformer towers of every backend.

In a tower with ``L`` blocks each parameter gets a layer id: 0 for the embeddings (patch/token
embedding, class token, position embedding, a norm before the blocks), ``i`` for block ``i``
(1-based, block ``blocks.0`` is 1), and ``L + 1`` for everything after the blocks (final norm,
pooling, projection, head). Its learning rate is ``lr * decay ** (L + 1 - layer_id)``: the head
trains at the base lr, the last block at ``lr * decay``, the embeddings at ``lr * decay ** (L + 1)``.
Parameters outside both towers (the logit scale and bias) keep the base lr. The schedule multiplies
each group's own lr (``LambdaLR`` scales every group's initial lr), and the weight-decay split of
:func:`mmcl.train.optim.param_groups` is kept: one group per (lr scale, weight decay).
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import ConfigError

# which tower a parameter belongs to, by name: timm_hf (DualEncoder), open_clip (OpenClipModel.model),
# hf (HFClipModel.model: CLIPModel, SiglipModel)
TOWERS = {
    "vision": re.compile(r"^(vision\.|image_proj\.|model\.visual\.|model\.vision_model\.|model\.visual_projection\.)"),
    "text": re.compile(
        r"^(text\.|text_proj\.|model\.text_model\.|model\.text_projection|model\.transformer\.|model\.token_embedding\."
        r"|model\.positional_embedding$|model\.ln_final\.|model\.text\.)"
    ),
}
# block i (0-based in the name): timm ViT, HF BERT-like, open_clip, HF CLIP/SigLIP
BLOCK = re.compile(r"(?:^|\.)(?:blocks|encoder\.layer|resblocks|encoder\.layers)\.(\d+)\.")
# before the blocks
EMBEDDING = re.compile(
    r"(?:^|\.)(?:patch_embed|cls_token|reg_token|pos_embed|mask_token|embeddings|conv1|class_embedding"
    r"|positional_embedding|token_embedding|ln_pre|pre_layrnorm)(?:\.|$)"
)


def tower_of(name: str) -> str | None:
    for tower, pattern in TOWERS.items():
        if pattern.match(name):
            return tower
    return None


def decays_of(value: float | dict[str, float]) -> dict[str, float]:
    """``train.layer_decay`` as ``{tower: decay}``."""
    decays = {t: value for t in TOWERS} if not isinstance(value, dict) else dict(value)
    for tower, d in decays.items():
        if tower not in TOWERS:
            raise ConfigError(f"train.layer_decay: {tower!r} is not a tower; valid choices: vision, text")
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise ConfigError(f"train.layer_decay.{tower}: expected a number in (0, 1], got {d!r}")
    return decays


def layer_ids(names: list[str], decays: dict[str, float]) -> dict[str, tuple[str | None, int, int]]:
    """``name -> (tower, layer id, L)`` for the towers in ``decays``; (None, 0, 0) elsewhere."""
    blocks: dict[str, int] = {}
    for name in names:
        tower, m = tower_of(name), BLOCK.search(name)
        if tower in decays and m:
            blocks[tower] = max(blocks.get(tower, 0), int(m.group(1)) + 1)
    for tower in decays:
        if tower not in blocks and any(tower_of(n) == tower for n in names):
            raise ConfigError(
                f"train.layer_decay: the {tower} tower has no transformer blocks (blocks.N, encoder.layer.N, "
                f"resblocks.N, encoder.layers.N); give the other tower only, e.g. train.layer_decay: "
                f"{{{'text' if tower == 'vision' else 'vision'}: 0.75}}"
            )
    out = {}
    for name in names:
        tower = tower_of(name)
        if tower not in decays:
            out[name] = (None, 0, 0)
            continue
        n_blocks, m = blocks[tower], BLOCK.search(name)
        layer = int(m.group(1)) + 1 if m else (0 if EMBEDDING.search(name) else n_blocks + 1)
        out[name] = (tower, layer, n_blocks)
    return out


def lr_scales(model: nn.Module, layer_decay: float | dict[str, float]) -> dict[str, float]:
    """``parameter name -> lr multiplier`` (1 outside the decayed towers)."""
    decays = decays_of(layer_decay)
    ids = layer_ids([n for n, _ in model.named_parameters()], decays)
    return {n: 1.0 if t is None else decays[t] ** (n_blocks + 1 - layer) for n, (t, layer, n_blocks) in ids.items()}


def decayed_groups(model: nn.Module, groups: list[dict], base_lr: float, layer_decay) -> list[dict]:
    """Split weight-decay ``groups`` further by lr scale: each gets ``lr = base_lr * scale`` (and
    ``lr_scale``); the groups with the largest lr first (so the logged lr is the base one)."""
    scales = lr_scales(model, layer_decay)
    name_of = {id(p): n for n, p in model.named_parameters()}
    split: dict[tuple[float, float], list] = {}
    for group in groups:
        for p in group["params"]:
            split.setdefault((scales[name_of[id(p)]], group["weight_decay"]), []).append(p)
    return [
        {"params": params, "weight_decay": wd, "lr": base_lr * scale, "lr_scale": scale}
        for (scale, wd), params in sorted(split.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))
    ]
