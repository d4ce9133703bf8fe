"""Image transforms derived from timm, sized by the vision tower's own data config."""

from __future__ import annotations

from collections.abc import Callable

from timm.data import create_transform

from ..config import AugmentConfig


def image_transforms(data_config: dict, augment: AugmentConfig) -> tuple[Callable, Callable]:
    """(train_transform, eval_transform) for a tower's ``timm.data.resolve_data_config`` output."""
    common = dict(
        input_size=data_config["input_size"],
        interpolation=data_config.get("interpolation", "bicubic"),
        mean=data_config["mean"],
        std=data_config["std"],
    )
    eval_tf = create_transform(**common, is_training=False, crop_pct=1.0)
    if not augment.enabled:
        return eval_tf, eval_tf
    train_tf = create_transform(
        **common,
        is_training=True,
        scale=tuple(augment.scale),
        ratio=tuple(augment.ratio),
        hflip=augment.hflip,
        color_jitter=augment.color_jitter or None,
    )
    return train_tf, eval_tf
