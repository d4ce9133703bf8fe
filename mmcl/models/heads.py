"""Projection heads from a tower's feature size to the shared embedding size."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, out_dim: int, kind: str = "linear") -> nn.Module:
    """``linear``: one bias-free matrix (CLIP). ``mlp``: Linear-GELU-Linear with a hidden width of in_dim."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim, bias=False))
    raise ValueError(f"unknown head {kind!r}; valid choices: linear, mlp")
