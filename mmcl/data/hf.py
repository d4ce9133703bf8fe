"""Hugging Face ``datasets`` sources: ``save_to_disk`` folders, parquet/arrow files, the
``imagefolder`` builder, map-style or streaming. Everything is read from local paths."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .pairs import ItemMaker, MapPairs, caption_list

# the columns read when none is named, first present wins (labels: evaluation only; training
# reads a label column only when data.label_key names it)
IMAGE_COLUMNS = ("image", "img", "jpg", "png")
CAPTION_COLUMNS = ("caption", "captions", "text", "title", "sentences")
LABEL_COLUMNS = ("label", "labels", "fine_label")


def first_present(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _data_files(p: Path) -> list[str]:
    if p.is_dir():
        return sorted(str(f) for f in p.iterdir() if f.suffix in (".parquet", ".arrow"))
    return [str(p)]


def is_saved_dataset(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def load_hf(path: str, split: str = "train", streaming: bool = False):
    """A ``datasets.Dataset`` (or ``IterableDataset`` when ``streaming``) from a local path."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"Hugging Face dataset {path!r} not found")
    files = _data_files(p)
    if p.suffix in (".parquet", ".arrow") or (p.is_dir() and files and not is_saved_dataset(p)):
        ds = datasets.load_dataset(Path(files[0]).suffix[1:], data_files=files, split="train", streaming=streaming)
    elif is_saved_dataset(p):
        ds = datasets.load_from_disk(str(p))
    else:
        ds = datasets.load_dataset("imagefolder", data_dir=str(p), streaming=streaming)
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise ConfigError(f"{path}: no split {split!r}; available splits: {', '.join(ds)}")
        ds = ds[split]
    if streaming and isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset(num_shards=max(1, min(64, len(ds) // 64)))
    return ds


def resolve_columns(
    columns: list[str], where: str, image_key, caption_key, label_key, need_caption=True, image2_key=None
):
    """``(image, caption, label, image2)`` column names: the configured ones, or the usual ones; a
    configured name that is absent fails here, listing the columns."""
    for option, value in (
        ("image_key", image_key),
        ("caption_key", caption_key),
        ("label_key", label_key),
        ("image2_key", image2_key),
    ):
        if value is not None and value not in columns:
            raise ConfigError(
                f"{where}: column {value!r} (set by data.{option}) not found; available columns: {', '.join(columns)}"
            )
    image_key = image_key or first_present(columns, IMAGE_COLUMNS)
    if image_key is None:
        raise ConfigError(f"{where}: no image column; set data.image_key; available columns: {', '.join(columns)}")
    caption_key = caption_key or first_present(columns, CAPTION_COLUMNS)
    if caption_key is None and need_caption:
        raise ConfigError(f"{where}: no caption column; set data.caption_key; available columns: {', '.join(columns)}")
    return image_key, caption_key, label_key, image2_key


def row_image(value):
    """An ``Image`` feature (PIL), ``{"bytes", "path"}``, raw bytes or a path -> something
    :func:`mmcl.data.images.load_image` or the item maker accepts."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    return value


class HFPairs(MapPairs):
    """Map-style training pairs from a ``datasets.Dataset``; exact resume like CSV/JSONL."""

    def __init__(
        self,
        ds,
        transform: Callable,
        image_key=None,
        caption_key=None,
        label_key=None,
        seed: int | None = None,
        caption_seed: int = 0,
        where: str = "data.train",
        need_caption=True,
        image2_key=None,
    ):
        self.ds = ds
        self.keys = resolve_columns(ds.column_names, where, image_key, caption_key, label_key, need_caption, image2_key)
        self.make = ItemMaker(transform, seed, caption_seed, need_caption=need_caption)

    def __len__(self) -> int:
        return len(self.ds)

    def record(self, index: int):
        return row_record(self.ds[index], *self.keys)


def row_record(row: dict, image_key, caption_key, label_key, image2_key=None):
    """``(image, captions, label[, image2])`` of one row."""
    captions = caption_list(row[caption_key]) if caption_key else []
    label = int(row[label_key]) if label_key and row[label_key] is not None else None
    if image2_key is not None:
        return row_image(row[image_key]), captions, label, row_image(row[image2_key])
    return row_image(row[image_key]), captions, label
