"""Turning one raw record (an image source, its captions, a label) into a training item.

Every training source (CSV/JSONL, image folders, Hugging Face datasets, WebDataset shards) reads
records its own way and hands them to :class:`ItemMaker`, so skipping, caption choice and seeded
augmentation behave the same everywhere:

- an item is ``{"image": Tensor(3, H, W), "text": str, "index": int[, "label": int]}``;
- a record that cannot be used is ``(None, reason)`` with a reason from ``SKIP_REASONS``; the
  collate drops it and the trainer counts it;
- with several captions, one is picked per read, seeded by (caption_seed, epoch, uid);
- a random transform is seeded by (seed, epoch, uid): augmentation does not depend on the number
  of dataloader workers and is the same after a resume.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .images import load_image

# Reasons a sample can be skipped; counted per reason.
# ``small_batch``: usable samples dropped with a batch that had < 2 usable samples on some rank.
# ``no_negative``: a row without a hard-negative caption when ``data.negatives_key`` asks for one.
# ``bad_encoding``, ``bad_row``, ``caption_too_long``: a CSV/TSV/JSONL row with bytes that are not
# UTF-8, a row that cannot be parsed (or a label that is not an integer), a caption cell over
# ``csv_jsonl.MAX_CAPTION_CHARS`` characters (see :mod:`mmcl.data.csv_jsonl`).
SKIP_REASONS = (
    "missing_image",
    "corrupt_image",
    "empty_caption",
    "unreadable_shard",
    "small_batch",
    "no_negative",
    "bad_encoding",
    "bad_row",
    "caption_too_long",
)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch (CPU), Python and NumPy RNGs seeded by ``seed``; restore them afterwards
    (transforms draw from all three: timm's crops use ``random``, torchvision's flips use torch).

    Uses the CPU generator directly: ``torch.manual_seed`` also queues seeding for every
    accelerator backend, which costs more than decoding a small image."""
    gen = torch.default_generator
    torch_state, py_state, np_state = gen.get_state(), random.getstate(), np.random.get_state()
    gen.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        gen.set_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


def caption_list(value, separator: str | None = None) -> list[str]:
    """The non-empty captions of one cell: a list (JSONL, HF), or a string split on ``separator``."""
    if value is None:
        return []
    values = value if isinstance(value, list) else str(value).split(separator) if separator else [str(value)]
    return [v.strip() for v in map(str, values) if v is not None and v.strip()]


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ItemMaker:
    """Callable: (image source, captions, label, uid, epoch) -> item or ``(None, reason)``.

    Args:
        transform: PIL image -> tensor.
        seed: seeds a random transform per item; None runs the transform unseeded (faster, for
            deterministic transforms).
        caption_seed: seeds the pick among several captions.
        need_caption: False for image-only training (no caption, no ``empty_caption`` skip).
    """

    def __init__(self, transform: Callable, seed: int | None = None, caption_seed: int = 0, need_caption: bool = True):
        self.transform, self.seed, self.caption_seed, self.need_caption = transform, seed, caption_seed, need_caption

    def caption(self, captions: list[str], uid: int, epoch: int) -> str:
        if len(captions) <= 1:
            return captions[0] if captions else ""
        return captions[random.Random(_mix(self.caption_seed, epoch, uid, 1)).randrange(len(captions))]

    def negative(self, negatives: list[str], uid: int, epoch: int) -> str:
        """One of a row's hard-negative captions, seeded like :meth:`caption` (its own stream)."""
        return negatives[random.Random(_mix(self.caption_seed, epoch, uid, 3)).randrange(len(negatives))]

    def carries_negative(self, fraction: float, uid: int, epoch: int) -> bool:
        """Whether a row's hard-negative caption is used in this epoch: always for ``fraction`` 1,
        else with probability ``fraction``, seeded like :meth:`caption` (its own stream)."""
        return fraction >= 1.0 or random.Random(_mix(self.caption_seed, epoch, uid, 4)).random() < fraction

    def _pixels(self, image, uid: int, epoch: int):
        if not isinstance(image, Image.Image):
            image, reason = load_image(image)
            if image is None:
                return None, reason
        else:
            image = image.convert("RGB")
        if self.seed is None:
            return self.transform(image), None
        with seeded(_mix(self.seed, epoch, uid)):
            return self.transform(image), None

    def __call__(self, image, captions: list[str], label: int | None, uid: int, epoch: int, image2=None):
        """``image2``: the paired image of a two-modality record (sketch/photo, RGB/depth, ...), as
        ``item["image2"]``. It is transformed with the same seed as ``image``, so two images of the
        same size get the same random crop and flip and stay in register."""
        text = self.caption(captions, uid, epoch)
        if self.need_caption and not text:
            return None, "empty_caption"
        pixels, reason = self._pixels(image, uid, epoch)
        if pixels is None:
            return None, reason
        item = {"image": pixels, "text": text, "index": uid}
        if image2 is not None:
            pixels2, reason = self._pixels(image2, uid, epoch)
            if pixels2 is None:
                return None, reason
            item["image2"] = pixels2
        if label is not None:
            item["label"] = label
        return item


class MapPairs(torch.utils.data.Dataset):
    """Map-style base: subclasses give ``__len__`` and ``record(index) -> (image, captions, label)``
    or ``(image, captions, label, image2)`` for paired image modalities.

    ``image`` is a path, a file object, bytes wrapped in ``io.BytesIO``, or a PIL image.
    """

    make: ItemMaker
    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def record(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index: int):
        try:
            record = self.record(index)
        except (OSError, ValueError, SyntaxError):  # a row whose stored image cannot be decoded
            return None, "corrupt_image"
        return self.make(*record[:3], index, self.epoch, *record[3:])
