"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..recipe import TrainConfig
from .layer_decay import decayed_groups


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and everything that must not decay (norm weights,
    biases, the logit scale/bias, and what a timm tower lists in ``no_weight_decay``).
    Frozen parameters (``requires_grad=False``) are left out."""
    skip = model.no_weight_decay_names() if hasattr(model, "no_weight_decay_names") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name in skip or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device | None = None) -> torch.optim.Optimizer:
    """AdamW over :func:`param_groups`. ``train.fused_adamw``: None uses the fused kernel on GPU
    (where it is fastest), true forces it (CPU too, torch >= 2.4), false never."""
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    fused = cfg.fused_adamw if cfg.fused_adamw is not None else (device is not None and device.type == "cuda")
    if fused:
        kwargs["fused"] = True
    groups = param_groups(model, cfg.weight_decay)
    if cfg.layer_decay is not None:  # BEiT-style lr per layer (mmcl.train.layer_decay)
        groups = decayed_groups(model, groups, cfg.lr, cfg.layer_decay)
    return torch.optim.AdamW(groups, **kwargs)


def lr_lambda(cfg: TrainConfig):
    """Multiplier of the base lr at a step: linear warm-up, then cosine (or constant) to min_lr_ratio."""

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine

    return f


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
