"""Paired image-text datasets from CSV/TSV (open_clip's ``filepath``/``title`` layout) or JSONL."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError

# Reasons a sample can be skipped; counted per reason.
SKIP_REASONS = ("missing_image", "corrupt_image", "empty_caption")


def read_table(path: str | os.PathLike, separator: str = ",") -> list[dict]:
    """Rows of a CSV/TSV (by ``separator``) or JSONL (by extension ``.jsonl``) file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = []
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        return rows
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=separator))


def check_columns(rows: list[dict], path, required: dict[str, str]) -> None:
    """Fail at start-up, naming the available columns, when a configured column is absent."""
    available = list(rows[0].keys()) if rows else []
    for option, column in required.items():
        if column not in available:
            names = ", ".join(map(str, available))
            raise ConfigError(f"{path}: column {column!r} (set by {option}) not found; available columns: {names}")


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch, Python and NumPy RNGs seeded by ``seed``; restore them afterwards
    (transforms draw from all three: timm's crops use ``random``, torchvision's flips use torch)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _caption_list(value, separator: str | None) -> list[str]:
    """The non-empty captions of one cell: a list (JSONL), or a string split on ``separator``."""
    if value is None:
        return []
    values = value if isinstance(value, list) else str(value).split(separator) if separator else [str(value)]
    return [v.strip() for v in map(str, values) if v is not None and v.strip()]


class PairedImageTextDataset(torch.utils.data.Dataset):
    """Map-style dataset of (image, caption) pairs, opened lazily.

    A missing or corrupt image, or an empty caption, does not stop a run: ``__getitem__`` returns
    None with the reason, the collate drops it, and the trainer counts it (see ``SKIP_REASONS``).

    Items: {"image": Tensor(3, H, W), "text": str, "index": int, "label": int}.

    Several captions per image: a JSONL caption may be a list, and with ``caption_separator`` a
    CSV cell holds several (``"a dog|a puppy"``). Each time an item is read one of them is
    picked, at random but seeded by (caption_seed, epoch, index): every caption is used over the
    epochs, and the choice is the same whatever the worker count and after a resume.

    Args:
        seed: with a random transform, seeds it per item from (seed, epoch, index), so augmentation
            is the same whatever the worker count and after a resume. None: the transform is
            deterministic and runs unseeded (faster).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable,
        image_key: str = "filepath",
        caption_key: str = "title",
        separator: str = ",",
        image_root: str | None = None,
        label_key: str | None = None,
        seed: int | None = None,
        max_items: int | None = None,
        caption_separator: str | None = None,
        caption_seed: int = 0,
    ):
        self.path = Path(path)
        rows = read_table(self.path, separator)
        if not rows:
            raise ConfigError(f"{self.path}: no rows")
        required = {"image_key": image_key, "caption_key": caption_key}
        if label_key is not None:
            required["label_key"] = label_key
        check_columns(rows, self.path, required)
        rows = rows[:max_items] if max_items is not None else rows
        self.root = Path(image_root) if image_root else self.path.parent
        self.images = [str(r[image_key]) for r in rows]
        self.caption_lists = [_caption_list(r[caption_key], caption_separator) for r in rows]
        self.captions = [c[0] if c else "" for c in self.caption_lists]  # the first caption of each row
        self.labels = [int(r[label_key]) for r in rows] if label_key is not None else None
        self.rows = rows
        self.transform = transform
        self.seed = seed
        self.caption_seed = caption_seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _item_seed(self, index: int) -> int:
        # Random augmentation depends only on (seed, epoch, index): identical across worker counts
        # and after a resume.
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def _caption(self, index: int) -> str:
        options = self.caption_lists[index]
        if len(options) <= 1:
            return options[0] if options else ""
        seed = np.random.SeedSequence([self.caption_seed, self.epoch, index, 1]).generate_state(1)[0]
        return options[random.Random(int(seed)).randrange(len(options))]

    def __getitem__(self, index: int) -> dict | tuple[None, str]:
        caption = self._caption(index)
        if not caption:
            return None, "empty_caption"
        path = self.root / self.images[index]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except FileNotFoundError:
            return None, "missing_image"
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None, "corrupt_image"
        if self.seed is None:
            pixels = self.transform(image)
        else:
            with seeded(self._item_seed(index)):
                pixels = self.transform(image)
        item = {"image": pixels, "text": caption, "index": index}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item
