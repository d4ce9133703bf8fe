"""Cross-process helpers that keep every loss exact under data parallelism.

Features are gathered WITH gradient (``torch.distributed.nn.all_gather``), whose backward sums the
gradient each rank's loss sends to every rank's features. Each rank then computes the loss for its
own rows against all columns, with labels offset by the number of rows on lower ranks.

Ranks may hold different batch sizes (a skipped sample shrinks one rank's batch): rows are padded
to the largest size for the collective and trimmed afterwards, so nothing is silently mislabelled.
Losses weight each rank's mean by its share of rows, so the result is the global mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values win; else torch.distributed when initialised; else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_sizes(n: int, world_size: int, device: torch.device) -> list[int]:
    """Every rank's local batch size."""
    if world_size == 1:
        return [n]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=device))
    return [int(s) for s in sizes]


def gather_with_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate ``x`` (this rank's ``sizes[rank]`` rows) from every rank, keeping autograd."""
    if len(sizes) == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    longest = max(sizes)
    padded = torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[0])) if x.shape[0] < longest else x
    parts = all_gather(padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)
