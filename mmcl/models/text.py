"""Text tower: a Hugging Face ``AutoModel`` (local directory or inline config) with a pooler."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from ..errors import ConfigError
from ..recipe import TextConfig, resolve_path
from .lock import lock_hf


def text_model_config(cfg: TextConfig) -> PretrainedConfig:
    """The transformers config the tower is built from (saved with each run)."""
    if cfg.path is not None:
        return AutoConfig.from_pretrained(resolve_path(cfg.path), local_files_only=True, trust_remote_code=False)
    params = dict(cfg.config or {})
    model_type = params.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.text.config is not a valid {model_type} config: {e}") from None


class HFTextTower(nn.Module):
    """Encodes tokenised text and pools token states to one vector per text.

    Shape: input_ids, attention_mask (B, L) -> features (B, hidden_size).

    Args:
        cfg: the recipe's text section.
        hf_config: build from this config with random init instead of reading ``cfg.path``
            (used when a checkpoint supplies the weights).
    """

    def __init__(self, cfg: TextConfig, hf_config: PretrainedConfig | None = None):
        super().__init__()
        if hf_config is None and cfg.path is not None:
            self.transformer = AutoModel.from_pretrained(
                resolve_path(cfg.path), local_files_only=True, trust_remote_code=False
            )
        else:
            self.transformer = AutoModel.from_config(hf_config or text_model_config(cfg))
        # The model's own pooler (e.g. BERT's tanh head) is unused: drop it so every parameter
        # receives a gradient (DDP requires that) and checkpoints hold only what is trained.
        if isinstance(getattr(self.transformer, "pooler", None), nn.Module):
            self.transformer.pooler = None
        self.pooler = cfg.pooler
        self.num_features = self.transformer.config.hidden_size
        if cfg.grad_checkpointing:
            model = self.transformer
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lock:
            lock_hf(self.transformer, cfg.unlocked_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooler == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
