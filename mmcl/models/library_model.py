"""What the wrappers of other libraries' CLIP models share (open_clip in ``models/openclip/backend.py``,
Hugging Face in ``models/hf_clip.py``): the library's model is ``.model`` (its state dict, under
``model.``, is what is saved) and it carries its own ``logit_scale`` (as its log) and, for SigLIP-style
models, ``logit_bias``. A subclass gives ``encode_image``, ``encode_text`` and ``towers``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..recipe import ModelConfig
from .dual_encoder import DualEncoderOutput
from .pretrained import PretrainedMixin


class LibraryClipModel(PretrainedMixin, nn.Module):
    """mmcl's model interface (``forward`` -> :class:`DualEncoderOutput`, ``clamp_logit_scale``,
    ``no_weight_decay_names``) over a library's CLIP model held as ``.model``."""

    def __init__(self, cfg: ModelConfig, model: nn.Module):
        super().__init__()
        self.cfg, self.model = cfg, model

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return getattr(self.model, "logit_bias", None)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, input_ids: torch.Tensor, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def towers(self) -> list[nn.Module]:
        """The image and text towers (sharded block by block under ``train.sharding: fsdp``)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask=None) -> DualEncoderOutput:
        bias = self.logit_bias  # scalars whatever shape the library stores them in (HF keeps shape (1,))
        return DualEncoderOutput(
            image_embeds=self.encode_image(images),
            text_embeds=self.encode_text(input_ids, attention_mask),
            logit_scale=self.logit_scale.exp().reshape(()),
            logit_bias=None if bias is None else bias.reshape(()),
        )

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, math.log(self.cfg.logit_scale_max))

    def no_weight_decay_names(self) -> set[str]:
        return {"model.logit_scale", "model.logit_bias"}
