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

from ._checks import check_two_views


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
    longest = max(sizes)
    if len(sizes) == 1 or longest == 0:
        return x
    from torch.distributed.nn.functional import all_gather

    padded = torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[0])) if x.shape[0] < longest else x
    parts = all_gather(padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def gather_text_negatives(negatives: torch.Tensor, text: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's hard-negative caption embeddings (NegCLIP), with gradient: (M, D) per rank,
    any M (zero included: ``data.negatives_fraction`` < 1 draws them per row), D the captions'."""
    if negatives.ndim != 2 or negatives.shape[1] != text.shape[1]:
        raise ValueError(
            f"text_negatives must be (M, {text.shape[1]}): any number of captions of the captions' width, "
            f"got {tuple(negatives.shape)}"
        )
    return gather_with_grad(negatives.to(text.dtype), batch_sizes(negatives.shape[0], world_size, text.device))


def gather_no_grad(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate ``x`` (labels, indices: anything that needs no gradient) from every rank."""
    if len(sizes) == 1:
        return x
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)


def two_view_layout(
    z0: torch.Tensor, z1: torch.Tensor, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Anchors, columns and indices for the two-view (SimCLR-style) losses under data parallelism.

    The global batch of ``n = sum(sizes)`` samples has ``2n`` views laid out as ``[all z0; all z1]``.
    This rank's anchors are its rows of both views, ``[z0; z1]`` (2B, D); the columns are all 2n
    gathered views (with gradient). ``self_idx[a]`` is the column of anchor ``a`` itself and
    ``pos_idx[a]`` the column of its other view.

    Returns:
        anchors (2B, D), columns (2n, D), self_idx (2B,), pos_idx (2B,), sizes (per-rank batch sizes).
    """
    sizes = batch_sizes(z0.shape[0], world_size, z0.device)
    n, offset = sum(sizes), sum(sizes[:rank])
    columns = torch.cat([gather_with_grad(z0, sizes), gather_with_grad(z1, sizes)], dim=0)
    anchors = torch.cat([z0, z1], dim=0)
    local = torch.arange(z0.shape[0], device=z0.device) + offset
    self_idx = torch.cat([local, local + n])
    pos_idx = torch.cat([local + n, local])
    return anchors, columns, self_idx, pos_idx, sizes


def two_view_inputs(
    z0: torch.Tensor, z1: torch.Tensor, normalize: bool, rank: int | None = None, world_size: int | None = None
):
    """The common start of every two-view loss: check the views, compute in fp32 at least (fp64
    kept), optionally L2-normalise, and lay the views out across ranks (see :func:`two_view_layout`)."""
    check_two_views(z0, z1)
    rank, world_size = dist_info(rank, world_size)
    dtype = torch.promote_types(z0.dtype, torch.float32)
    z0, z1 = z0.to(dtype), z1.to(dtype)
    if normalize:
        z0, z1 = torch.nn.functional.normalize(z0, dim=-1), torch.nn.functional.normalize(z1, dim=-1)
    return two_view_layout(z0, z1, rank, world_size)


def cross_modal_inputs(
    image_features: torch.Tensor, text_features: torch.Tensor, rank: int | None = None, world_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int, list[int]]:
    """The common start of every cross-modal loss: check shapes, compute in fp32 at least (fp64
    kept), and find this rank and every rank's batch size. Returns (img, txt, rank, sizes)."""
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"image and text features differ in shape: expected equal shape (B, D), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    rank, world_size = dist_info(rank, world_size)
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    img, txt = image_features.to(dtype), text_features.to(dtype)
    return img, txt, rank, batch_sizes(img.shape[0], world_size, img.device)
