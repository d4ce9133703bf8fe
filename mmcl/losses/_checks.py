"""Argument checks shared by the losses: each raises ValueError saying what was expected."""

from __future__ import annotations

import torch


def check_two_views(z0: torch.Tensor, z1: torch.Tensor) -> None:
    """Raise ValueError unless the two views are (B, D) tensors of the same shape."""
    if z0.dim() != 2 or z0.shape != z1.shape:
        raise ValueError(f"expected two views of equal shape (B, D), got {tuple(z0.shape)} and {tuple(z1.shape)}")


def check_rank_world(rank: int | None, world_size: int | None) -> None:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows or None, got {chunk_size}")
