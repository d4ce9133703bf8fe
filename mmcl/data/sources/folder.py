"""Image folders: ``ROOT/<class>/<image>`` (labelled; training captions from ``data.caption_template``)
or a flat folder of images. The fallback for any folder no other source claims."""

from __future__ import annotations

from pathlib import Path

from ...recipe import DataConfig
from ..evalsets import EvalDataset, FolderImages
from ..folder import FolderPairs
from .base import DataSource, OpenOptions, TrainSpec, read_lines, register_source


@register_source("folder")
class FolderSource(DataSource):
    about = "ROOT/<class>/<image> (labelled, class names from the folder names) or a flat image folder"
    detect_order = 100  # any folder: asked last

    def detect(self, path: str) -> bool:
        return Path(path).is_dir()

    def train_map(self, data: DataConfig, spec: TrainSpec):
        return FolderPairs(data.train, spec.transform, data.caption_template, spec.aug_seed, spec.need_caption)

    def open(self, path: str, options: OpenOptions) -> EvalDataset:
        p = Path(path)
        source = FolderImages(p, options.max_items)
        if not options.labels:
            source.labels = [-1] * len(source.labels)
        return EvalDataset(
            "",
            self.name,
            source,
            read_lines(p / "classnames.txt") or source.classnames,
            read_lines(p / "templates.txt"),
            "classification",
        )
