"""Evaluation datasets from local files, one interface for every format.

Every reader yields one item per image: ``{"image": pixels, "captions": [str, ...], "label": int}``
(label -1 when unknown; with a group column also ``"group"`` and ``"caption_groups"``), or
``(None, reason)`` for a sample that cannot be read, which the encoder skips and counts. The data
sources (:mod:`mmcl.data.sources`) pick the reader for a path; :func:`~mmcl.data.sources.open_dataset`
opens one. Readers by source:

- ``csv`` / ``jsonl``: one row per (image, caption); rows sharing an image path are several captions
  of one image, and a JSONL caption may also be a list. ``classnames.txt`` / ``templates.txt`` next
  to the file are picked up (the layout ``mmcl data make-synthetic`` writes). A bad row (bytes that
  are not UTF-8, a line that is not JSON, no image cell, a label that is not an integer, a caption
  cell over ``MAX_CAPTION_CHARS``) is skipped whole and counted once, as in training; an image keeps the
  captions of its good rows, and one left without any is left out of retrieval as ``empty_caption``.
- ``folder``: ``ROOT/<class>/<image>`` (labelled, class names from folder names) or a flat folder.
- ``wds``: CLIP_benchmark's WebDataset layout, ``ROOT/<split>/{0..n-1}.tar`` with ``nshards.txt``,
  plus ``classnames.txt``, ``zeroshot_classification_templates.txt`` and ``dataset_type.txt``; or
  any shard file / brace pattern / list file / folder of shards (img2dataset's ``.jpg``/``.txt``/``.cls``
  members).
- ``hf``: a Hugging Face ``datasets`` folder (``save_to_disk``) or parquet/arrow files, with a
  column mapping.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..errors import ConfigError
from .csv_jsonl import check_columns, read_table, row_problem
from .folder import list_image_folder
from .images import BAD_IMAGE_ERRORS, load_image
from .wds import SHARD_ERRORS, iter_tar_records


def _open_image(source) -> Image.Image | None:
    return load_image(source)[0]


class _Source:
    """Holds the transform, set by the encoder to the model's own ``preprocess``."""

    transform: Callable | None = None

    def _item(self, image: Image.Image | None, captions: list[str], label: int, missing: bool = False):
        if image is None:
            return None, "missing_image" if missing else "corrupt_image"
        pixels = self.transform(image) if self.transform is not None else image
        return {"image": pixels, "captions": captions, "label": label}


class TableImages(_Source, torch.utils.data.Dataset):
    """CSV/TSV/JSONL rows grouped by image path.

    Items ``0 .. len(images) - 1`` are the images; after them come one ``(None, reason)`` item per
    bad row (``bad_rows``), so whoever iterates the dataset counts each bad row once, by reason,
    like any other skipped sample. A bad row is skipped whole: its caption is not one of its
    image's, and an image named only by bad rows is not among ``images`` (a caption-level reason
    for a row whose bytes cannot be trusted would be a guess). Retrieval stays well defined: every
    image that is scored has at least one caption (see :func:`~mmcl.eval.encode.encode_dataset`).
    """

    def __init__(
        self,
        path,
        image_key="filepath",
        caption_key="title",
        label_key=None,
        separator=",",
        image_root=None,
        max_items=None,
        group_key=None,
    ):
        path = Path(path)
        rows = read_table(path, separator, keep_bad=True)
        if not rows:
            raise ConfigError(f"{path}: no rows")
        required = {"image_key": image_key}
        for option, column in (("caption_key", caption_key), ("label_key", label_key), ("group_key", group_key)):
            if column is not None:
                required[option] = column
        check_columns(rows, path, required)
        self.root = Path(image_root) if image_root else path.parent
        order: dict[str, int] = {}
        self.images, self.captions, self.labels = [], [], []
        # with group_key: the group of each image (its first row's) and of each of its captions (their row's)
        self.groups: list[str] | None = [] if group_key is not None else None
        self.caption_groups: list[list[str]] | None = [] if group_key is not None else None
        self.bad_rows: list[str] = []  # reasons, one per bad row within the first max_items images
        for r in rows:
            full = max_items is not None and len(order) >= max_items
            reason = row_problem(r, caption_key, image_key)
            label = -1
            if reason is None and label_key is not None and r[label_key] not in ("", None):
                try:
                    label = int(r[label_key])
                except (TypeError, ValueError):
                    reason = "bad_row"
            if reason is not None:
                if not full:
                    self.bad_rows.append(reason)
                continue
            key = str(r[image_key])
            if key not in order:
                if full:
                    continue
                order[key] = len(self.images)
                self.images.append(key)
                self.captions.append([])
                self.labels.append(label)
                if self.groups is not None:
                    self.groups.append(str(r[group_key]))
                    self.caption_groups.append([])
            value = r[caption_key] if caption_key is not None else None
            values = value if isinstance(value, list) else [value]
            captions = [str(v).strip() for v in values if v is not None and str(v).strip()]
            self.captions[order[key]].extend(captions)
            if self.caption_groups is not None:
                self.caption_groups[order[key]].extend([str(r[group_key])] * len(captions))

    def __len__(self):
        return len(self.images) + len(self.bad_rows)

    def __getitem__(self, i):
        if i >= len(self.images):
            return None, self.bad_rows[i - len(self.images)]
        path = self.root / self.images[i]
        if not path.is_file():
            return None, "missing_image"
        item = self._item(_open_image(path), self.captions[i], self.labels[i])
        if self.groups is not None and isinstance(item, dict):
            item.update(group=self.groups[i], caption_groups=self.caption_groups[i])
        return item


