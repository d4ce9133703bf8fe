"""The locked-tower cache (``model.vision.cache_locked``): a locked image tower (LiT) without image
augmentation gives the same output for a sample in every epoch, so it is computed once, the first
time the sample is seen, and reused after that: later steps cost only the trained side.

The cache is keyed by the sample id every data source puts in a batch (``index``: the row of a
table, a stable hash of the shard and sample key for WebDataset, shard and position for streamed
Hugging Face data). It holds the tower's output (the pooled features before the projection: one
row of the tower's width per sample) on the training device, in the dtype the tower produced.
It is exact: a step with a cached batch sees the values the tower would compute again, as long as
the tower's output for a sample does not depend on the rest of its batch or on chance, which
:func:`install_tower_cache` checks (no BatchNorm with batch statistics, no dropout, drop path or
patch dropout in the tower).

Each process caches the samples it sees; the cache is not saved in checkpoints (a resumed run
rebuilds it as it reads the data again, with the same results). Outside training steps (evaluation,
``encode_image`` in user code) the tower runs as usual.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
from torch import nn

from ..errors import ConfigError

_KEYS: ContextVar[torch.Tensor | None] = ContextVar("mmcl_tower_cache_keys", default=None)


@contextlib.contextmanager
def sample_keys(keys: torch.Tensor | None):
    """The sample ids of the batch whose forward pass runs inside this block (None: no caching)."""
    token = _KEYS.set(keys)
    try:
        yield
    finally:
        _KEYS.reset(token)


def _rows_of(args: tuple, kwargs: dict, rows: list[int], n: int) -> tuple[tuple, dict]:
    """The tower's call arguments for the batch rows ``rows`` only (the images: the first positional
    argument, or transformers' ``pixel_values``)."""
    if len(rows) == n:
        return args, kwargs
    index = torch.tensor(rows)
    if args:
        return (args[0][index.to(args[0].device)], *args[1:]), kwargs
    pixels = kwargs["pixel_values"]
    return args, {**kwargs, "pixel_values": pixels[index.to(pixels.device)]}


class TowerCache:
    """Wraps ``module.forward`` (an instance attribute: parameter names and state dict unchanged)."""

    def __init__(self, module: nn.Module):
        self.module, self.store = module, {}
        self.hits = self.misses = 0
        self._forward = module.forward
        self._output_type = None  # a transformers ModelOutput class, when the tower returns one
        module.forward = self.forward

    def forward(self, *args, **kwargs):
        keys = _KEYS.get()
        if keys is None or not self.module.training:
            return self._forward(*args, **kwargs)
        ids = keys.tolist()
        missing = [j for j, i in enumerate(ids) if i not in self.store]
        if missing:  # only the samples not seen yet go through the tower
            args, kwargs = _rows_of(args, kwargs, missing, len(ids))
            with torch.no_grad():
                out = self._forward(*args, **kwargs)
            features = out if isinstance(out, torch.Tensor) else out.pooler_output
            self._output_type = None if isinstance(out, torch.Tensor) else type(out)
            for j, row in zip(missing, features.detach()):
                self.store[ids[j]] = row.clone()
        self.misses += len(missing)
        self.hits += len(ids) - len(missing)
        rows = torch.stack([self.store[i] for i in ids])
        return rows if self._output_type is None else self._output_type(pooler_output=rows)

    def describe(self) -> str:
        return f"{len(self.store)} samples cached, {self.hits} hits, {self.misses} computed"


def image_tower(model: nn.Module) -> nn.Module | None:
    """The image tower of an mmcl model whose output the cache can hold: the timm tower of a
    DualEncoder, open_clip's ``visual``, a transformers CLIP's ``vision_model``."""
    if isinstance(getattr(model, "vision", None), nn.Module) and hasattr(model, "image_proj"):
        return model.vision
    inner = getattr(model, "model", None)
    for name in ("visual", "vision_model"):
        if isinstance(getattr(inner, name, None), nn.Module):
            return getattr(inner, name)
    return None


RATES = ("drop_prob", "prob", "dropout", "drop_rate")  # DropPath, PatchDropout, attention, timm head dropout


def stochastic_layers(tower: nn.Module) -> list[str]:
    """Layers whose output depends on the batch or on chance in training mode."""
    out = []
    for name, m in tower.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.append(f"{name} (BatchNorm)")
        elif isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            out.append(f"{name} (dropout {m.p})")
        elif any(isinstance(getattr(m, a, None), float) and getattr(m, a) > 0 for a in RATES):
            out.append(f"{name} ({type(m).__name__})")
    return out


def install_tower_cache(recipe, model: nn.Module) -> TowerCache | None:
    """The cache of ``model``'s image tower when the recipe asks for it; a :class:`ConfigError`
    when the tower is not locked or not deterministic."""
    if not recipe.model.vision.cache_locked:
        return None
    tower = image_tower(model)
    if tower is None:
        raise ConfigError(f"model.vision.cache_locked: {type(model).__name__} has no image tower mmcl can cache")
    prefix = next(n for n, m in model.named_modules() if m is tower)
    training = [f"{prefix}.{n}" for n, p in tower.named_parameters() if p.requires_grad]
    if training:
        raise ConfigError(
            f"model.vision.cache_locked needs a locked image tower, but {len(training)} of its parameters train "
            f"(e.g. {', '.join(training[:3])}); set model.vision.lock: true with unlocked_groups: 0, or "
            "freeze the whole tower with model.freeze"
        )
    random = stochastic_layers(tower)
    if random:
        raise ConfigError(
            "model.vision.cache_locked: the locked tower's output depends on its batch or on chance in "
            f"training ({', '.join(random[:3])}); freeze its BatchNorm (lock it) and set its dropout rates to 0"
        )
    return TowerCache(tower)
