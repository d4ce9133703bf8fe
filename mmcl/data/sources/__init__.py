"""Data sources: one registry of on-disk formats, read by training and by evaluation.

========== ========================================================= ===========================
source     path (``data.train``, ``eval.datasets[].path``, ``--dataset``) training reads it
========== ========================================================= ===========================
csv/jsonl  a CSV/TSV/JSONL file (image path + caption columns)        map-style, exact resume
folder     ``ROOT/<class>/<image>``; caption from ``caption_template`` map-style, exact resume
hf         ``save_to_disk`` folder, parquet/arrow file(s) or folder   map-style, exact resume;
                                                                     ``streaming: true`` streams
wds        shards: brace pattern, list file, ``.tar``/``.tar.gz``,    streamed (see
           folder of ``.tar``, CLIP_benchmark's layout, or a list of  :mod:`mmcl.data.stream`)
           those (several sources; ``weights`` mixes them)
========== ========================================================= ===========================

``auto`` (the default everywhere) asks each source in turn whether it claims the path
(:func:`detect_source`). A new format is one :class:`DataSource` subclass registered with
:func:`register_source`; training (:func:`build_train_data`), evaluation (:func:`open_dataset`),
``mmcl eval --dataset-kind`` and ``mmcl data inspect --kind`` then read it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import ConfigError
from ...recipe import DataConfig
from ..benchmarks import build_benchmark, is_benchmark
from ..collate import ImageTextCollate
from ..evalsets import EvalDataset
from ..samplers import ResumableBatchSampler, create_sampler
from ..stream import StreamDataset
from . import folder, hf, table, wds  # noqa: F401 - registers the built-in sources
from .base import (
    SOURCES,
    DataSource,
    OpenOptions,
    StreamParts,
    TrainSpec,
    check_source,
    detect_source,
    get_source,
    list_sources,
    register_source,
)

log = logging.getLogger("mmcl")


def _identity(batch):
    return batch


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


def _check_options(data: DataConfig, source: DataSource, stream: bool) -> None:
    """The ``data`` options that only some sources (or only map-style reading) support."""
    kind = source.name
    if isinstance(data.train, list) and not source.lists:
        raise ConfigError(f"data.train: a list of sources is only supported for WebDataset shards, not {kind!r}")
    if not stream and (data.resampled or data.weights):
        raise ConfigError(f"data.resampled and data.weights apply to WebDataset shards (source wds), not {kind!r}")
    if data.sampler != "random" and stream:
        raise ConfigError(
            f"data.sampler: {data.sampler} reorders a map-style source (csv, jsonl, folder, hf); {data.train} is "
            f"read as a stream ({kind}{', streaming' if kind == 'hf' else ''}); valid choice for streams: random"
        )
    if data.negatives_key is not None and not source.negatives:
        valid = ", ".join(n for n in list_sources() if get_source(n).negatives)
        raise ConfigError(
            f"data.negatives_key (hard-negative captions) is read from CSV/JSONL files; {data.train} is a {kind} "
            f"source; valid sources for it: {valid}"
        )


def _map_data(data: DataConfig, kind: str, dataset, collate, rank: int, world_size: int, seed: int, what: str):
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
    description = f"{len(dataset)} {what} ({kind}) from {data.train}"
    return TrainData(kind, dataset, loader, sampler, num_samples=len(dataset), description=description)


def _stream_data(data: DataConfig, kind: str, parts: StreamParts, collate, rank: int, world_size: int, seed: int):
    readers = world_size * max(1, data.num_workers)
    notes = []
    if not data.resampled and len(parts.shards) < readers:
        notes.append(
            f"only {len(parts.shards)} shards for {readers} readers (processes x workers): "
            f"{readers - len(parts.shards)} readers get no data; use more shards or fewer workers"
        )
    dataset = StreamDataset(
        parts.shards,
        parts.decode,
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
    description = f"{parts.what} ({kind}, {mode}) from {data.train}"
    return TrainData(kind, dataset, loader, None, epoch_batches, data.epoch_size, description, notes)


def build_train_data(
    data: DataConfig,
    transform,
    tokenize,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    need_caption: bool = True,
) -> TrainData:
    """Dataset, sampler and loader for ``data`` on process ``rank`` of ``world_size``: the source
    ``data.source`` names (or the one that claims ``data.train``) gives its training reader."""
    kind = detect_source(data.train) if data.source == "auto" else data.source
    source = get_source(kind)
    stream = source.streams(data)
    _check_options(data, source, stream)
    spec = TrainSpec(transform, need_caption, seed if data.augment.enabled else None, seed)
    collate = ImageTextCollate(tokenize)
    if stream:
        return _stream_data(data, kind, source.train_stream(data, spec), collate, rank, world_size, seed)
    # image-only training reads images, not (image, caption) pairs
    what = "pairs" if need_caption else "images"
    return _map_data(data, kind, source.train_map(data, spec), collate, rank, world_size, seed, what)


def open_dataset(
    path: str,
    kind: str = "auto",
    split: str = "test",
    image_key: str | None = None,
    caption_key: str | None = None,
    label_key: str | None = None,
    separator: str | None = None,
    image_root: str | None = None,
    max_items: int | None = None,
    name: str | None = None,
    group_key: str | None = None,
    labels: bool = True,
    language: str = "en",
    download: bool = False,
) -> EvalDataset:
    """Open a local evaluation dataset through the source ``kind`` names (``auto``: the one that
    claims ``path``); items are one per image (see :mod:`mmcl.data.evalsets`).

    ``kind`` may also name a benchmark (:func:`mmcl.data.benchmarks.list_benchmarks`: ``cifar10``,
    ``mscoco_captions``, ``wds_<name>``, ...): ``path`` is then its data root, read in the
    benchmark's own layout, and the column keys do not apply.

    Args:
        split: for data with splits (a Hugging Face dataset dict, CLIP_benchmark's WebDataset layout,
            a benchmark's splits).
        image_key, caption_key, label_key: columns (members); None takes the source's defaults.
        labels: False reads no label column (every label -1).
        group_key: a column whose equal values mean the same thing (attribute-level recall).
        language, download: for a benchmark: the caption language (multilingual retrieval), and
            whether to fetch missing files first.
    """
    path = str(path)
    if is_benchmark(kind):
        if group_key is not None:
            raise ConfigError(f"{kind}: group_key is a column of CSV/JSONL or Hugging Face data, not of a benchmark")
        data = build_benchmark(kind, path, split, language, download, max_items, labels)
        if not isinstance(data, EvalDataset):
            raise ConfigError(f"{kind} is a compositional benchmark: the compositional task reads it")
        data.name = name or data.name
        return data
    kind = detect_source(path, "dataset") if kind == "auto" else kind
    source = get_source(kind, "dataset kind")
    options = OpenOptions(split, image_key, caption_key, label_key, separator, image_root, max_items, labels, group_key)
    if group_key is not None and not source.group_keys:
        raise ConfigError(f"{path}: group_key is a column of CSV/JSONL or Hugging Face data, not of a {kind} source")
    data = source.open(path, options)
    p = Path(path)
    data.name = name or (p.stem if p.suffix else p.name)
    return data


def describe_sources() -> str:
    """One line per registered source: its name and what its path holds."""
    return "\n".join(f"{n:<8} {get_source(n).about}" for n in list_sources())


__all__ = [
    "SOURCES",
    "DataSource",
    "OpenOptions",
    "StreamParts",
    "TrainData",
    "TrainSpec",
    "build_train_data",
    "check_source",
    "describe_sources",
    "detect_source",
    "get_source",
    "list_sources",
    "open_dataset",
    "register_source",
]
