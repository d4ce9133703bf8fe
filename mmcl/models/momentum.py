"""The momentum (EMA) update of a key encoder, as MoCo keeps it."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float = 0.999) -> None:
    """EMA of weights: target <- momentum * target + (1 - momentum) * online (buffers are copied)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
