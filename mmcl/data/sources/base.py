"""The data-source contract and its registry.

A data source is one on-disk format (CSV/TSV, JSONL, image folder, Hugging Face dataset,
WebDataset shards, ...). It says whether a path is in its format (:meth:`DataSource.detect`), and
gives the readers of both users of data:

- training: :meth:`DataSource.train_map` (a map-style dataset: sampler, exact resume) or
  :meth:`DataSource.train_stream` (shards read as a stream), used by
  :func:`~mmcl.data.sources.build_train_data`;
- evaluation: :meth:`DataSource.open` (one item per image, see :mod:`mmcl.data.evalsets`), used by
  :func:`~mmcl.data.sources.open_dataset`.

Sources register by name with :func:`register_source`; ``data.source`` in a recipe,
``eval.datasets[].kind`` and ``--dataset-kind`` name one, and ``auto`` asks each registered source
in ``detect_order`` whether it claims the path (:func:`detect_source`): one detector for training
and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ConfigError
from ...recipe import DataConfig
from ...registry import Registry

SOURCES: Registry[type] = Registry("data source")


@dataclass
class TrainSpec:
    """What the trainer asks of a source's training reader, beside the recipe's ``data`` section."""

    transform: object  # PIL image -> tensor (a MultiView gives two views)
    need_caption: bool = True  # False for image-only training: no caption column, no empty_caption skip
    aug_seed: int | None = None  # seeds augmentation per item; None: a deterministic transform
    seed: int = 0  # the run's seed (caption choice, shuffling)


@dataclass
class StreamParts:
    """A streamed source's shards, the function that turns one raw record into an item, and a
    description of the shards for the run's summary (``"4 shards"``)."""

    shards: list
    decode: object
    what: str


@dataclass
class OpenOptions:
    """How to read an evaluation dataset (:func:`~mmcl.data.sources.open_dataset`).

    Column keys left at None take the source's defaults (CSV ``filepath``/``title``/``label`` and
    their usual alternatives, WebDataset ``jpg;png;...``/``txt``/``cls``, ...)."""

    split: str = "test"
    image_key: str | None = None
    caption_key: str | None = None
    label_key: str | None = None
    separator: str | None = None
    image_root: str | None = None
    max_items: int | None = None
    labels: bool = True  # read the label column; False leaves every label -1 (retrieval-only)
    group_key: str | None = None  # a column naming what each image/caption means (attribute-level recall)


class DataSource:
    """One data format. Subclass it, set the class attributes, implement ``detect`` and the
    readers it supports, and register it: ``@register_source("name")``."""

    name: str = ""
    about: str = ""  # one line: what the path holds (listed by docs and ``--help``)
    detect_order: int = 50  # ``auto`` asks sources in this order (ties by name); the first claim wins
    lists: bool = False  # data.train may be a list of paths (several sources mixed by data.weights)
    negatives: bool = False  # reads hard-negative captions (data.negatives_key)
    group_keys: bool = False  # reads a group_key column (attribute-level recall in retrieval)

    def detect(self, path: str) -> bool:
        """Whether ``path`` (a file, folder or pattern; it may not exist) is in this format."""
        raise NotImplementedError

    def streams(self, data: DataConfig) -> bool:
        """Whether training reads ``data`` as a stream (no sampler; resume by shard positions)."""
        return False

    def train_map(self, data: DataConfig, spec: TrainSpec) -> torch.utils.data.Dataset:
        """A map-style training dataset of ``data.train`` (items as :class:`~mmcl.data.pairs.ItemMaker` makes them)."""
        raise ConfigError(f"data.source {self.name!r} cannot be read map-style")

    def train_stream(self, data: DataConfig, spec: TrainSpec) -> StreamParts:
        """The shards of ``data.train`` and their record decoder."""
        raise ConfigError(f"data.source {self.name!r} cannot be streamed")

    def open(self, path: str, options: OpenOptions):
        """An :class:`~mmcl.data.evalsets.EvalDataset` of ``path`` for evaluation."""
        raise ConfigError(f"the {self.name!r} data source has no evaluation reader")


def register_source(name: str):
    """Class decorator: register a :class:`DataSource` subclass under ``name``."""

    def decorator(cls: type) -> type:
        cls.name = name
        return SOURCES.register(name)(cls)

    return decorator


def list_sources(pattern: str = "*") -> list[str]:
    """Registered data sources (``data.source``, ``eval.datasets[].kind``, ``--dataset-kind``)."""
    return SOURCES.list(pattern)


def get_source(name: str, key: str = "data.source") -> DataSource:
    """The registered source ``name`` (an instance); a :class:`ConfigError` naming ``key`` otherwise."""
    if name not in SOURCES:
        raise ConfigError(f"{key}: {name!r} is not a data source; valid choices: auto, {', '.join(list_sources())}")
    return SOURCES.get(name)()


def check_source(name: str, key: str = "data.source", benchmarks: bool = False) -> None:
    """``auto`` or a registered source name (raises :class:`ConfigError`); with ``benchmarks``, a
    benchmark name too (an evaluation dataset's ``kind``: its ``path`` is the data root)."""
    from ..benchmarks import is_benchmark

    if name == "auto" or (benchmarks and is_benchmark(name)):
        return
    if benchmarks and name not in SOURCES:
        raise ConfigError(
            f"{key}: {name!r} is not a data source nor a benchmark; valid choices: auto, {', '.join(list_sources())}, "
            "or a benchmark (mmcl.data.benchmarks.list_benchmarks())"
        )
    get_source(name, key)


def detect_source(path, key: str = "data.train") -> str:
    """The name of the source that claims ``path`` (a path, pattern, or list of shard specs): the
    sources are asked in ``detect_order``; training and evaluation share this one detector."""
    sources = sorted((get_source(n) for n in list_sources()), key=lambda s: (s.detect_order, s.name))
    if isinstance(path, (list, tuple)):
        claims = [s for s in sources if s.lists and all(s.detect(str(p)) for p in path)]
        if claims:
            return claims[0].name
        raise ConfigError(f"{key}: a list of paths is read by the sources that mix several: {_listing(sources)}")
    for source in sources:
        if source.detect(str(path)):
            return source.name
    raise ConfigError(
        f"{key}: cannot tell the format of {str(path)!r} (not found, or an unknown extension); "
        f"set the source explicitly; valid choices: {', '.join(s.name for s in sources)}"
    )


def _listing(sources) -> str:
    return ", ".join(s.name for s in sources if s.lists) or "none"


def read_lines(path: Path) -> list[str] | None:
    """The non-empty lines of a text file (class names, templates), or None when there is no such file."""
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
