"""``mmcl data inspect``: what a dataset holds, before training on it.

Counts images, captions, labels and unreadable samples (per reason, bad rows of a CSV/TSV/JSONL file
included: ``bad_encoding``, ``bad_row``, ``caption_too_long``); caption length and image size
statistics; and a PNG grid of sample images with their captions. Works on every format the
evaluators read (CSV/TSV/JSONL, image folders, WebDataset shards, Hugging Face datasets).
"""

from __future__ import annotations

import textwrap
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tqdm.auto import tqdm


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {
        "min": float(a.min()),
        "mean": round(float(a.mean()), 2),
        "median": float(np.median(a)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def inspect_dataset(
    path: str,
    kind: str = "auto",
    max_items: int | None = None,
    grid: str | None = None,
    grid_size: int = 16,
    progress: bool = True,
    **keys,
) -> dict:
    """Statistics of a dataset; with ``grid``, also write a PNG of the first ``grid_size`` samples."""
    from .sources import open_dataset

    data = open_dataset(path, kind=kind, split=keys.pop("split", "train"), max_items=max_items, **keys)
    data.source.transform = None  # PIL images
    skipped, words, chars, widths, heights, labels = Counter(), [], [], [], [], Counter()
    n_images, n_captions, samples = 0, 0, []
    total = len(data.source) if hasattr(data.source, "__len__") else None
    for item in tqdm(data.source, total=total, desc="inspect", unit="img", disable=not progress):
        if isinstance(item, tuple):
            skipped[item[1]] += 1
            continue
        n_images += 1
        image, captions = item["image"], item["captions"]
        widths.append(image.width)
        heights.append(image.height)
        n_captions += len(captions)
        for c in captions:
            words.append(len(c.split()))
            chars.append(len(c))
        if item["label"] >= 0:
            labels[item["label"]] += 1
        if grid and len(samples) < grid_size:
            samples.append((image.copy(), captions[0] if captions else _label_text(data, item["label"])))
    if grid and not samples:
        raise ValueError(f"{path}: no readable images to draw")
    report = {
        "path": str(path),
        "kind": data.kind,
        "images": n_images,
        "captions": n_captions,
        "skipped": dict(sorted(skipped.items())),
        "caption_words": _stats(words),
        "caption_chars": _stats(chars),
        "image_width": _stats(widths),
        "image_height": _stats(heights),
        "labels": {"classes": len(labels), "largest": max(labels.values()), "smallest": min(labels.values())}
        if labels
        else None,
    }
    if grid:
        sample_grid(samples).save(grid)
        report["grid"] = str(grid)
    return report


def _label_text(data, label: int) -> str:
    if label >= 0 and data.classnames and label < len(data.classnames):
        return data.classnames[label]
    return ""


def sample_grid(samples: list[tuple[Image.Image, str]], tile: int = 160, columns: int = 4) -> Image.Image:
    """Images in a grid, each with its caption wrapped underneath."""
    font = ImageFont.load_default()
    text_h = 52
    rows = -(-len(samples) // columns)
    canvas = Image.new("RGB", (columns * tile, rows * (tile + text_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for n, (image, caption) in enumerate(samples):
        x, y = (n % columns) * tile, (n // columns) * (tile + text_h)
        thumb = ImageOps.contain(image.convert("RGB"), (tile - 8, tile - 8))
        canvas.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        lines = textwrap.wrap(caption, width=26)[:4]
        for i, line in enumerate(lines):
            draw.text((x + 4, y + tile + i * 12), line, fill="black", font=font)
    return canvas


def format_report(report: dict) -> str:
    def fmt(s: dict) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in s.items()) if s else "-"

    lines = [
        f"{report['path']} ({report['kind']})",
        f"  images: {report['images']}, captions: {report['captions']}",
        f"  skipped: {', '.join(f'{k}={v}' for k, v in report['skipped'].items()) or 'none'}",
        f"  caption words: {fmt(report['caption_words'])}",
        f"  caption chars: {fmt(report['caption_chars'])}",
        f"  image width: {fmt(report['image_width'])}",
        f"  image height: {fmt(report['image_height'])}",
    ]
    if report["labels"]:
        lab = report["labels"]
        lines.append(f"  labels: {lab['classes']} classes, {lab['smallest']}..{lab['largest']} images per class")
    if report.get("grid"):
        lines.append(f"  sample grid: {report['grid']}")
    return "\n".join(lines)
