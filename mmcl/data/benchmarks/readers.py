"""The readers the benchmark builders share: images named by path (labelled, captioned, or cropped
to a box), images held in an array (CIFAR, STL-10, MNIST, SVHN, PCam), and class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evalsets import EvalDataset, _open_image, _Source
from ..images import IMAGE_EXTS
from . import Missing, Request


class ListImages(_Source, torch.utils.data.Dataset):
    """Images named by path, each with a label (-1: none), captions and an optional crop box
    ``(left, top, right, bottom)``. A file that is not there is a ``missing_image`` skip."""

    def __init__(self, files, labels=None, captions=None, boxes=None, max_items=None):
        n = len(files) if max_items is None else min(max_items, len(files))
        self.files = [Path(f) for f in files[:n]]
        self.labels = list(labels[:n]) if labels is not None else [-1] * n
        self.captions = list(captions[:n]) if captions is not None else [[] for _ in range(n)]
        self.boxes = list(boxes[:n]) if boxes is not None else None

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        if not self.files[i].is_file():
            return None, "missing_image"
        image = _open_image(self.files[i])
        if image is not None and self.boxes is not None and self.boxes[i] is not None:
            image = image.crop(tuple(self.boxes[i]))
        return self._item(image, self.captions[i], self.labels[i])


class ArrayImages(_Source, torch.utils.data.Dataset):
    """Images held in a uint8 array, ``(N, H, W, C)`` or ``(N, H, W)`` (grey), with labels."""

    def __init__(self, pixels: np.ndarray, labels, max_items=None):
        n = len(pixels) if max_items is None else min(max_items, len(pixels))
        self.pixels, self.labels = pixels[:n], [int(x) for x in labels[:n]]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self._item(Image.fromarray(np.ascontiguousarray(self.pixels[i])).convert("RGB"), [], self.labels[i])


def images_in(folder: Path, exts=IMAGE_EXTS + (".ppm",)) -> list[Path]:
    """The image files of ``folder`` and its subfolders, sorted."""
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in exts and f.is_file())


def class_folders(root: Path, expected: int | None = None) -> list[str]:
    """The class subfolders of ``root`` in sorted order (torchvision's ``ImageFolder`` order; empty
    folders count). ``expected``: the number of classes the benchmark has; fewer is an error,
    since the labels would not match the class names."""
    if not root.is_dir():
        raise Missing(str(root))
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if expected is not None and len(names) != expected:
        raise Missing(f"{root}/<{expected} class folders> (found {len(names)})")
    return names


def folder_dataset(root: Path, req: Request, names: list[str], index: dict[str, int] | None = None) -> EvalDataset:
    """Images of ``root/<class>/...`` labelled by ``index`` (default: position in ``names``)."""
    index = index if index is not None else {n: i for i, n in enumerate(names)}
    files, labels = [], []
    for name in names:
        for f in images_in(root / name):
            files.append(f)
            labels.append(index[name])
    return labelled(files, labels, req)


def labelled(files, labels, req: Request, classnames=None, boxes=None) -> EvalDataset:
    """A classification :class:`EvalDataset` of files and labels (labels dropped with ``req.labels``)."""
    if not req.labels:
        labels = [-1] * len(files)
    return EvalDataset(
        "",
        "benchmark",
        ListImages(files, labels, boxes=boxes, max_items=req.max_items),
        classnames,
        None,
        "classification",
    )


def arrays(pixels, labels, req: Request, classnames=None) -> EvalDataset:
    if not req.labels:
        labels = [-1] * len(labels)
    return EvalDataset("", "benchmark", ArrayImages(pixels, labels, req.max_items), classnames, None, "classification")


def captioned(files, captions, req: Request) -> EvalDataset:
    """A retrieval :class:`EvalDataset`: each image with its captions (in the benchmark's order)."""
    return EvalDataset(
        "", "benchmark", ListImages(files, captions=captions, max_items=req.max_items), None, None, "retrieval"
    )


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
