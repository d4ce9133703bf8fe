"""Projection heads from a tower's feature size to the shared embedding size."""

from __future__ import annotations

from torch import nn

HEADS = ("linear", "mlp", "simclr", "mocov2")


def projection_head(in_dim: int, out_dim: int, kind: str = "linear") -> nn.Module:
    """A projection head; the hidden width of the MLP heads is ``in_dim``.

    - ``linear``: one bias-free matrix (CLIP);
    - ``mlp``: Linear-GELU-Linear;
    - ``simclr``: Linear-BN-ReLU-Linear-BN, the head of SimCLR's released code (Chen et al. 2020);
    - ``mocov2``: Linear-ReLU-Linear, MoCo v2's head (Chen et al. 2020, "Improved Baselines").
    """
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim, bias=False))
    if kind == "simclr":
        return nn.Sequential(
            nn.Linear(in_dim, in_dim, bias=False),
            nn.BatchNorm1d(in_dim),
            nn.ReLU(inplace=True),
            nn.Linear(in_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim),
        )
    if kind == "mocov2":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown head {kind!r}; valid choices: {', '.join(HEADS)}")
