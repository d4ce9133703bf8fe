"""One protocol for every model the evaluators take: normalised ``encode_image``/``encode_text``
plus the model's own ``preprocess``. mmcl models today; open_clip and HF CLIP adapters follow the
same shape."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class MmclAdapter:
    """Wraps a :class:`~mmcl.models.DualEncoder` with its tokenizer and eval transform."""

    def __init__(self, model, tokenize: Callable[[list[str]], dict], preprocess: Callable, device: torch.device):
        self.model = model
        self.tokenize = tokenize
        self.preprocess = preprocess
        self.device = device

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images.to(self.device)).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        return F.normalize(self.model.encode_text(**batch).float(), dim=-1)
