"""Tiny copies of each benchmark in its own layout, written by the tests (no network).

``WRITERS[name](root)`` writes benchmark ``name`` under ``root`` and returns what a reader must find:
``labels`` (classification: the label of each image, in the reader's order), ``captions``
(retrieval: the captions of each image), or ``items`` (compositional: the number of items).
A benchmark registered without a writer here fails ``tests/eval/test_benchmarks.py``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


def image(path: Path, colour="red", size=(8, 8)) -> Path:
    """A small image of one colour (the format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = COLOURS.get(colour, colour)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".ppm": "PPM"}.get(path.suffix.lower(), "PNG")
    Image.new("RGB", size, fill).save(path, fmt)
    return path


def two_colour(path: Path, left="red", right="blue", size=(16, 8)) -> Path:
    """An image whose left half is one colour and right half another (crop tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, COLOURS[left])
    im.paste(Image.new("RGB", (size[0] // 2, size[1]), COLOURS[right]), (size[0] // 2, 0))
    im.save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _pixels(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


class ColourModel:
    """A model whose similarities can be computed by hand: an image is its mean colour; a caption
    the colour words it names, the first weighted 1, the next 0.5 (tests load it in place of a
    real model: ``mmcl.eval.adapters.load_adapter``)."""

    name, pretrained, device = "colour", "none", torch.device("cpu")
    WORDS = {"red": 0, "green": 1, "blue": 2, "rotes": 0, "blaues": 2}  # and a little German

    def preprocess(self, im):
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0) / 255
        return torch.tensor([*rgb, 0.01])

    def encode_image(self, x):
        return F.normalize(x.float(), dim=-1)

    def encode_text(self, texts):
        rows = []
        for t in texts:
            v, weight = [0.0, 0.0, 0.0, 0.01], 1.0
            for w in t.lower().replace(",", " ").split():
                if w in self.WORDS:
                    v[self.WORDS[w]] += weight
                    weight = 0.5
            rows.append(v)
        return F.normalize(torch.tensor(rows), dim=-1)


# --- classification ----------------------------------------------------------------------------


def cifar10(root):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    labels = [3, 0, 9]
    chw = _pixels(3, 32).transpose(0, 3, 1, 2).reshape(3, -1)
    (d / "test_batch").write_bytes(pickle.dumps({"data": chw, "labels": labels}))
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps({"data": chw[:1], "labels": [i]}))
    return {"labels": labels}


def cifar100(root):
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    chw = _pixels(2, 32).transpose(0, 3, 1, 2).reshape(2, -1)
    (d / "test").write_bytes(pickle.dumps({"data": chw, "fine_labels": [99, 5], "coarse_labels": [0, 0]}))
    return {"labels": [99, 5]}


def stl10(root):
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    _pixels(2, 96).transpose(0, 3, 2, 1).tofile(d / "test_X.bin")  # column-major, as STL-10 stores it
    np.array([1, 10], dtype=np.uint8).tofile(d / "test_y.bin")
    return {"labels": [0, 9]}


def _idx(array: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist(root):
    d = root / "MNIST" / "raw"
    d.mkdir(parents=True)
    (d / "t10k-images-idx3-ubyte").write_bytes(_idx(_pixels(3, 28)[..., 0]))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.array([7, 2, 1]))))  # gzipped works too
    return {"labels": [7, 2, 1]}


def svhn(root):
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "test_32x32.mat", {"X": _pixels(3, 32).transpose(1, 2, 3, 0), "y": np.array([[10], [1], [9]])})
    return {"labels": [0, 1, 9]}


def pcam(root):
    import h5py

    d = root / "pcam"
    d.mkdir(parents=True)
    with h5py.File(d / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f["x"] = _pixels(2, 96)
    with h5py.File(d / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f["y"] = np.array([1, 0], dtype=np.uint8).reshape(2, 1, 1, 1)
    return {"labels": [1, 0]}


def eurosat(root):
    image(root / "eurosat" / "2750" / "Forest" / "Forest_1.jpg")
    image(root / "eurosat" / "2750" / "SeaLake" / "SeaLake_1.jpg")
    return {"labels": [1, 9]}


def fer2013(root):
    image(root / "test" / "happy" / "a.jpg")
    image(root / "test" / "surprise" / "b.jpg")
    return {"labels": [3, 6]}


def renderedsst2(root):
    image(root / "rendered-sst2" / "test" / "negative" / "0.png")
    image(root / "rendered-sst2" / "test" / "positive" / "1.png")
    return {"labels": [0, 1]}


def country211(root):
    d = root / "country211" / "test"
    for i in range(211):
        (d / f"C{i:03d}").mkdir(parents=True)
    image(d / "C000" / "a.jpg")
    image(d / "C210" / "b.jpg")
    return {"labels": [0, 210]}


def caltech101(root):
    d = root / "caltech101" / "101_ObjectCategories"
    names = ["BACKGROUND_Google", "Faces"] + [f"cat{i:03d}" for i in range(100)]
    for n in names:
        (d / n).mkdir(parents=True)
    image(d / "BACKGROUND_Google" / "image_0001.jpg")
    image(d / "cat099" / "image_0001.jpg")
    return {"labels": [0, 101]}


def resisc45(root):
    image(root / "NWPU-RESISC45" / "airplane" / "airplane_001.jpg")
    image(root / "NWPU-RESISC45" / "basketball_court" / "basketball_court_001.jpg")
    return {"labels": [0, 1], "classnames": ["airplane", "basketball court"]}


def gtsrb(root):
    d = root / "gtsrb"
    image(d / "GTSRB" / "Final_Test" / "Images" / "00000.ppm")
    image(d / "GTSRB" / "Final_Test" / "Images" / "00001.ppm")
    write(d / "GT-final_test.csv", "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
          "00000.ppm;8;8;0;0;7;7;16\n00001.ppm;8;8;0;0;7;7;1\n")  # fmt: skip
    return {"labels": [16, 1]}


def pets(root):
    d = root / "oxford-iiit-pet"
    write(d / "annotations" / "test.txt", "Abyssinian_1 1 1 1\nyorkshire_terrier_9 37 2 25\n")
    image(d / "images" / "Abyssinian_1.jpg")
    image(d / "images" / "yorkshire_terrier_9.jpg")
    return {"labels": [0, 36]}


def flowers(root):
    from scipy.io import savemat

    d = root / "flowers-102"
    d.mkdir(parents=True)
    savemat(d / "setid.mat", {"trnid": np.array([1, 2]), "valid": np.array([2, 3]), "tstid": np.array([3, 4])})
    savemat(d / "imagelabels.mat", {"labels": np.array([1, 1, 5, 102])})
    for i in (1, 2, 3, 4):
        image(d / "jpg" / f"image_{i:05d}.jpg")
    return {"labels": [4, 101]}


def dtd(root):
    d = root / "dtd" / "dtd"
    write(d / "labels" / "test1.txt", "zigzagged/zigzagged_0001.jpg\nbanded/banded_0002.jpg\n")
    image(d / "images" / "banded" / "banded_0002.jpg")
    image(d / "images" / "zigzagged" / "zigzagged_0001.jpg")
    return {"labels": [1, 0], "classnames": ["banded", "zigzagged"]}


def food101(root):
    d = root / "food-101"
    write(d / "meta" / "test.json", json.dumps({"apple_pie": ["apple_pie/1"], "waffles": ["waffles/2"]}))
    image(d / "images" / "apple_pie" / "1.jpg")
    image(d / "images" / "waffles" / "2.jpg")
    return {"labels": [0, 1], "classnames": ["apple pie", "waffles"]}


def cars(root):
    from scipy.io import savemat

    d = root / "stanford_cars"
    (d / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    savemat(d / "devkit" / "cars_meta.mat", {"class_names": names})
    annos = np.zeros((2,), dtype=[("fname", "O"), ("class", "O")])
    annos[0], annos[1] = ("00001.jpg", 2), ("00002.jpg", 1)
    savemat(d / "cars_test_annos_withlabels.mat", {"annotations": annos})
    image(d / "cars_test" / "00001.jpg")
    image(d / "cars_test" / "00002.jpg")
    return {"labels": [1, 0], "classnames": list(names)}


def fgvc_aircraft(root):
    d = root / "fgvc-aircraft-2013b" / "data"
    write(d / "variants.txt", "707-320\nA300B4\nDC-3\n")
    write(d / "images_variant_test.txt", "1000001 DC-3\n1000002 707-320\n")
    image(d / "images" / "1000001.jpg")
    image(d / "images" / "1000002.jpg")
    return {"labels": [2, 0], "classnames": ["707-320", "A300B4", "DC-3"]}


def sun397(root):
    d = root / "SUN397"
    write(d / "ClassName.txt", "/a/abbey\n/a/apartment_building/outdoor\n")
    image(d / "a" / "abbey" / "sun_aaa.jpg")
    image(d / "a" / "apartment_building" / "outdoor" / "sun_bbb.jpg")
    return {"labels": [0, 1], "classnames": ["abbey", "apartment building outdoor"]}


def voc2007(root):
    d = root / "VOCdevkit" / "VOC2007"
    write(d / "ImageSets" / "Main" / "aeroplane_test.txt", "000001 -1\n")
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in (("dog", (0, 0, 8, 8)), ("tvmonitor", (8, 0, 16, 8)))
    )
    write(d / "Annotations" / "000001.xml", f"<annotation>{objects}</annotation>")
    two_colour(d / "JPEGImages" / "000001.jpg")
    return {"labels": [11, 19]}


def imagenet1k(root):
    image(root / "val" / "n01440764" / "ILSVRC2012_val_00000293.JPEG")
    image(root / "val" / "n15075141" / "ILSVRC2012_val_00000001.JPEG")
    return {"labels": [0, 999]}


def imagenetv2(root):
    image(root / "ImageNetV2-matched-frequency" / "0" / "a.jpeg")
    image(root / "ImageNetV2-matched-frequency" / "999" / "b.jpeg")
    return {"labels": [0, 999]}


def imagenet_sketch(root):
    image(root / "sketch" / "n01443537" / "sketch_1.JPEG")
    return {"labels": [1]}


def imagenet_a(root):
    image(root / "imagenet-a" / "n01498041" / "0.jpg")  # the first of its 200 classes
    image(root / "imagenet-a" / "n12267677" / "1.jpg")  # the last
    return {"labels": [0, 199]}


def imagenet_r(root):
    image(root / "n01443537" / "art_0.jpg")
    image(root / "n12267677" / "art_1.jpg")
    return {"labels": [0, 199]}


def imagenet_o(root):
    image(root / "n01443537" / "0.jpg")
    return {"labels": [0]}


def objectnet(root):
    write(root / "folder_to_objectnet_label.json", json.dumps({"alarm_clock": "Alarm clock", "zebra_toy": "Zebra toy",
                                                               "banana": "Banana"}))  # fmt: skip
    write(root / "objectnet_to_imagenet_1k.json", json.dumps({"Alarm clock": "analog clock; digital clock",
                                                              "Banana": "banana"}))  # fmt: skip
    for folder in ("alarm_clock", "banana", "zebra_toy"):
        image(root / "objectnet-1.0" / "images" / folder / "a.png")
    return {"labels": [0, 1], "classnames": ["alarm clock", "banana"]}


# --- retrieval ---------------------------------------------------------------------------------


def mscoco_captions(root):
    coco = {
        "images": [{"id": 42, "file_name": "COCO_val2014_42.jpg"}, {"id": 7, "file_name": "COCO_val2014_7.jpg"}],
        "annotations": [
            {"image_id": 42, "id": 1, "caption": "a red square"},
            {"image_id": 7, "id": 2, "caption": "a blue square"},
            {"image_id": 42, "id": 3, "caption": "something red"},
        ],
    }
    write(root / "coco_test_karpathy.json", json.dumps(coco))
    image(root / "val2014" / "COCO_val2014_42.jpg", "red")
    image(root / "val2014" / "COCO_val2014_7.jpg", "blue")
    return {"captions": [["a blue square"], ["a red square", "something red"]]}  # by image id


def _flickr(name):
    def writer(root):
        write(root / f"{name}_test_karpathy.txt",
              "image,caption\n1.jpg,a red thing, seen from afar\n2.jpg,a blue thing\n1.jpg,red again\n")  # fmt: skip
        write(root / f"{name}_test_zh.txt", "image,caption\n1.jpg,红色的东西\n2.jpg,蓝色的东西\n")
        image(root / "1.jpg", "red")
        image(root / "2.jpg", "blue")
        return {"captions": [["a red thing, seen from afar", "red again"], ["a blue thing"]]}

    return writer


def crossmodal3600(root):
    rows = [
        {"image/key": "k1", "en": {"caption": ["a red thing", "red"]}, "de": {"caption": ["ein rotes Ding"]}},
        {"image/key": "k2", "en": {"caption": ["a blue thing"]}, "de": {"caption": ["ein blaues Ding", "blau"]}},
    ]
    write(root / "xm3600" / "captions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    image(root / "xm3600" / "images" / "k1.jpg", "red")
    image(root / "xm3600" / "images" / "k2.jpg", "blue")
    return {"captions": [["a red thing"], ["a blue thing"]], "de": [["ein rotes Ding"], ["ein blaues Ding"]]}


def multi30k(root):
    task1 = root / "data" / "task1"
    write(task1 / "image_splits" / "test_2016_flickr.txt", "1.jpg\n2.jpg\n")
    for lang, lines in {"en": "a red thing\na blue thing\n", "de": "ein rotes Ding\nein blaues Ding\n"}.items():
        path = task1 / "raw" / f"test_2016_flickr.{lang}.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(lines.encode()))
    image(root / "images" / "1.jpg", "red")
    image(root / "images" / "2.jpg", "blue")
    return {"captions": [["a red thing"], ["a blue thing"]], "de": [["ein rotes Ding"], ["ein blaues Ding"]]}


def multilingual_mscoco_captions(root):
    write(root / "test_image_names.txt", "a.jpg\nb.jpg\n")
    write(root / "test_1kcaptions_en.txt", "a red thing\na blue thing\n")
    write(root / "test_1kcaptions_jp.txt", "赤いもの\n青いもの\n")
    image(root / "images" / "a.jpg", "red")
    image(root / "images" / "b.jpg", "blue")
    return {"captions": [["a red thing"], ["a blue thing"]], "ja": [["赤いもの"], ["青いもの"]]}


# --- compositional -----------------------------------------------------------------------------


def sugar_crepe(root):
    from mmcl.data.benchmarks.compositional import SUGAR_CREPE

    image(root / "val2017" / "000000000001.jpg", "red")
    image(root / "val2017" / "000000000002.jpg", "blue")
    for n, category in enumerate(SUGAR_CREPE):
        entries = {"0": {"filename": "000000000001.jpg", "caption": "a red cube", "negative_caption": "a blue cube"}}
        if n == 0:
            entries["1"] = {"filename": "000000000002.jpg", "caption": "a red ball", "negative_caption": "a blue ball"}
        name = category.replace("_obj", "_ent") if category == "swap_obj" else category  # the older file names
        write(root / f"{name}.json", json.dumps(entries))
    return {"items": 8}


def vg_relation(root):
    two_colour(root / "images" / "1.jpg", "red", "blue")
    entries = [
        # the crop is the left (red) half: the true caption says red
        {"image_path": "1.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8, "relation_name": "on",
         "true_caption": "the red cup is on the table", "false_caption": "the blue table is on the cup"},
        {"image_path": "1.jpg", "bbox_x": 8, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8, "relation_name": "near",
         "true_caption": "the red cup is near the plate", "false_caption": "the blue plate is near the cup"},
        {"image_path": "1.jpg", "bbox_x": 8, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8, "relation_name": "under",
         "true_caption": "the blue cat is under the chair", "false_caption": "the red chair is under the cat"},
    ]  # fmt: skip
    write(root / "visual_genome_relation.json", json.dumps(entries))
    return {"items": 3}


def vg_attribution(root):
    two_colour(root / "images" / "1.jpg", "red", "blue")
    entries = [
        {"image_path": "1.jpg", "bbox_x": 0, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8, "attributes": ["red", "wooden"],
         "true_caption": "the red door and the wooden wall", "false_caption": "the blue door and the red wall"},
    ]  # fmt: skip
    write(root / "visual_genome_attribution.json", json.dumps(entries))
    return {"items": 1}


def _order(name):
    def writer(root):
        image(root / "val2014" / "a.jpg", "red")
        cases = [{"image": "val2014/a.jpg", "caption_options": ["a red dog", "dog red a", "a dog red", "red a dog",
                                                                 "a red dog"]}]  # fmt: skip
        write(root / f"{name}_test.json", json.dumps(cases))
        return {"items": 1}

    return writer


def winoground(root):
    image(root / "images" / "ex_0_img_0.png", "red")
    image(root / "images" / "ex_0_img_1.png", "blue")
    examples = [
        {"id": 0, "caption_0": "red over blue", "caption_1": "blue over red", "image_0": "ex_0_img_0",
         "image_1": "ex_0_img_1", "tag": "Object", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"},
    ]  # fmt: skip
    write(root / "examples.jsonl", "".join(json.dumps(e) + "\n" for e in examples))
    return {"items": 1}


# --- CLIP_benchmark's WebDataset export -------------------------------------------------------


def wds_layout(root, samples: dict[str, dict[str, bytes]], classnames=None, dataset_type=None, split="test"):
    """``root/<split>/0.tar`` holding ``samples`` (key -> {extension: bytes}) and ``nshards.txt``."""
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    with tarfile.open(d / "0.tar", "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    write(d / "nshards.txt", "1\n")
    if classnames:
        write(root / "classnames.txt", "\n".join(classnames) + "\n")
    if dataset_type:
        write(root / "dataset_type.txt", dataset_type + "\n")


def _png(colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), COLOURS[colour]).save(buf, "PNG")
    return buf.getvalue()


def wds_cifar10(root):
    wds_layout(root, {"s0": {"png": _png(), "cls": b"3"}, "s1": {"png": _png("blue"), "cls": b"8"}})
    return {"labels": [3, 8]}  # no classnames.txt: the shipped cifar10 names


WRITERS = {
    "cifar10": cifar10,
    "cifar100": cifar100,
    "stl10": stl10,
    "mnist": mnist,
    "svhn": svhn,
    "pcam": pcam,
    "eurosat": eurosat,
    "fer2013": fer2013,
    "renderedsst2": renderedsst2,
    "country211": country211,
    "caltech101": caltech101,
    "resisc45": resisc45,
    "gtsrb": gtsrb,
    "pets": pets,
    "flowers": flowers,
    "dtd": dtd,
    "food101": food101,
    "cars": cars,
    "fgvc_aircraft": fgvc_aircraft,
    "sun397": sun397,
    "voc2007": voc2007,
    "imagenet1k": imagenet1k,
    "imagenetv2": imagenetv2,
    "imagenet_sketch": imagenet_sketch,
    "imagenet-a": imagenet_a,
    "imagenet-r": imagenet_r,
    "imagenet-o": imagenet_o,
    "objectnet": objectnet,
    "mscoco_captions": mscoco_captions,
    "flickr30k": _flickr("flickr30k"),
    "flickr8k": _flickr("flickr8k"),
    "crossmodal3600": crossmodal3600,
    "multi30k": multi30k,
    "multilingual_mscoco_captions": multilingual_mscoco_captions,
    "sugar_crepe": sugar_crepe,
    "vg_relation": vg_relation,
    "vg_attribution": vg_attribution,
    "coco_order": _order("coco_order"),
    "flickr30k_order": _order("flickr30k_order"),
    "winoground": winoground,
    "wds_*": wds_cifar10,
}
