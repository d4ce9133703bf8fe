"""The image-text dual encoder: two towers, two projection heads, a learnable logit scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..recipe import ModelConfig
from .heads import projection_head
from .pretrained import PretrainedMixin
from .text import HFTextTower
from .vision import TimmVisionTower


@dataclass
class DualEncoderOutput:
    """What a forward pass returns, whatever the options.

    image_embeds, text_embeds: (B, embed_dim), L2-normalised.
    logit_scale: scalar, already exponentiated (multiply cosine similarities by it).
    logit_bias: scalar or None (used by sigmoid losses).
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logit_scale: torch.Tensor
    logit_bias: torch.Tensor | None = None


class DualEncoder(PretrainedMixin, nn.Module):
    """CLIP-style model: ``encode_image``/``encode_text`` give normalised embeddings.

    The logit scale is stored as its log, initialised at ``log(cfg.logit_scale_init)`` and
    clamped to ``[0, log(cfg.logit_scale_max)]`` by :meth:`clamp_logit_scale` after each step.
    With ``cfg.logit_bias_init`` set, a learnable logit bias is added (sigmoid losses need it).
    ``save_pretrained(dir)`` / ``DualEncoder.from_pretrained(dir)`` / ``push_to_hub(repo_id)``: see
    :mod:`mmcl.interop`.
    """

    def __init__(self, cfg: ModelConfig, vision: TimmVisionTower, text: HFTextTower):
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.text = text
        self.image_proj = projection_head(vision.num_features, cfg.embed_dim, cfg.head)
        self.text_proj = projection_head(text.num_features, cfg.embed_dim, cfg.head)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.logit_bias = (
            None if cfg.logit_bias_init is None else nn.Parameter(torch.tensor(float(cfg.logit_bias_init)))
        )

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.image_proj(self.vision(images))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        x = self.text_proj(self.text(input_ids, attention_mask))
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DualEncoderOutput:
        return DualEncoderOutput(
            image_embeds=self.encode_image(images),
            text_embeds=self.encode_text(input_ids, attention_mask),
            logit_scale=self.logit_scale.exp(),
            logit_bias=self.logit_bias,
        )

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, math.log(self.cfg.logit_scale_max))

    def no_weight_decay_names(self) -> set[str]:
        return {"logit_scale", "logit_bias"} | {f"vision.{n}" for n in self.vision.no_weight_decay_names()}
