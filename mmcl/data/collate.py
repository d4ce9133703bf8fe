"""Collate: drop skipped samples (counting why), stack images, tokenise captions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch


class ImageTextCollate:
    """Batch of dataset items -> {"images", "input_ids", "attention_mask", "index", "skipped"}.

    Items that are ``(None, reason)`` are dropped and counted in ``batch["skipped"]``.
    """

    def __init__(self, tokenize: Callable[[list[str]], dict]):
        self.tokenize = tokenize

    def __call__(self, items: list) -> dict:
        skipped = Counter(item[1] for item in items if isinstance(item, tuple))
        items = [item for item in items if isinstance(item, dict)]
        batch: dict = {"skipped": dict(skipped), "size": len(items)}
        if not items:
            return batch
        batch["images"] = torch.stack([it["image"] for it in items])
        batch.update(self.tokenize([it["text"] for it in items]))
        batch["index"] = torch.tensor([it["index"] for it in items])
        if "label" in items[0]:
            batch["label"] = torch.tensor([it["label"] for it in items])
        return batch
