"""Batch samplers of map-style training data, registered by name (``data.sampler`` in a recipe).

Every sampler cuts each epoch's order into contiguous global batches exactly as
:class:`ResumableBatchSampler` does, so ranks take disjoint blocks, the epoch is covered once and
resume is exact; they differ only in the order.

    random          a seeded permutation (:class:`ResumableBatchSampler`)
    clusters        stretches drawn from neighbouring clusters of the loss (:class:`ClusterBatchSampler`);
                    needs a loss that clusters samples (``cluster_infonce``)
    caption_edits   each caption beside one a minimal edit away (:class:`CaptionEditBatchSampler`)

A sampler's ``check(data, kind)`` reports a bad ``data.sampler_kwargs`` before any work starts;
``from_config`` builds it for a dataset.
"""

from __future__ import annotations

from ...errors import ConfigError
from ...recipe import DataConfig
from ...registry import Registry
from .base import ResumableBatchSampler
from .caption_edits import EDITS, CaptionEditBatchSampler, partner_groups
from .clusters import ClusterBatchSampler

SAMPLERS: Registry[type] = Registry("sampler")
SAMPLERS.register("random")(ResumableBatchSampler)
SAMPLERS.register("clusters")(ClusterBatchSampler)
SAMPLERS.register("caption_edits")(CaptionEditBatchSampler)
register_sampler = SAMPLERS.register


def list_samplers(pattern: str = "*") -> list[str]:
    """Registered batch samplers (``data.sampler``)."""
    return SAMPLERS.list(pattern)


def get_sampler(name: str) -> type:
    if name not in SAMPLERS:
        raise ConfigError(f"data.sampler: {name!r} is not a sampler; valid choices: {', '.join(list_samplers())}")
    return SAMPLERS.get(name)


def check_sampler(data: DataConfig, kind: str) -> None:
    """``data.sampler`` and its ``sampler_kwargs`` (raises :class:`ConfigError`)."""
    get_sampler(data.sampler).check(data, kind)


def create_sampler(data: DataConfig, dataset, rank: int, world_size: int, seed: int) -> ResumableBatchSampler:
    """The sampler ``data.sampler`` names, for ``dataset`` on process ``rank`` of ``world_size``."""
    return get_sampler(data.sampler).from_config(data, dataset, rank, world_size, seed)


__all__ = [
    "EDITS",
    "SAMPLERS",
    "CaptionEditBatchSampler",
    "ClusterBatchSampler",
    "ResumableBatchSampler",
    "check_sampler",
    "create_sampler",
    "get_sampler",
    "list_samplers",
    "partner_groups",
    "register_sampler",
]
