"""Vision tower: any timm model as a feature extractor (``num_classes=0``)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..config import VisionConfig, resolve_path
from ..errors import ConfigError
from .lock import lock_timm


class TimmVisionTower(nn.Module):
    """Wraps ``timm.create_model(name, num_classes=0)``; output is the pooled feature vector.

    Shape: images (B, 3, H, W) -> features (B, ``num_features``).
    """

    def __init__(self, cfg: VisionConfig, load_weights: bool = True):
        super().__init__()
        kwargs = dict(cfg.kwargs)
        if cfg.patch_dropout:
            kwargs["patch_drop_rate"] = cfg.patch_dropout
        if cfg.weights is not None and load_weights:
            # timm reads the local file (safetensors or a state dict loaded with weights_only=True).
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": resolve_path(cfg.weights)})
        try:
            self.trunk = timm.create_model(cfg.name, num_classes=0, **kwargs)
        except TypeError as e:
            if cfg.patch_dropout and "patch_drop_rate" in str(e):
                raise ConfigError(
                    f"model.vision.patch_dropout needs a ViT-style timm model with patch tokens; {cfg.name!r} has none"
                ) from None
            raise ConfigError(
                f"model.vision.kwargs {cfg.kwargs} not accepted by timm model {cfg.name!r}: {e}"
            ) from None
        if cfg.pool is not None:
            try:
                self.trunk.reset_classifier(0, global_pool=cfg.pool)
            except (AssertionError, KeyError, TypeError, ValueError) as e:
                raise ConfigError(
                    f"model.vision.pool {cfg.pool!r} not accepted by timm model {cfg.name!r}: {e}"
                ) from None
        if cfg.grad_checkpointing:
            self.trunk.set_grad_checkpointing(True)
        if cfg.lock:
            lock_timm(self.trunk, cfg.unlocked_groups)
        self.num_features = self.trunk.num_features
        self.image_size = cfg.image_size

    def data_config(self) -> dict:
        """Input size, interpolation, mean and std from the tower's pretrained config; the input
        size follows ``image_size`` or the size the model was actually built for."""
        config = timm.data.resolve_data_config({}, model=self.trunk)
        size = self.image_size
        if size is None:
            built = getattr(getattr(self.trunk, "patch_embed", None), "img_size", None)
            size = built[0] if isinstance(built, (tuple, list)) else built
        if size is not None:
            config["input_size"] = (3, int(size), int(size))
        return config

    def no_weight_decay_names(self) -> set[str]:
        names = getattr(self.trunk, "no_weight_decay", lambda: set())()
        return {f"trunk.{n}" for n in names}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def forward_map(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's unpooled output (timm ``forward_features``); :meth:`pool` of it equals ``forward``."""
        return self.trunk.forward_features(images)

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, ``num_features``) from :meth:`forward_map`'s output."""
        return self.trunk.forward_head(feature_map, pre_logits=True)

    def tokens(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Per-location features (B, h * w, C) in row-major order, and the grid (h, w), from a CNN's
        (B, C, h, w) map (or an NHWC one), or a ViT's tokens without its class/register tokens."""
        if feature_map.ndim == 4:
            if getattr(self.trunk, "output_fmt", "NCHW") == "NHWC":
                feature_map = feature_map.permute(0, 3, 1, 2)
            b, c, h, w = feature_map.shape
            return feature_map.flatten(2).transpose(1, 2), (h, w)
        grid = getattr(getattr(self.trunk, "patch_embed", None), "grid_size", None)
        if feature_map.ndim != 3 or grid is None:
            raise ConfigError(
                f"timm model {type(self.trunk).__name__} gives features of shape {tuple(feature_map.shape)}: "
                "dense (per-location) features need a CNN feature map or ViT patch tokens"
            )
        prefix = getattr(self.trunk, "num_prefix_tokens", 0)
        return feature_map[:, prefix:], (int(grid[0]), int(grid[1]))

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features at every location, (B, C, h, w): what a per-pixel probe reads."""
        tokens, (h, w) = self.tokens(self.forward_map(images))
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
