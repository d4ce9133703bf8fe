"""CSV/TSV and JSONL files: one row per (image, caption); open_clip's ``filepath``/``title`` layout."""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ...recipe import DataConfig
from ..csv_jsonl import PairedImageTextDataset, read_table
from ..evalsets import EvalDataset, TableImages
from ..hf import first_present
from .base import DataSource, OpenOptions, TrainSpec, read_lines, register_source

# the columns evaluation takes when none is named, first present wins
IMAGE_COLUMNS = ("filepath", "image", "image_path", "file")
CAPTION_COLUMNS = ("title", "caption", "captions", "text")
LABEL_COLUMNS = ("label",)


class _Table(DataSource):
    suffixes: tuple[str, ...] = ()
    negatives = True
    group_keys = True

    def detect(self, path: str) -> bool:
        return Path(path).suffix.lower() in self.suffixes

    def train_map(self, data: DataConfig, spec: TrainSpec):
        p = Path(data.train)
        if not p.is_file():
            raise ConfigError(
                f"data.source is {self.name!r} but data.train={data.train!r} is not a file; "
                "set data.source to auto or another source (mmcl.list_sources())"
            )
        return PairedImageTextDataset(
            data.train,
            transform=spec.transform,
            image_key=data.image_key or "filepath",
            caption_key=data.caption_key or "title",
            separator="\t" if p.suffix == ".tsv" and data.separator == "," else data.separator,
            image_root=data.image_root,
            label_key=data.label_key,
            seed=spec.aug_seed,
            caption_separator=data.caption_separator,
            caption_seed=spec.seed,
            image2_key=data.image2_key,
            need_caption=spec.need_caption,
            negatives_key=data.negatives_key,
            negatives_fraction=data.negatives_fraction,
        )

    def open(self, path: str, options: OpenOptions) -> EvalDataset:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"dataset file {path!r} not found")
        separator = options.separator or ("\t" if p.suffix == ".tsv" else ",")
        rows = read_table(p, separator)  # bad rows dropped: the columns of the usable ones
        columns = list(rows[0]) if rows else []
        image_key = options.image_key or first_present(columns, IMAGE_COLUMNS) or "filepath"
        caption_key = options.caption_key or first_present(columns, CAPTION_COLUMNS)
        label_key = (options.label_key or first_present(columns, LABEL_COLUMNS)) if options.labels else None
        source = TableImages(
            path,
            image_key,
            caption_key,
            label_key,
            separator,
            options.image_root,
            options.max_items,
            group_key=options.group_key,
        )
        # the layout `mmcl data make-synthetic` writes: class names and templates beside the file
        return EvalDataset(
            "", self.name, source, read_lines(p.parent / "classnames.txt"), read_lines(p.parent / "templates.txt")
        )


@register_source("csv")
class CsvSource(_Table):
    about = "a CSV/TSV file: one row per (image path, caption); rows sharing an image are its captions"
    detect_order = 20
    suffixes = (".csv", ".tsv")


@register_source("jsonl")
class JsonlSource(_Table):
    about = "a JSONL file: one object per image (a caption or a list of them)"
    detect_order = 20
    suffixes = (".jsonl",)
