"""Retrieval benchmarks (images with captions) in their own files: COCO and Flickr with
CLIP_benchmark's Karpathy test splits, and the multilingual ones: Crossmodal-3600 (36 languages),
Multi30k (en, de, fr, cs) and XTD10's multilingual COCO captions; Flickr30k/8k also in Chinese
(CLIP_benchmark's ``*_zh.txt`` annotations)."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

from . import Missing, Request, need, register_benchmark
from .readers import captioned, read_lines

RETRIEVAL_ANNOTATIONS = "https://github.com/mehdidc/retrieval_annotations/releases/download/1.0.0/"
XM3600_LANGUAGES = (
    "ar bn cs da de el en es fa fi fil fr he hi hr hu id it ja ko mi nl no pl pt quz ro ru sv sw te th tr uk vi zh"
).split()
XTD10_LANGUAGES = ("en", "de", "es", "fr", "it", "ja", "ko", "pl", "ru", "tr", "zh")
MULTI30K_LANGUAGES = ("en", "de", "fr", "cs")


def _coco_download(root: Path, req: Request) -> None:
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    folder = "train2014" if req.split == "train" else "val2014"
    if not (root / folder).is_dir():
        download_and_extract_archive(f"http://images.cocodataset.org/zips/{folder}.zip", str(root))
    name = f"coco_{req.split}_karpathy.json"
    if not (root / name).is_file():
        download_url(RETRIEVAL_ANNOTATIONS + name, str(root))


@register_benchmark(
    "mscoco_captions",
    task="retrieval",
    layout="coco_<split>_karpathy.json (COCO caption format) + val2014/ (train2014/ for train) (CLIP_benchmark's "
    "Karpathy splits: 5,000 test images, 25,010 captions)",
    splits=("test", "val", "train"),
    download=_coco_download,
)
def mscoco_captions(root: Path, req: Request):
    folder = "train2014" if req.split == "train" else "val2014"
    need(root, f"coco_{req.split}_karpathy.json", folder)
    coco = json.loads((root / f"coco_{req.split}_karpathy.json").read_text())
    file_of = {im["id"]: im["file_name"] for im in coco["images"]}
    captions = defaultdict(list)
    for ann in coco["annotations"]:
        captions[ann["image_id"]].append(ann["caption"].strip())
    ids = sorted(file_of)  # torchvision's CocoCaptions order
    return captioned([root / folder / file_of[i] for i in ids], [captions[i] for i in ids], req)


def _flickr(name: str):
    def build(root: Path, req: Request):
        suffix = "karpathy" if req.language == "en" else req.language
        ann = root / f"{name}_{req.split}_{suffix}.txt"
        if not ann.is_file():
            raise Missing(str(ann))
        captions = defaultdict(list)
        for line in ann.read_text(encoding="utf-8").splitlines()[1:]:  # a header line first
            image, sep, caption = line.strip().partition(".jpg,")
            if sep:
                captions[image + ".jpg"].append(caption.strip())
        images = list(captions)
        return captioned([root / i for i in images], [captions[i] for i in images], req)

    return build


def _flickr_download(name: str):
    def download(root: Path, req: Request) -> None:
        from torchvision.datasets.utils import download_url

        suffix = "karpathy" if req.language == "en" else req.language
        if not (root / f"{name}_{req.split}_{suffix}.txt").is_file():
            download_url(RETRIEVAL_ANNOTATIONS + f"{name}_{req.split}_{suffix}.txt", str(root))
        if not any(root.glob("*.jpg")):
            raise Missing(f"{root}/*.jpg ({name}'s images are on Kaggle; the annotations were downloaded)")

    return download


for _name, _images in (("flickr30k", "1,000 test images, 5,000 captions"), ("flickr8k", "1,000 test images")):
    register_benchmark(
        _name,
        task="retrieval",
        layout=f"{_name}_<split>_karpathy.txt (CLIP_benchmark's Karpathy split, {_images}; {_name}_<split>_zh.txt "
        "for --language zh) + the images, *.jpg",
        splits=("test", "val", "train"),
        languages=("en", "zh"),
        download=_flickr_download(_name),
        source=f"https://www.kaggle.com/datasets (the {_name} images)",
    )(_flickr(_name))


@register_benchmark(
    "crossmodal3600",
    task="retrieval",
    layout="captions.jsonl + images/<image key>.jpg, or xm3600/{captions.jsonl,images/} (Crossmodal-3600; the "
    "first caption of each image in the language, as CLIP_benchmark)",
    languages=tuple(XM3600_LANGUAGES),
    aliases=("xm3600",),
    source="https://google.github.io/crossmodal-3600/",
)
def crossmodal3600(root: Path, req: Request):
    base = root / "xm3600" if (root / "xm3600" / "captions.jsonl").is_file() else root
    need(base, "captions.jsonl", "images")
    files, captions = [], []
    for line in (base / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        texts = row.get(req.language, {}).get("caption") or []
        files.append(base / "images" / f"{row['image/key']}.jpg")
        captions.append([texts[0].strip()] if texts else [])
    return captioned(files, captions, req)


MULTI30K_SPLITS = (
    "test",
    "test_2016_flickr",
    "test_2017_flickr",
    "test_2018_flickr",
    "test_2017_mscoco",
    "val",
    "train",
)


@register_benchmark(
    "multi30k",
    task="retrieval",
    layout="data/task1/{image_splits/<split>.txt,raw/<split>.<lang>[.gz]} (the multi30k/dataset repository; "
    "test is test_2016_flickr) + images/ or flickr30k-images/ holding the Flickr30k images",
    splits=MULTI30K_SPLITS,
    languages=MULTI30K_LANGUAGES,
    source="https://github.com/multi30k/dataset (captions) and the Flickr30k images",
)
def multi30k(root: Path, req: Request):
    split = "test_2016_flickr" if req.split == "test" else req.split
    task1 = root if (root / "image_splits").is_dir() else root / "data" / "task1"
    need(task1, f"image_splits/{split}.txt")
    raw = task1 / "raw" / f"{split}.{req.language}"
    if not raw.is_file() and raw.with_name(raw.name + ".gz").is_file():
        text = gzip.decompress(raw.with_name(raw.name + ".gz").read_bytes()).decode("utf-8")
    elif raw.is_file():
        text = raw.read_text(encoding="utf-8")
    else:
        raise Missing(f"{raw}[.gz]")
    images = read_lines(task1 / "image_splits" / f"{split}.txt")
    lines = [t.strip() for t in text.splitlines()]
    if len(lines) != len(images):
        raise Missing(f"{raw}: one caption per image of {split}.txt ({len(images)} images, {len(lines)} lines)")
    folder = next((root / d for d in ("images", "flickr30k-images") if (root / d).is_dir()), None)
    if folder is None:
        raise Missing(f"{root}/images (the Flickr30k images)")
    return captioned([folder / i for i in images], [[t] if t else [] for t in lines], req)


@register_benchmark(
    "multilingual_mscoco_captions",
    task="retrieval",
    layout="test_image_names.txt + test_1kcaptions_<lang>.txt + images/ (XTD10's 1,000 COCO images; Japanese "
    "captions are test_1kcaptions_jp.txt)",
    languages=XTD10_LANGUAGES,
    aliases=("xtd10",),
    source="https://github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10",
)
def multilingual_mscoco(root: Path, req: Request):
    code = "jp" if req.language == "ja" else req.language
    need(root, "test_image_names.txt", f"test_1kcaptions_{code}.txt", "images")
    images = read_lines(root / "test_image_names.txt")
    lines = [t.strip() for t in (root / f"test_1kcaptions_{code}.txt").read_text(encoding="utf-8").splitlines()]
    return captioned([root / "images" / i for i in images], [[t] if t else [] for t in lines[: len(images)]], req)
