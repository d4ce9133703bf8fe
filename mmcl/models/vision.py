"""Vision tower: any timm model as a feature extractor (``num_classes=0``)."""

from __future__ import annotations

import sys

import timm
import torch
from torch import nn

from ..errors import ConfigError
from ..recipe import VisionConfig, resolve_path
from ..weights import key_mismatch_message, load_state_file
from .lock import lock_timm

# where training scripts commonly nest the weights in a checkpoint, and the prefix DDP adds
_NESTED = ("state_dict", "model", "state_dict_ema", "model_ema")


def _unwrap(state: dict) -> dict:
    for name in _NESTED:
        if isinstance(state.get(name), dict) and state[name] and all(torch.is_tensor(v) for v in state[name].values()):
            state = state[name]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _fixed_input_size(trunk: nn.Module) -> int | None:
    """The one square input side a ViT-style trunk accepts, or None (convolutional, or dynamic size)."""
    embed = getattr(trunk, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is None or not getattr(embed, "strict_img_size", True) or getattr(embed, "dynamic_img_size", False):
        return None
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    return int(size[0]) if size[0] == size[1] else None


def load_tower_weights(trunk: nn.Module, path: str, strict: bool = True, key: str = "model.vision") -> str:
    """Load a weights file (safetensors, or a torch file with ``weights_only``) into a timm trunk.

    The model family's own ``checkpoint_filter_fn`` adapts the file first where timm has one (e.g.
    position embeddings resized to the model's ``img_size``), and a classifier head the feature
    extractor does not have is dropped. Anything else that does not match stops the run with one
    line; ``strict: false`` loads the tensors that match and says how many.

    Returns:
        A one-line description of what was loaded, for the run summary.
    """
    state = load_state_file(path, f"{key}.weights file")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in _unwrap(state).values()):
        raise ConfigError(f"{key}.weights: {path} does not hold a state dict (tensors by name)")
    state = _unwrap(state)
    module = sys.modules.get(type(trunk).__module__)
    adapt = getattr(module, "checkpoint_filter_fn", None)
    if adapt is not None:
        try:
            state = adapt(state, trunk)
        except Exception:  # noqa: BLE001 - a file in another naming: the key check below says what is wrong
            pass
    ours = trunk.state_dict()
    head = (getattr(trunk, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    unexpected = sorted(k for k in state if k not in ours and not (heads and k.startswith(heads)))
    missing = sorted(k for k in ours if k not in state)
    shapes = sorted(k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape))
    if strict and (missing or unexpected):
        raise ConfigError(
            key_mismatch_message(f"{key}.weights {path}", missing, unexpected, list(ours))
            + f" (set {key}.strict: false to load only the tensors that match)"
        )
    if shapes and (strict or len(shapes) == len(ours)):
        k = shapes[0]
        raise ConfigError(
            f"{key}.weights {path}: {len(shapes)} tensors have other shapes than the model's, e.g. {k}: "
            f"{tuple(state[k].shape)} in the file, {tuple(ours[k].shape)} in the model"
        )
    keep = {k: v for k, v in state.items() if k in ours and k not in shapes}
    if not keep:
        raise ConfigError(key_mismatch_message(f"{key}.weights {path}", missing, unexpected, list(ours)))
    trunk.load_state_dict(keep, strict=False)
    if len(keep) == len(ours):
        return f"{path} (all {len(ours)} tensors)"
    return (
        f"{path} ({len(keep)} of {len(ours)} tensors; {len(ours) - len(keep)} left at random init, "
        f"{len(unexpected)} in the file unused; {key}.strict: false)"
    )


class TimmVisionTower(nn.Module):
    """Wraps ``timm.create_model(name, num_classes=0)``; output is the pooled feature vector.

    Shape: images (B, 3, H, W) -> features (B, ``num_features``).
    """

    def __init__(self, cfg: VisionConfig, load_weights: bool = True, key: str = "model.vision"):
        super().__init__()
        kwargs = dict(cfg.kwargs)
        if cfg.patch_dropout:
            kwargs["patch_drop_rate"] = cfg.patch_dropout
        self.trunk = self._create(cfg, kwargs, key)
        fixed = _fixed_input_size(self.trunk)
        if cfg.image_size is not None and fixed is not None and fixed != cfg.image_size:
            # a ViT-style tower is built for one input size: build it for image_size instead of
            # failing at the first batch ("Input height (32) doesn't match model (224)")
            if "img_size" in kwargs:
                raise ConfigError(
                    f"{key}.image_size is {cfg.image_size} but {key}.kwargs.img_size is {kwargs['img_size']}: "
                    "give one of them (or the same value)"
                )
            self.trunk = self._create(cfg, {**kwargs, "img_size": cfg.image_size}, key)
        # what the tower's weights came from, for the run summary
        self.weights_note = "random init"
        if cfg.weights is not None and load_weights:
            # Loaded here, not by timm: timm loads a feature extractor's file non-strictly (a file in
            # another naming would leave the tower at random init with only a log line) and may unpickle.
            self.weights_note = load_tower_weights(self.trunk, resolve_path(cfg.weights), cfg.strict, key)
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

    @staticmethod
    def _create(cfg: VisionConfig, kwargs: dict, key: str) -> nn.Module:
        try:
            return timm.create_model(cfg.name, num_classes=0, **kwargs)
        except TypeError as e:
            if cfg.patch_dropout and "patch_drop_rate" in str(e):
                raise ConfigError(
                    f"{key}.patch_dropout needs a ViT-style timm model with patch tokens; {cfg.name!r} has none"
                ) from None
            if "img_size" in str(e) and "img_size" not in cfg.kwargs:
                raise ConfigError(
                    f"{key}.image_size: timm model {cfg.name!r} is built for one input size and takes no img_size; "
                    "set image_size to null (its own size)"
                ) from None
            raise ConfigError(f"{key}.kwargs {cfg.kwargs} not accepted by timm model {cfg.name!r}: {e}") from None

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
