"""Classification benchmarks in their own layouts (torchvision's where torchvision has the dataset),
with CLIP_benchmark's splits. Class names come from the shipped lists where CLIP_benchmark uses
them, from the data otherwise (Food-101, SUN397, Cars, FGVC Aircraft, DTD, VOC, RESISC45)."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from . import Missing, Request, need, register_benchmark
from .readers import arrays, class_folders, folder_dataset, images_in, labelled, read_lines


def _tv(name: str, root: Path, **kwargs) -> None:
    """Fetch a dataset with torchvision's downloader (it lays the files out as these builders read them)."""
    import torchvision.datasets as tvd

    getattr(tvd, name)(str(root), download=True, **kwargs)


def _loadmat(path: Path):
    from scipy.io import loadmat

    return loadmat(str(path), squeeze_me=True)


# --- pickled / binary arrays -------------------------------------------------------------------


def _cifar(root: Path, req: Request, folder: str, files: list[str], key: str):
    need(root, *(f"{folder}/{f}" for f in files))
    pixels, labels = [], []
    for f in files:
        with open(root / folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        pixels.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[key])
    return arrays(np.concatenate(pixels), labels, req)


@register_benchmark(
    "cifar10",
    task="zeroshot",
    layout="cifar-10-batches-py/{data_batch_1..5,test_batch} (torchvision's CIFAR-10)",
    splits=("test", "train"),
    classnames="cifar10",
    templates="cifar10",
    download=lambda root, req: _tv("CIFAR10", root, train=req.split == "train"),
)
def cifar10(root: Path, req: Request):
    files = [f"data_batch_{i}" for i in range(1, 6)] if req.split == "train" else ["test_batch"]
    return _cifar(root, req, "cifar-10-batches-py", files, "labels")


@register_benchmark(
    "cifar100",
    task="zeroshot",
    layout="cifar-100-python/{train,test} (torchvision's CIFAR-100)",
    splits=("test", "train"),
    classnames="cifar100",
    templates="cifar100",
    download=lambda root, req: _tv("CIFAR100", root, train=req.split == "train"),
)
def cifar100(root: Path, req: Request):
    return _cifar(root, req, "cifar-100-python", [req.split], "fine_labels")


