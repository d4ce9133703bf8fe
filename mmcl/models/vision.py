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
