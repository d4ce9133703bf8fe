"""Hugging Face ``datasets``: a ``save_to_disk`` folder, parquet/arrow files (or a folder of them),
read map-style (exact resume) or, with ``data.streaming``, as a stream of shards."""

from __future__ import annotations

import functools
from pathlib import Path

from ...errors import ConfigError
from ...recipe import DataConfig
from ..evalsets import EvalDataset, HFImages
from ..hf import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    HFPairs,
    first_present,
    is_saved_dataset,
    load_hf,
    resolve_columns,
    row_record,
)
from ..pairs import ItemMaker
from ..stream import Shard
from .base import DataSource, OpenOptions, StreamParts, TrainSpec, register_source

DATA_FILES = (".parquet", ".arrow")


def _read(ds, num_shards: int, index: int, skip: int):
    """Rows of one shard. Iterated in batches: plain iteration inside a dataloader worker would
    split the (single-shard) part again among the workers and leave all but one empty."""
    part = ds.shard(num_shards, index)
    part = part.skip(skip) if skip else part
    for rows in part.iter(batch_size=64):
        columns = list(rows)
        for values in zip(*(rows[c] for c in columns)):
            yield dict(zip(columns, values))


class _Decode:
    def __init__(self, keys, make: ItemMaker):
        self.keys, self.make = keys, make

    def __call__(self, row, shard: Shard, n: int, epoch: int):
        record = row_record(row, *self.keys)
        # a stable id: shard number and row number inside it
        return self.make(*record[:3], int(shard.name.split(":")[1]) * 2**40 + n, epoch, *record[3:])


def _no_image_decoding(ds, column: str):
    """Read an ``Image`` column as bytes, so a corrupt image is skipped instead of raising."""
    import datasets

    feature = ds.features.get(column) if ds.features else None
    if isinstance(feature, datasets.Image) and feature.decode:
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


@register_source("hf")
class HFSource(DataSource):
    about = (
        "a Hugging Face dataset: save_to_disk folder, parquet/arrow file(s) or a folder of them "
        "(named explicitly: an imagefolder directory)"
    )
    detect_order = 30
    group_keys = True

    def detect(self, path: str) -> bool:
        p = Path(path)
        if p.suffix.lower() in DATA_FILES:
            return True
        return p.is_dir() and (is_saved_dataset(p) or any(f.suffix in DATA_FILES for f in p.iterdir()))

    def streams(self, data: DataConfig) -> bool:
        return data.streaming

    def train_map(self, data: DataConfig, spec: TrainSpec):
        ds = load_hf(data.train, data.split)
        keys = resolve_columns(ds.column_names, "data.train", data.image_key, None, None, False, data.image2_key)
        for column in (keys[0], keys[3]):
            ds = _no_image_decoding(ds, column) if column else ds
        return HFPairs(
            ds,
            spec.transform,
            data.image_key,
            data.caption_key,
            data.label_key,
            spec.aug_seed,
            spec.seed,
            need_caption=spec.need_caption,
            image2_key=data.image2_key,
        )

    def train_stream(self, data: DataConfig, spec: TrainSpec) -> StreamParts:
        ds = load_hf(data.train, data.split, streaming=True)
        columns = list(ds.features) if ds.features else list(next(iter(ds)).keys())
        keys = resolve_columns(
            columns, "data.train", data.image_key, data.caption_key, data.label_key, spec.need_caption, data.image2_key
        )
        for column in (keys[0], keys[3]):
            ds = _no_image_decoding(ds, column) if column else ds
        n = ds.num_shards
        shards = [Shard(f"hf:{i}", functools.partial(_read, ds, n, i), errors=(OSError, ValueError)) for i in range(n)]
        decode = _Decode(keys, ItemMaker(spec.transform, spec.aug_seed, spec.seed, spec.need_caption))
        return StreamParts(shards, decode, f"{n} shards (streaming hf)")

    def open(self, path: str, options: OpenOptions) -> EvalDataset:
        ds = load_hf(path, options.split)
        columns = ds.column_names
        image_key = options.image_key or first_present(columns, IMAGE_COLUMNS)
        if image_key is None:
            raise ConfigError(
                f"{path}: no image column found; pass the image key; available columns: {', '.join(columns)}"
            )
        caption_key = options.caption_key or first_present(columns, CAPTION_COLUMNS)
        label_key = (options.label_key or first_present(columns, LABEL_COLUMNS)) if options.labels else None
        source = HFImages(ds, image_key, caption_key, label_key, options.max_items, options.group_key)
        return EvalDataset("", self.name, source, source.classnames, None)
