"""WebDataset shards: a brace pattern, one ``.tar`` (or ``.tar.gz``/``.tgz``), a list file
(``.txt``/``.list``), a folder of ``.tar`` files, or CLIP_benchmark's layout
(``ROOT/<split>/{0..n-1}.tar`` with ``nshards.txt``). Training streams them; several specs in a
list are several sources (``data.weights`` mixes them)."""

from __future__ import annotations

import functools
from pathlib import Path

from ...errors import ConfigError
from ...recipe import DataConfig
from ..evalsets import EvalDataset, WdsImages
from ..pairs import ItemMaker
from ..stream import Shard
from ..wds import SHARD_ERRORS, WdsFields, expand_shards, iter_tar_records, record_uid
from .base import DataSource, OpenOptions, StreamParts, TrainSpec, read_lines, register_source


def _benchmark_split(p: Path, split: str) -> list[str] | None:
    """The shards of CLIP_benchmark's layout (``ROOT/<split>/nshards.txt``), None for another folder."""
    nshards = p / split / "nshards.txt"
    if not p.is_dir() or any(p.glob("*.tar")) or not any(p.glob("*/nshards.txt")):
        return None
    if not nshards.is_file():
        splits = sorted(d.name for d in p.iterdir() if (d / "nshards.txt").is_file())
        raise ConfigError(f"{p}: no {split}/nshards.txt; splits with shards: {', '.join(splits) or 'none'}")
    return [str(p / split / f"{i}.tar") for i in range(int(nshards.read_text().strip()))]


def shard_lists(train, split: str = "train", key: str = "data.train") -> list[list[str]]:
    """Shard lists, one per source spec (a pattern, list file, shard, folder of shards or benchmark folder)."""
    specs = train if isinstance(train, list) else [train]
    out = []
    for spec in specs:
        p = Path(spec)
        shards = _benchmark_split(p, split)
        if shards is None:
            shards = sorted(str(f) for f in p.glob("*.tar")) if p.is_dir() else expand_shards(spec)
        if not shards:
            raise ConfigError(f"{key}: no shards in {spec!r}")
        out.append(shards)
    return out


class _Decode:
    def __init__(self, fields: WdsFields, make: ItemMaker):
        self.fields, self.make = fields, make

    def __call__(self, record, shard: Shard, n: int, epoch: int):
        key, members = record
        image, captions, label, image2 = self.fields(members)
        if image is None or (self.fields.image2_key and image2 is None):
            return None, "missing_image"
        return self.make(image, captions, label, record_uid(shard.name, key, shard.source), epoch, image2)


def _read(path: str, skip: int):
    return iter_tar_records(path, skip)


@register_source("wds")
class WdsSource(DataSource):
    about = (
        "WebDataset shards: a brace pattern, .tar/.tar.gz file, list file (.txt/.list), folder of .tar, "
        "or CLIP_benchmark's layout (<split>/nshards.txt)"
    )
    detect_order = 10
    lists = True

    def detect(self, path: str) -> bool:
        p = Path(path)
        if "{" in path or p.suffix.lower() in (".tar", ".txt", ".list") or p.name.lower().endswith((".tar.gz", ".tgz")):
            return True
        return p.is_dir() and (
            (p / "dataset_type.txt").is_file() or any(p.glob("*/nshards.txt")) or any(p.glob("*.tar"))
        )

    def streams(self, data: DataConfig) -> bool:
        return True

    def train_stream(self, data: DataConfig, spec: TrainSpec) -> StreamParts:
        sources = shard_lists(data.train, data.split)
        if data.weights is not None and len(data.weights) != len(sources):
            raise ConfigError(f"data.weights has {len(data.weights)} values for {len(sources)} sources in data.train")
        caption_key = (data.caption_key or "txt") if spec.need_caption else data.caption_key
        fields = WdsFields(data.image_key, caption_key, data.label_key, data.image2_key)
        for shards in sources:
            fields.check(shards)
        shards = [
            Shard(path, functools.partial(_read, path), source=i, errors=SHARD_ERRORS)
            for i, paths in enumerate(sources)
            for path in paths
        ]
        decode = _Decode(fields, ItemMaker(spec.transform, spec.aug_seed, spec.seed, spec.need_caption))
        what = f"{len(shards)} shards" + (f" in {len(sources)} sources" if len(sources) > 1 else "")
        return StreamParts(shards, decode, what)

    def open(self, path: str, options: OpenOptions) -> EvalDataset:
        p = Path(path)
        if options.group_key is not None:
            raise ConfigError(f"{path}: group_key is a column of CSV/JSONL or Hugging Face data, not of shards")
        reader = functools.partial(
            WdsImages,
            caption_key=options.caption_key or "txt",
            max_items=options.max_items,
            image_key=options.image_key,
            label_key=(options.label_key or "cls") if options.labels else None,
        )
        shards = _benchmark_split(p, options.split)
        if shards is None:  # shards of img2dataset / `mmcl data convert`: no class names or templates
            (shards,) = shard_lists(path, options.split, "dataset")
            return EvalDataset("", self.name, reader(shards))
        dataset_type = (read_lines(p / "dataset_type.txt") or ["classification"])[0].lower()
        return EvalDataset(
            "",
            self.name,
            reader(shards),
            read_lines(p / "classnames.txt"),
            read_lines(p / "zeroshot_classification_templates.txt"),
            dataset_type,
        )