@register_benchmark(
    "stl10",
    task="zeroshot",
    layout="stl10_binary/{test,train}_{X,y}.bin (torchvision's STL-10)",
    splits=("test", "train"),
    classnames="stl10",
    templates="stl10",
    download=lambda root, req: _tv("STL10", root, split=req.split),
)
def stl10(root: Path, req: Request):
    x, y = f"stl10_binary/{req.split}_X.bin", f"stl10_binary/{req.split}_y.bin"
    need(root, x, y)
    # stored column-major: (N, C, W, H)
    pixels = np.fromfile(root / x, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    labels = np.fromfile(root / y, dtype=np.uint8).astype(int) - 1
    return arrays(pixels, labels.tolist(), req)


def _idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), plain or gzipped."""
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@register_benchmark(
    "mnist",
    task="zeroshot",
    layout="MNIST/raw/{t10k,train}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision's MNIST)",
    splits=("test", "train"),
    classnames="mnist",
    templates="mnist",
    download=lambda root, req: _tv("MNIST", root, train=req.split == "train"),
)
def mnist(root: Path, req: Request):
    prefix = "train" if req.split == "train" else "t10k"
    raw = root / "MNIST" / "raw"
    images, labels = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    for p in (images, labels):
        if not p.exists() and not p.with_name(p.name + ".gz").exists():
            raise Missing(str(p))
    return arrays(_idx(images), _idx(labels).tolist(), req)


@register_benchmark(
    "svhn",
    task="zeroshot",
    layout="{test,train}_32x32.mat (torchvision's SVHN, cropped digits)",
    splits=("test", "train"),
    classnames="svhn",
    templates="svhn",
    download=lambda root, req: _tv("SVHN", root, split=req.split),
)
def svhn(root: Path, req: Request):
    need(root, f"{req.split}_32x32.mat")
    mat = _loadmat(root / f"{req.split}_32x32.mat")
    labels = np.asarray(mat["y"]).reshape(-1).astype(int) % 10  # the digit 0 is labelled 10
    return arrays(np.asarray(mat["X"]).transpose(3, 0, 1, 2), labels.tolist(), req)


@register_benchmark(
    "pcam",
    task="zeroshot",
    layout="pcam/camelyonpatch_level_2_split_{test,train,valid}_{x,y}.h5 (torchvision's PCAM; needs h5py)",
    splits=("test", "train", "val"),
    classnames="pcam",
    templates="pcam",
    download=lambda root, req: _tv("PCAM", root, split=req.split),
)
def pcam(root: Path, req: Request):
    split = "valid" if req.split == "val" else req.split
    x, y = f"pcam/camelyonpatch_level_2_split_{split}_x.h5", f"pcam/camelyonpatch_level_2_split_{split}_y.h5"
    need(root, x, y)
    try:
        import h5py
    except ImportError:
        raise ConfigError("pcam: PatchCamelyon's files are HDF5: reading them needs h5py (pip install h5py)") from None
    with h5py.File(root / x, "r") as fx, h5py.File(root / y, "r") as fy:
        pixels, labels = np.asarray(fx["x"]), np.asarray(fy["y"]).reshape(-1).astype(int)
    return arrays(pixels, labels.tolist(), req)


# --- class folders -----------------------------------------------------------------------------

EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]  # fmt: skip
FER2013 = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def _known_folders(root: Path, req: Request, names: list[str]):
    """``root/<name>/`` for a benchmark whose class folders are known: a folder may be absent (no
    images of it), an unknown one is an error."""
    if not root.is_dir():
        raise Missing(str(root))
    present = class_folders(root)
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise Missing(f"{root}: class folders named {', '.join(names)} (found {', '.join(unknown)})")
    return folder_dataset(root, req, [n for n in names if n in present], {n: i for i, n in enumerate(names)})


@register_benchmark(
    "eurosat",
    task="zeroshot",
    layout="eurosat/2750/<class>/*.jpg (torchvision's EuroSAT; no official split: all 27,000 images, as "
    "CLIP_benchmark's eurosat)",
    classnames="eurosat",
    templates="eurosat",
    download=lambda root, req: _tv("EuroSAT", root),
)
def eurosat(root: Path, req: Request):
    return _known_folders(root / "eurosat" / "2750", req, EUROSAT)


@register_benchmark(
    "fer2013",
    task="zeroshot",
    layout="{train,test}/<emotion>/*.jpg (the Kaggle FER2013 archive, msambare/fer2013)",
    splits=("test", "train"),
    classnames="fer2013",
    templates="fer2013",
    source="https://www.kaggle.com/datasets/msambare/fer2013",
)
def fer2013(root: Path, req: Request):
    return _known_folders(root / req.split, req, FER2013)


@register_benchmark(
    "renderedsst2",
    task="zeroshot",
    layout="rendered-sst2/{train,valid,test}/{negative,positive}/*.png (torchvision's RenderedSST2)",
    splits=("test", "train", "val"),
    templates="renderedsst2",
    download=lambda root, req: _tv("RenderedSST2", root, split=req.split),
)
def renderedsst2(root: Path, req: Request):
    names = ["negative", "positive"]
    data = _known_folders(root / "rendered-sst2" / ("valid" if req.split == "val" else req.split), req, names)
    data.classnames = names
    return data


@register_benchmark(
    "country211",
    task="zeroshot",
    layout="country211/{train,valid,test}/<ISO code>/*.jpg, all 211 folders (torchvision's Country211)",
    splits=("test", "train", "valid"),
    classnames="country211",
    templates="country211",
    download=lambda root, req: _tv("Country211", root, split=req.split),
)
def country211(root: Path, req: Request):
    folder = root / "country211" / req.split
    return folder_dataset(folder, req, class_folders(folder, expected=211))


@register_benchmark(
    "caltech101",
    task="zeroshot",
    layout="caltech101/101_ObjectCategories/<category>/image_*.jpg, all 102 folders with BACKGROUND_Google "
    "(torchvision's Caltech101; no official split: every image, as CLIP_benchmark's caltech101)",
    classnames="caltech101",
    templates="caltech101",
    download=lambda root, req: _tv("Caltech101", root),
)
def caltech101(root: Path, req: Request):
    folder = root / "caltech101" / "101_ObjectCategories"
    return folder_dataset(folder, req, class_folders(folder, expected=102))


@register_benchmark(
    "resisc45",
    task="zeroshot",
    layout="NWPU-RESISC45/<class>/*.jpg (the official archive; no official split: all 31,500 images; "
    "VTAB's 6,300-image test split is wds_vtab-resisc45)",
    templates="resisc45",
    source="https://www.tensorflow.org/datasets/catalog/resisc45 (NWPU-RESISC45.rar)",
)
def resisc45(root: Path, req: Request):
    folder = root / "NWPU-RESISC45"
    names = class_folders(folder)
    data = folder_dataset(folder, req, names)
    data.classnames = [n.replace("_", " ") for n in names]
    return data


@register_benchmark(
    "gtsrb",
    task="zeroshot",
    layout="gtsrb/GT-final_test.csv + gtsrb/GTSRB/Final_Test/Images/*.ppm; train: gtsrb/GTSRB/Training/<class>/ "
    "(torchvision's GTSRB)",
    splits=("test", "train"),
    classnames="gtsrb",
    templates="gtsrb",
    download=lambda root, req: _tv("GTSRB", root, split=req.split),
)
def gtsrb(root: Path, req: Request):
    base = root / "gtsrb"
    if req.split == "train":
        folder = base / "GTSRB" / "Training"
        names = class_folders(folder)
        return folder_dataset(folder, req, names, {n: int(n) for n in names})
    need(root, "gtsrb/GT-final_test.csv", "gtsrb/GTSRB/Final_Test/Images")
    with open(base / "GT-final_test.csv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
    images = base / "GTSRB" / "Final_Test" / "Images"
    return labelled([images / r["Filename"] for r in rows], [int(r["ClassId"]) for r in rows], req)


# --- annotation files + images -----------------------------------------------------------------


@register_benchmark(
    "pets",
    task="zeroshot",
    layout="oxford-iiit-pet/{images/*.jpg,annotations/{test,trainval}.txt} (torchvision's OxfordIIITPet)",
    splits=("test", "trainval"),
    classnames="pets",
    templates="pets",
    download=lambda root, req: _tv("OxfordIIITPet", root, split=req.split),
)
def pets(root: Path, req: Request):
    need(root, f"oxford-iiit-pet/annotations/{req.split}.txt", "oxford-iiit-pet/images")
    files, labels = [], []
    for line in read_lines(root / "oxford-iiit-pet" / "annotations" / f"{req.split}.txt"):
        image_id, label, *_ = line.split()
        files.append(root / "oxford-iiit-pet" / "images" / f"{image_id}.jpg")
        labels.append(int(label) - 1)
    return labelled(files, labels, req)


@register_benchmark(
    "flowers",
    task="zeroshot",
    layout="flowers-102/{jpg/image_*.jpg,imagelabels.mat,setid.mat} (torchvision's Flowers102)",
    splits=("test", "train", "val"),
    classnames="flowers",
    templates="flowers",
    download=lambda root, req: _tv("Flowers102", root, split=req.split),
)
def flowers(root: Path, req: Request):
    need(root, "flowers-102/imagelabels.mat", "flowers-102/setid.mat", "flowers-102/jpg")
    base = root / "flowers-102"
    ids = np.atleast_1d(_loadmat(base / "setid.mat")[{"train": "trnid", "val": "valid", "test": "tstid"}[req.split]])
    label_of = np.atleast_1d(_loadmat(base / "imagelabels.mat")["labels"]).astype(int) - 1
    files = [base / "jpg" / f"image_{int(i):05d}.jpg" for i in ids]
    return labelled(files, [int(label_of[int(i) - 1]) for i in ids], req)


@register_benchmark(
    "dtd",
    task="zeroshot",
    layout="dtd/dtd/{images/<class>/*.jpg,labels/{train,val,test}1.txt} (torchvision's DTD, partition 1)",
    splits=("test", "train", "val"),
    templates="dtd",
    download=lambda root, req: _tv("DTD", root, split=req.split),
)
def dtd(root: Path, req: Request):
    need(root, f"dtd/dtd/labels/{req.split}1.txt", "dtd/dtd/images")
    entries = [line.split("/", 1) for line in read_lines(root / "dtd" / "dtd" / "labels" / f"{req.split}1.txt")]
    names = sorted({c for c, _ in entries})
    index = {n: i for i, n in enumerate(names)}
    files = [root / "dtd" / "dtd" / "images" / c / f for c, f in entries]
    return labelled(files, [index[c] for c, _ in entries], req, classnames=names)


@register_benchmark(
    "food101",
    task="zeroshot",
    layout="food-101/{images/<class>/*.jpg,meta/{train,test}.json} (torchvision's Food101)",
    splits=("test", "train"),
    templates="food101",
    download=lambda root, req: _tv("Food101", root, split=req.split),
)
def food101(root: Path, req: Request):
    need(root, f"food-101/meta/{req.split}.json", "food-101/images")
    meta = json.loads((root / "food-101" / "meta" / f"{req.split}.json").read_text())
    names = sorted(meta)
    files, labels = [], []
    for i, name in enumerate(names):
        for rel in meta[name]:
            files.append(root / "food-101" / "images" / f"{rel}.jpg")
            labels.append(i)
    return labelled(files, labels, req, classnames=[n.replace("_", " ") for n in names])


@register_benchmark(
    "cars",
    task="zeroshot",
    layout="stanford_cars/{devkit/cars_meta.mat,cars_test_annos_withlabels.mat,cars_test/} "
    "(torchvision's StanfordCars; train: devkit/cars_train_annos.mat + cars_train/)",
    splits=("test", "train"),
    templates="cars",
    source="https://pytorch.org/vision/stable/generated/torchvision.datasets.StanfordCars.html",
)
def cars(root: Path, req: Request):
    base = root / "stanford_cars"
    annos = "devkit/cars_train_annos.mat" if req.split == "train" else "cars_test_annos_withlabels.mat"
    need(base, "devkit/cars_meta.mat", annos, f"cars_{req.split}")
    names = [str(n) for n in np.atleast_1d(_loadmat(base / "devkit" / "cars_meta.mat")["class_names"])]
    records = np.atleast_1d(_loadmat(base / annos)["annotations"])
    files = [base / f"cars_{req.split}" / str(r["fname"]) for r in records]
    return labelled(files, [int(r["class"]) - 1 for r in records], req, classnames=names)


@register_benchmark(
    "fgvc_aircraft",
    task="zeroshot",
    layout="fgvc-aircraft-2013b/data/{images/*.jpg,variants.txt,images_variant_test.txt} "
    "(torchvision's FGVCAircraft, variant level)",
    splits=("test", "train", "val", "trainval"),
    templates="fgvc_aircraft",
    download=lambda root, req: _tv("FGVCAircraft", root, split=req.split, annotation_level="variant"),
)
def fgvc_aircraft(root: Path, req: Request):
    data = root / "fgvc-aircraft-2013b" / "data"
    need(data, "variants.txt", f"images_variant_{req.split}.txt", "images")
    names = read_lines(data / "variants.txt")
    index = {n: i for i, n in enumerate(names)}
    pairs = [line.split(" ", 1) for line in read_lines(data / f"images_variant_{req.split}.txt")]
    return labelled([data / "images" / f"{i}.jpg" for i, _ in pairs], [index[n] for _, n in pairs], req,
                    classnames=names)  # fmt: skip


@register_benchmark(
    "sun397",
    task="zeroshot",
    layout="SUN397/{ClassName.txt,<letter>/<class>/sun_*.jpg} (torchvision's SUN397; no official split: every "
    "image, as CLIP_benchmark's sun397)",
    templates="sun397",
    download=lambda root, req: _tv("SUN397", root),
)
def sun397(root: Path, req: Request):
    need(root, "SUN397/ClassName.txt")
    base = root / "SUN397"
    classes = [c[3:].strip() for c in (base / "ClassName.txt").read_text().splitlines() if c.strip()]
    index = {c: i for i, c in enumerate(classes)}
    files = sorted(base.rglob("sun_*.jpg"))
    labels = ["/".join(f.relative_to(base).parts[1:-1]) for f in files]
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise Missing(f"{base / 'ClassName.txt'} entries for {', '.join(unknown[:3])}")
    names = [c.replace("_", " ").replace("/", " ") for c in classes]
    return labelled(files, [index[c] for c in labels], req, classnames=names)


VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]  # fmt: skip


def _voc_objects(xml_path: Path):
    for obj in ET.parse(xml_path).findall("object"):
        box = obj.find("bndbox")
        yield obj.findtext("name").strip(), tuple(int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))


def _voc_download(root: Path, req: Request) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    base = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
    archives = ["VOCtrainval_06-Nov-2007.tar"] if req.split != "test" else ["VOCtest_06-Nov-2007.tar"]
    for name in archives:
        if not (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / f"aeroplane_{req.split}.txt").is_file():
            download_and_extract_archive(base + name, str(root))


@register_benchmark(
    "voc2007",
    task="zeroshot",
    layout="VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/aeroplane_<split>.txt} (the official "
    "archives; every object cropped to its box and labelled by its class, as CLIP_benchmark's voc2007)",
    splits=("test", "train", "val", "trainval"),
    templates="voc2007",
    download=_voc_download,
)
def voc2007(root: Path, req: Request):
    base = root / "VOCdevkit" / "VOC2007"
    need(base, f"ImageSets/Main/aeroplane_{req.split}.txt", "Annotations", "JPEGImages")
    ids = [line.split()[0] for line in read_lines(base / "ImageSets" / "Main" / f"aeroplane_{req.split}.txt")]
    files, labels, boxes = [], [], []
    for image_id in ids:
        need(base, f"Annotations/{image_id}.xml")
        for name, box in _voc_objects(base / "Annotations" / f"{image_id}.xml"):
            files.append(base / "JPEGImages" / f"{image_id}.jpg")
            labels.append(VOC_CLASSES.index(name))
            boxes.append(box)
    return labelled(files, labels, req, classnames=list(VOC_CLASSES), boxes=boxes)


__all__ = ["images_in"]
