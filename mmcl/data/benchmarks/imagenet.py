"""ImageNet and its distribution shifts, read from the folders their archives unpack to; labels by
WordNet ID, so a folder that is absent (a partial copy) does not shift the others' labels. Class
names are the shipped ImageNet list (``imagenet1k``, in any shipped language), restricted to the
200 classes of ImageNet-A, -R and -O (``info["class_subset"]``); ObjectNet names its 113 classes
in its own mapping files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from . import Missing, Request, need, register_benchmark
from .readers import class_folders, images_in, labelled

WNIDS = Path(__file__).parent / "assets" / "imagenet_wnids.json"
BERKELEY = "https://people.eecs.berkeley.edu/~hendrycks/"


@functools.cache
def wnids(which: str = "imagenet1k") -> tuple[str, ...]:
    """The WordNet IDs of ImageNet-1k's classes in label order, or of a 200-class subset."""
    return tuple(json.loads(WNIDS.read_text())[which])


def _by_wnid(folder: Path, req: Request, which: str = "imagenet1k"):
    """``folder/<wnid>/*`` labelled by the position of the WordNet ID in ``which``."""
    order = {w: i for i, w in enumerate(wnids(which))}
    present = class_folders(folder)
    unknown = [n for n in present if n not in order]
    if unknown:
        raise Missing(f"{folder}/<wnid> folders of {which}'s classes (found {', '.join(unknown[:3])})")
    files, labels = [], []
    for name in present:
        for f in images_in(folder / name):
            files.append(f)
            labels.append(order[name])
    data = labelled(files, labels, req)
    if which != "imagenet1k":
        full = {w: i for i, w in enumerate(wnids())}
        data.info["class_subset"] = [full[w] for w in wnids(which)]
    return data


def _inner(root: Path, name: str) -> Path:
    """``root/<name>`` where the archive unpacked into the root, else ``root`` itself."""
    return root / name if (root / name).is_dir() else root


@register_benchmark(
    "imagenet1k",
    task="zeroshot",
    layout="val/<wnid>/*.JPEG (torchvision's ImageNet; made from ILSVRC2012_img_val.tar and "
    "ILSVRC2012_devkit_t12.tar.gz in the root on first use); train: train/<wnid>/",
    splits=("test", "train"),
    classnames="imagenet1k",
    templates="imagenet1k",
    source="https://image-net.org (ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz)",
)
def imagenet1k(root: Path, req: Request):
    folder = root / ("train" if req.split == "train" else "val")
    if not folder.is_dir() and (root / "ILSVRC2012_devkit_t12.tar.gz").is_file():
        import torchvision.datasets as tvd

        tvd.ImageNet(str(root), split=folder.name)  # unpacks the archives into <split>/<wnid>/
    need(root, folder.name)
    return _by_wnid(folder, req)


def _v2_download(root: Path, req: Request) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    if not (root / "ImageNetV2-matched-frequency").is_dir():
        url = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz"
        download_and_extract_archive(url, str(root))
        (root / "imagenetv2-matched-frequency-format-val").rename(root / "ImageNetV2-matched-frequency")


@register_benchmark(
    "imagenetv2",
    task="zeroshot",
    layout="ImageNetV2-matched-frequency/<0..999>/*.jpeg (the matched-frequency archive, as CLIP_benchmark "
    "lays it out)",
    classnames="imagenet1k",
    templates="imagenet1k",
    download=_v2_download,
)
def imagenetv2(root: Path, req: Request):
    folder = root / "ImageNetV2-matched-frequency"
    if not folder.is_dir() and (root / "imagenetv2-matched-frequency-format-val").is_dir():
        folder = root / "imagenetv2-matched-frequency-format-val"
    names = [n for n in class_folders(folder) if n.isdigit() and int(n) < 1000]
    files, labels = [], []
    for name in names:
        for f in images_in(folder / name):
            files.append(f)
            labels.append(int(name))
    return labelled(files, labels, req)


@register_benchmark(
    "imagenet_sketch",
    task="zeroshot",
    layout="<wnid>/*.JPEG, or sketch/<wnid>/*.JPEG (the ImageNet-Sketch archive)",
    classnames="imagenet1k",
    templates="imagenet1k",
    aliases=("imagenet-sketch",),
    source="https://github.com/HaohanWang/ImageNet-Sketch",
)
def imagenet_sketch(root: Path, req: Request):
    return _by_wnid(_inner(root, "sketch"), req)


def _berkeley(name: str):
    def download(root: Path, req: Request) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        if not (root / name).is_dir():
            download_and_extract_archive(f"{BERKELEY}{name}.tar", str(root))

    return download


def _robustness(name: str):
    def build(root: Path, req: Request):
        return _by_wnid(_inner(root, name), req, name)

    return build


for _name in ("imagenet-a", "imagenet-r", "imagenet-o"):
    register_benchmark(
        _name,
        task="zeroshot",
        layout=f"<wnid>/*.jpg for its 200 classes, or {_name}/<wnid>/ (the {_name}.tar archive)",
        classnames="imagenet1k",
        templates="imagenet1k",
        download=_berkeley(_name),
    )(_robustness(_name))


@register_benchmark(
    "objectnet",
    task="zeroshot",
    layout="objectnet-1.0/images/<folder>/ + folder_to_objectnet_label.json and objectnet_to_imagenet_1k.json "
    "(in the root, or objectnet-1.0/mappings/; the 113 classes that map to ImageNet, as CLIP_benchmark)",
    templates="imagenet1k",
    source="https://objectnet.dev/download.html",
)
def objectnet(root: Path, req: Request):
    mappings = root / "objectnet-1.0" / "mappings"
    maps = mappings if (mappings / "folder_to_objectnet_label.json").is_file() else root
    need(maps, "folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json")
    need(root, "objectnet-1.0/images")
    label_of = json.loads((maps / "folder_to_objectnet_label.json").read_text())
    to_imagenet = json.loads((maps / "objectnet_to_imagenet_1k.json").read_text())
    folders = sorted(f for f, label in label_of.items() if label in to_imagenet)
    index = {f: i for i, f in enumerate(folders)}
    images = root / "objectnet-1.0" / "images"
    files, labels = [], []
    for folder in class_folders(images):
        if folder in index:
            for f in images_in(images / folder):
                files.append(f)
                labels.append(index[folder])
    return labelled(files, labels, req, classnames=[label_of[f].lower() for f in folders])
