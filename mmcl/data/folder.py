"""Image folders: ``ROOT/<class>/<image>`` (labelled) or a flat folder of images (unlabelled)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .images import IMAGE_EXTS
from .pairs import ItemMaker, MapPairs


def list_image_folder(root) -> tuple[list[Path], list[int], list[str] | None]:
    """``(files, labels, classnames)``. Class subfolders give labels 0..C-1 in sorted name order
    and class names with ``_`` read as spaces; a flat folder gives label -1 and no class names."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    if classes:
        for c, name in enumerate(classes):
            for f in sorted((root / name).rglob("*")):
                if f.suffix.lower() in IMAGE_EXTS:
                    files.append(f)
                    labels.append(c)
        classnames = [c.replace("_", " ") for c in classes]
    else:
        files = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        labels, classnames = [-1] * len(files), None
    if not files:
        raise ConfigError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in it or its class subfolders")
    return files, labels, classnames


class FolderPairs(MapPairs):
    """Training pairs from a labelled image folder: the caption is ``template`` filled with the
    class name (``"a photo of a {c}."``); the label is the class index (for SupCon and probes).
    With ``need_caption=False`` a flat, unlabelled folder works too (image-only training)."""

    def __init__(
        self,
        root,
        transform: Callable,
        template: str = "a photo of a {c}.",
        seed: int | None = None,
        need_caption: bool = True,
    ):
        self.files, self.labels, self.classnames = list_image_folder(root)
        if need_caption and self.classnames is None:
            raise ConfigError(
                f"{root}: a flat folder has no class names to caption its images with; image-text training "
                "from a folder needs ROOT/<class>/<image> subfolders (or use a CSV/JSONL with captions)"
            )
        if "{c}" not in template:
            raise ConfigError(f"data.caption_template must contain {{c}} (the class name), got {template!r}")
        self.template = template
        self.make = ItemMaker(transform, seed, need_caption=need_caption)

    def __len__(self) -> int:
        return len(self.files)

    def record(self, index: int):
        label = self.labels[index]
        captions = [self.template.format(c=self.classnames[label])] if label >= 0 else []
        return self.files[index], captions, (label if label >= 0 else None)