class FolderImages(_Source, torch.utils.data.Dataset):
    """``ROOT/<class>/<image>``; a flat folder of images gives label -1."""

    def __init__(self, root, max_items=None):
        self.files, self.labels, self.classnames = list_image_folder(root)
        if max_items is not None:
            self.files, self.labels = self.files[:max_items], self.labels[:max_items]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self._item(_open_image(self.files[i]), [], self.labels[i])


class WdsImages(_Source, torch.utils.data.IterableDataset):
    """Samples of WebDataset shards, read with ``tarfile``; shards are split across workers.

    A sample is the members sharing a key (the name up to the first dot). Its image is the first
    of ``image_key`` (extensions separated by ``;``; default webp/png/jpg/jpeg); captions come from
    ``caption_key`` (``txt``: one per line), else ``json`` ("caption"/"text"); its label from
    ``label_key`` (``cls``; None: no labels). A shard that cannot be read yields one
    ``unreadable_shard`` skip.
    """

    def __init__(self, shards: list[str], caption_key: str = "txt", max_items=None, image_key=None, label_key="cls"):
        self.shards, self.caption_key, self.max_items = shards, caption_key, max_items
        self.image_exts = tuple(image_key.split(";")) if image_key else ("webp", "png", "jpg", "jpeg")
        self.label_key = label_key

    def _decode(self, fields: dict):
        raw = next((fields[e] for e in self.image_exts if e in fields), None)
        if raw is None:
            return None, "missing_image"
        captions: list[str] = []
        if self.caption_key in fields:
            text = fields[self.caption_key].decode("utf-8", errors="replace")
            captions = [c.strip() for c in text.splitlines() if c.strip()]
        elif "json" in fields:
            meta = json.loads(fields["json"])
            value = meta.get("caption", meta.get("text"))
            captions = value if isinstance(value, list) else [value] if value else []
        label = int(fields[self.label_key].decode().strip()) if self.label_key in fields else -1
        return self._item(_open_image(io.BytesIO(raw)), captions, label)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        shards = self.shards if info is None else self.shards[info.id :: info.num_workers]
        count = 0
        for shard in shards:
            try:
                for _, fields in iter_tar_records(shard):
                    if self.max_items is not None and count >= self.max_items:
                        return
                    count += 1
                    yield self._decode(fields)
            except SHARD_ERRORS:
                yield None, "unreadable_shard"


class HFImages(_Source, torch.utils.data.Dataset):
    """Rows of a Hugging Face dataset; images as ``Image`` features, bytes or file paths."""

    def __init__(
        self, dataset, image_column="image", caption_column=None, label_column=None, max_items=None, group_column=None
    ):
        check_columns(
            [dict.fromkeys(dataset.column_names)],
            "dataset",
            {
                k: v
                for k, v in {
                    "image_key": image_column,
                    "caption_key": caption_column,
                    "label_key": label_column,
                    "group_key": group_column,
                }.items()
                if v is not None
            },
        )
        self.ds = dataset if max_items is None else dataset.select(range(min(max_items, len(dataset))))
        self.image_column, self.caption_column, self.label_column = image_column, caption_column, label_column
        self.group_column = group_column
        feature = dataset.features.get(label_column) if label_column else None
        self.classnames = list(feature.names) if hasattr(feature, "names") else None

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        try:
            row = self.ds[i]
        except BAD_IMAGE_ERRORS:
            return None, "corrupt_image"
        image = row[self.image_column]
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        if isinstance(image, bytes):
            image = io.BytesIO(image)
        if not isinstance(image, Image.Image):
            image = _open_image(image)
        else:
            image = image.convert("RGB")
        captions = []
        if self.caption_column is not None:
            value = row[self.caption_column]
            captions = [str(v).strip() for v in (value if isinstance(value, list) else [value]) if str(v).strip()]
        label = int(row[self.label_column]) if self.label_column is not None else -1
        item = self._item(image, captions, label)
        if self.group_column is not None and isinstance(item, dict):
            group = str(row[self.group_column])
            item.update(group=group, caption_groups=[group] * len(captions))
        return item


@dataclass
class EvalDataset:
    """A dataset plus what zero-shot classification needs from it."""

    name: str
    kind: str
    source: _Source
    classnames: list[str] | None = None
    templates: list[str] | None = None
    dataset_type: str | None = None  # "classification" or "retrieval" where the data says so
    info: dict = field(default_factory=dict)


def __getattr__(name: str):
    # opening moved to the source registry (mmcl.data.sources), which imports this module
    if name == "open_dataset":
        from .sources import open_dataset

        return open_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
