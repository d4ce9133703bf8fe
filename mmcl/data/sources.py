"""The training data a recipe's ``data`` section describes: one builder for every source.

Sources (``data.source``; ``auto`` tells them apart by the path):

========== ========================================================= ===========================
source     ``data.train``                                            reading
========== ========================================================= ===========================
csv/jsonl  a CSV/TSV/JSONL file (image path + caption columns)        map-style, exact resume
folder     ``ROOT/<class>/<image>``; caption from ``caption_template`` map-style, exact resume
hf         ``save_to_disk`` folder, parquet/arrow file(s) or folder,  map-style, exact resume;
           ``imagefolder`` directory                                 ``streaming: true`` streams
wds        shards: brace pattern, list file, folder of ``.tar``, or  streamed (see
           a list of those (several sources; ``weights`` mixes them)  :mod:`mmcl.data.stream`)
========== ========================================================= ===========================
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..recipe import DataConfig
from .collate import ImageTextCollate
from .csv_jsonl import PairedImageTextDataset
from .folder import FolderPairs
from .hf import HFPairs, load_hf, resolve_columns, row_record
from .pairs import ItemMaker
from .samplers import ResumableBatchSampler, create_sampler
from .stream import Shard, StreamDataset
from .wds import SHARD_ERRORS, WdsFields, expand_shards, iter_tar_records, record_uid

log = logging.getLogger("mmcl")

SOURCES = ("auto", "csv", "jsonl", "folder", "hf", "wds")


def _identity(batch):
    return batch


def detect_source(train) -> str:
    """The source kind of ``data.train`` (a path, pattern, or list of them)."""
    if isinstance(train, list):
        return "wds"
    p = Path(train)
    if "{" in train or p.suffix == ".tar" or p.suffix in (".txt", ".list"):
        return "wds"
    if p.suffix in (".csv", ".tsv"):
        return "csv"
    if p.suffix == ".jsonl":
        return "jsonl"
    if p.suffix in (".parquet", ".arrow"):
        return "hf"
    if p.is_dir():
        from .hf import is_saved_dataset

        if is_saved_dataset(p) or any(p.glob("*.parquet")) or any(p.glob("*.arrow")):
            return "hf"
        if any(p.glob("*.tar")):
            return "wds"
        return "folder"
    raise ConfigError(
        f"data.train: cannot tell the format of {train!r} (not found, or an unknown extension); "
        f"set data.source to one of: {', '.join(SOURCES[1:])}"
    )


def wds_shards(train) -> list[list[str]]:
    """Shard lists, one per source."""
    specs = train if isinstance(train, list) else [train]
    out = []
    for spec in specs:
        p = Path(spec)
        shards = sorted(str(f) for f in p.glob("*.tar")) if p.is_dir() else expand_shards(spec)
        if not shards:
            raise ConfigError(f"data.train: no shards in {spec!r}")
        out.append(shards)
    return out


@dataclass
class TrainData:
    """A training source and its loader. Map-style sources have a ``sampler``; streams do not."""

    kind: str
    dataset: torch.utils.data.Dataset
    loader: torch.utils.data.DataLoader
    sampler: ResumableBatchSampler | None = None
    epoch_batches: int | None = None  # per rank; None: until the data runs out
    num_samples: int | None = None
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def streaming(self) -> bool:
        return self.sampler is None

    def start_epoch(self, epoch: int, batch_in_epoch: int, progress: dict, sample_offset: int = 0) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, batch_in_epoch, sample_offset)
            self.dataset.set_epoch(epoch)
        else:
            self.dataset.set_epoch(epoch, progress)


def _wds_read(path: str, skip: int):
    return iter_tar_records(path, skip)


class _WdsDecode:
    def __init__(self, fields: WdsFields, make: ItemMaker):
        self.fields, self.make = fields, make

    def __call__(self, record, shard: Shard, n: int, epoch: int):
        key, members = record
        image, captions, label, image2 = self.fields(members)
        if image is None or (self.fields.image2_key and image2 is None):
            return None, "missing_image"
        return self.make(image, captions, label, record_uid(shard.name, key, shard.source), epoch, image2)


def _hf_read(ds, num_shards: int, index: int, skip: int):
    """Rows of one shard. Iterated in batches: plain iteration inside a dataloader worker would
    split the (single-shard) part again among the workers and leave all but one empty."""
    part = ds.shard(num_shards, index)
    part = part.skip(skip) if skip else part
    for rows in part.iter(batch_size=64):
        columns = list(rows)
        for values in zip(*(rows[c] for c in columns)):
            yield dict(zip(columns, values))


class _HFDecode:
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


def build_train_data(
    data: DataConfig,
    transform,
    tokenize,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    need_caption: bool = True,
) -> TrainData:
    """Dataset, sampler and loader for ``data`` on process ``rank`` of ``world_size``."""
    kind = detect_source(data.train) if data.source == "auto" else data.source
    aug_seed = seed if data.augment.enabled else None
    collate = ImageTextCollate(tokenize)
    if isinstance(data.train, list) and kind != "wds":
        raise ConfigError(f"data.train: a list of sources is only supported for WebDataset shards, not {kind!r}")
    if kind != "wds" and (data.resampled or data.weights):
        raise ConfigError(f"data.resampled and data.weights apply to WebDataset shards (source wds), not {kind!r}")

    map_style = kind in ("csv", "jsonl", "folder") or (kind == "hf" and not data.streaming)
    if data.sampler != "random" and not map_style:
        raise ConfigError(
            f"data.sampler: {data.sampler} reorders a map-style source (csv, jsonl, folder, hf); {data.train} is "
            f"read as a stream ({kind}{', streaming' if kind == 'hf' else ''}); valid choice for streams: random"
        )
    if data.negatives_key is not None and kind not in ("csv", "jsonl"):
        raise ConfigError(
            f"data.negatives_key (hard-negative captions) is read from CSV/JSONL files; {data.train} is a {kind} "
            "source; valid sources for it: csv, jsonl"
        )
    if map_style:
        if kind == "folder":
            dataset = FolderPairs(data.train, transform, data.caption_template, aug_seed, need_caption)
        elif kind == "hf":
            ds = load_hf(data.train, data.split)
            keys = resolve_columns(ds.column_names, "data.train", data.image_key, None, None, False, data.image2_key)
            for column in (keys[0], keys[3]):
                ds = _no_image_decoding(ds, column) if column else ds
            dataset = HFPairs(
                ds,
                transform,
                data.image_key,
                data.caption_key,
                data.label_key,
                aug_seed,
                seed,
                need_caption=need_caption,
                image2_key=data.image2_key,
            )
        else:
            p = Path(data.train)
            if not p.is_file():
                raise ConfigError(
                    f"data.source is {kind!r} but data.train={data.train!r} is not a file; "
                    f"set data.source to auto or one of: {', '.join(SOURCES[1:])}"
                )
            dataset = PairedImageTextDataset(
                data.train,
                transform=transform,
                image_key=data.image_key or "filepath",
                caption_key=data.caption_key or "title",
                separator="\t" if p.suffix == ".tsv" and data.separator == "," else data.separator,
                image_root=data.image_root,
                label_key=data.label_key,
                seed=aug_seed,
                caption_separator=data.caption_separator,
                caption_seed=seed,
                image2_key=data.image2_key,
                need_caption=need_caption,
                negatives_key=data.negatives_key,
                negatives_fraction=data.negatives_fraction,
            )
        sampler = create_sampler(data, dataset, rank, world_size, seed)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=data.num_workers,
            # Its own generator: a new iterator must not draw from the global RNG (dropout's stream),
            # or a resumed run would drift by one draw. Augmentation is seeded per item anyway.
            generator=torch.Generator().manual_seed(seed),
        )
        return TrainData(
            kind,
            dataset,
            loader,
            sampler,
            num_samples=len(dataset),
            description=f"{len(dataset)} pairs ({kind}) from {data.train}",
        )

    if kind == "wds":
        sources = wds_shards(data.train)
        if data.weights is not None and len(data.weights) != len(sources):
            raise ConfigError(f"data.weights has {len(data.weights)} values for {len(sources)} sources in data.train")
        caption_key = (data.caption_key or "txt") if need_caption else data.caption_key
        fields = WdsFields(data.image_key, caption_key, data.label_key, data.image2_key)
        for shards in sources:
            fields.check(shards)
        shards = [
            Shard(path, functools.partial(_wds_read, path), source=i, errors=SHARD_ERRORS)
            for i, paths in enumerate(sources)
            for path in paths
        ]
        decode = _WdsDecode(fields, ItemMaker(transform, aug_seed, seed, need_caption))
        what = f"{len(shards)} shards" + (f" in {len(sources)} sources" if len(sources) > 1 else "")
    elif kind == "hf":
        ds = load_hf(data.train, data.split, streaming=True)
        columns = list(ds.features) if ds.features else list(next(iter(ds)).keys())
        keys = resolve_columns(
            columns, "data.train", data.image_key, data.caption_key, data.label_key, need_caption, data.image2_key
        )
        for column in (keys[0], keys[3]):
            ds = _no_image_decoding(ds, column) if column else ds
        n = ds.num_shards
        shards = [
            Shard(f"hf:{i}", functools.partial(_hf_read, ds, n, i), errors=(OSError, ValueError)) for i in range(n)
        ]
        decode = _HFDecode(keys, ItemMaker(transform, aug_seed, seed, need_caption))
        what = f"{n} shards (streaming hf)"
    else:
        raise ConfigError(f"data.source: unknown source {kind!r}; valid choices: {', '.join(SOURCES)}")

    readers = world_size * max(1, data.num_workers)
    notes = []
    if not data.resampled and len(shards) < readers:
        notes.append(
            f"only {len(shards)} shards for {readers} readers (processes x workers): {readers - len(shards)} "
            "readers get no data; use more shards or fewer workers"
        )
    dataset = StreamDataset(
        shards,
        decode,
        collate,
        data.batch_size,
        rank,
        world_size,
        seed=seed,
        shuffle_block=data.shuffle_block,
        resampled=data.resampled,
        weights=data.weights,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=_identity, num_workers=data.num_workers)
    epoch_batches = None
    if data.resampled:
        epoch_batches = max(1, data.epoch_size // (data.batch_size * world_size))
    mode = f"resampled, {data.epoch_size} samples per epoch" if data.resampled else "finite epochs"
    return TrainData(
        kind, dataset, loader, None, epoch_batches, data.epoch_size, f"{what} ({kind}, {mode}) from {data.train}", notes
    )
