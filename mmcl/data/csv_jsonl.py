"""Paired image-text datasets from CSV/TSV (open_clip's ``filepath``/``title`` layout) or JSONL."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .pairs import ItemMaker, MapPairs, caption_list


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


class PairedImageTextDataset(MapPairs):
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
        image2_key: str | None = None,
        need_caption: bool = True,
        negatives_key: str | None = None,
        negatives_fraction: float = 1.0,
    ):
        self.path = Path(path)
        rows = read_table(self.path, separator)
        if not rows:
            raise ConfigError(f"{self.path}: no rows")
        required = {"image_key": image_key}
        for option, column in (
            ("caption_key", caption_key if need_caption else None),
            ("label_key", label_key),
            ("image2_key", image2_key),
            ("negatives_key", negatives_key),
        ):
            if column is not None:
                required[option] = column
        check_columns(rows, self.path, required)
        rows = rows[:max_items] if max_items is not None else rows
        self.root = Path(image_root) if image_root else self.path.parent
        self.images = [str(r[image_key]) for r in rows]
        self.images2 = [str(r[image2_key]) for r in rows] if image2_key is not None else None
        self.caption_lists = [caption_list(r.get(caption_key), caption_separator) for r in rows]
        self.captions = [c[0] if c else "" for c in self.caption_lists]  # the first caption of each row
        self.labels = [int(r[label_key]) for r in rows] if label_key is not None else None
        self.rows = rows
        self.make = ItemMaker(transform, seed, caption_seed, need_caption)
        # hard-negative captions per row (NegCLIP-style training): a JSONL list, or a CSV cell split
        # on caption_separator; each read picks one, seeded like the caption
        self.negatives_fraction = negatives_fraction
        self.negative_lists = (
            [caption_list(r.get(negatives_key), caption_separator) for r in rows] if negatives_key else None
        )

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        if self.negative_lists is None or not isinstance(item, dict):
            return item
        negatives = self.negative_lists[index]
        if not negatives:
            return None, "no_negative"
        carries = self.make.carries_negative(self.negatives_fraction, index, self.epoch)
        item["negative"] = self.make.negative(negatives, index, self.epoch) if carries else None
        return item

    def __len__(self) -> int:
        return len(self.images)

    def record(self, index: int):
        label = None if self.labels is None else self.labels[index]
        if self.images2 is not None:
            return self.root / self.images[index], self.caption_lists[index], label, self.root / self.images2[index]
        return self.root / self.images[index], self.caption_lists[index], label
