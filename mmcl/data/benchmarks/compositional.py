"""Compositional benchmarks in their own files: SugarCrepe, ARO's four sets and Winoground.

Each builder returns a :class:`CompositionalSet`: the images (cropped where the benchmark crops),
the items, and how the benchmark scores them (:mod:`mmcl.eval.compositional` computes it):

- ``choice`` items ``{"image", "captions", "type"}``: the true caption first, then its negatives;
  an item is right when the true caption outscores every negative (``ties``: whether an equal
  score counts as right, as ARO's order sets' argmax does, or wrong, as SugarCrepe's ``>`` and
  ARO's VG sets' argmax over [false, true] do). ``macro``: the benchmark's headline averages the
  per-type accuracies (ARO's VG-Relation without its symmetric relations, VG-Attribution over
  attribute pairs seen at least 25 times, SugarCrepe over its seven categories).
- ``winoground`` items ``{"images": [i0, i1], "captions": [c0, c1], "type"}``: text, image and
  group scores as the Winoground paper defines them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evalsets import _Source
from . import Missing, Request, need, register_benchmark
from .readers import ListImages

SUGAR_CREPE = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
ASSETS = Path(__file__).parent / "assets"


@dataclass
class CompositionalSet:
    """A compositional benchmark read from its files (see the module docstring)."""

    name: str
    images: list[Path]
    items: list[dict]
    scoring: str = "choice"  # or "winoground"
    boxes: list | None = None  # a crop box per image (left, top, right, bottom) or None
    ties: str = "wrong"  # choice: an equal score counts as "wrong" or "right"
    macro: dict | None = None  # choice: {"exclude": [types], "min_count": n}: the mean of per-type accuracies
    info: dict = field(default_factory=dict)

    @property
    def source(self) -> _Source:
        """The images as an evaluation dataset source (label: the image's index)."""
        return ListImages(self.images, labels=list(range(len(self.images))), boxes=self.boxes)


class _Images:
    """Unique (path, crop box) images, in first-seen order."""

    def __init__(self):
        self.index: dict = {}
        self.paths, self.boxes = [], []

    def add(self, path: Path, box=None) -> int:
        key = (str(path), box)
        if key not in self.index:
            self.index[key] = len(self.paths)
            self.paths.append(path)
            self.boxes.append(box)
        return self.index[key]


def _limit(items: list, req: Request) -> list:
    return items if req.max_items is None else items[: req.max_items]


@register_benchmark(
    "sugar_crepe",
    task="compositional",
    layout="{add_att,add_obj,replace_att,replace_obj,replace_rel,swap_att,swap_obj}.json (SugarCrepe's data/, "
    "*_ent.json accepted for *_obj) + val2017/ (the COCO 2017 validation images)",
    source="https://github.com/RAIVNLab/sugar-crepe (data/) and http://images.cocodataset.org/zips/val2017.zip",
)
def sugar_crepe(root: Path, req: Request):
    base = root / "data" if (root / "data" / "add_att.json").is_file() else root
    need(root, "val2017")
    images, items = _Images(), []
    for category in SUGAR_CREPE:
        path = base / f"{category}.json"
        if not path.is_file() and (base / f"{category.replace('_obj', '_ent')}.json").is_file():
            path = base / f"{category.replace('_obj', '_ent')}.json"
        if not path.is_file():
            raise Missing(str(base / f"{category}.json"))
        for entry in json.loads(path.read_text(encoding="utf-8")).values():
            image = images.add(root / "val2017" / entry["filename"])
            items.append({"image": image, "captions": [entry["caption"], entry["negative_caption"]], "type": category})
    return CompositionalSet("sugar_crepe", images.paths, _limit(items, req), macro={"min_count": 1})


def _box(entry: dict):
    x, y, w, h = (int(entry[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    return (x, y, x + w, y + h)


def _visual_genome(file: str, type_of, macro):
    def build(root: Path, req: Request):
        need(root, file, "images")
        images, items = _Images(), []
        for entry in json.loads((root / file).read_text(encoding="utf-8")):
            image = images.add(root / "images" / entry["image_path"], _box(entry))
            items.append({"image": image, "captions": [entry["true_caption"], entry["false_caption"]],
                          "type": type_of(entry)})  # fmt: skip
        items = _limit(items, req)
        return CompositionalSet("", images.paths, items, boxes=images.boxes, macro=macro())

    return build


def _relation(entry: dict) -> str:
    return entry["relation_name"]


def _attributes(entry: dict) -> str:
    return f"{entry['attributes'][0]}_{entry['attributes'][1]}"


def symmetric_relations() -> list[str]:
    """The relations ARO leaves out of VG-Relation's macro accuracy (its replication notebook)."""
    return json.loads((ASSETS / "aro.json").read_text())["vg_relation_excluded"]


ARO_SOURCE = "https://github.com/mertyg/vision-language-models-are-bows (its README links the files)"
register_benchmark(
    "vg_relation",
    task="compositional",
    layout="visual_genome_relation.json + images/ (ARO's VG-Relation files)",
    source=ARO_SOURCE,
)(_visual_genome("visual_genome_relation.json", _relation, lambda: {"exclude": symmetric_relations()}))
register_benchmark(
    "vg_attribution",
    task="compositional",
    layout="visual_genome_attribution.json + images/ (ARO's VG-Attribution files)",
    source=ARO_SOURCE,
)(_visual_genome("visual_genome_attribution.json", _attributes, lambda: {"min_count": 25}))


# --- ARO's order sets: each caption against four shuffles of its words ------------------------


def pre_caption(caption: str, max_words: int = 30) -> str:
    """ARO's caption normalisation: lower case, some punctuation to spaces, at most ``max_words``."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


NOUNS, ADJECTIVES = ("NN", "NNS", "NNP", "NNPS"), ("JJ", "JJR", "JJS")


def _trigrams(tokens: list[str]) -> list[list[str]]:
    return [tokens[i : i + 3] for i in range(0, len(tokens), 3)]


def order_perturbations(caption: str, tagged, tokens, np_rng, py_rng) -> list[str]:
    """ARO's four shuffles of ``caption``: nouns among nouns and adjectives among adjectives;
    every other word; words within each trigram; the trigrams. ``tagged``: (word, Penn tag) pairs
    from spaCy; ``tokens``: nltk's word tokens; the random streams as ARO draws them (numpy for the
    first two, Python's ``random`` for the trigram shuffles)."""
    words = np.array([w for w, _ in tagged], dtype=object)
    tags = [t for _, t in tagged]
    nouns = [i for i, t in enumerate(tags) if t in NOUNS]
    adjectives = [i for i, t in enumerate(tags) if t in ADJECTIVES]
    a = words.copy()
    a[nouns] = np_rng.permutation(a[nouns])
    a[adjectives] = np_rng.permutation(a[adjectives])
    b = words.copy()
    others = np.array([t not in NOUNS + ADJECTIVES for t in tags], dtype=bool)
    b[others] = np_rng.permutation(b[others])
    within = _trigrams(list(tokens))
    for trigram in within:
        py_rng.shuffle(trigram)
    across = _trigrams(list(tokens))
    py_rng.shuffle(across)
    return [" ".join(a), " ".join(b), " ".join(w for t in within for w in t), " ".join(w for t in across for w in t)]


def _make_order_cases(annotations: list[dict], seed: int = 1) -> list[dict]:
    """ARO's test cases (the caption, then its four shuffles, each normalised), with spaCy's
    ``en_core_web_sm`` tagger and nltk's tokenizer, as ARO makes them."""
    try:
        import nltk
        import spacy

        nlp = spacy.load("en_core_web_sm")
        nltk.word_tokenize("a test")
    except (ImportError, OSError, LookupError):
        raise Missing(
            "<split>_order cases: ARO shuffles captions with spaCy and nltk (pip install spacy nltk; python -m spacy "
            "download en_core_web_sm; nltk.download('punkt')), or give the cases file"
        ) from None
    np_rng, py_rng = np.random.RandomState(seed), random.Random(seed)
    cases = []
    for ann in annotations:
        for caption in ann["caption"]:
            tagged = [(t.text, t.tag_) for t in nlp(caption)]
            shuffled = order_perturbations(caption, tagged, nltk.word_tokenize(caption), np_rng, py_rng)
            cases.append({"image": ann["image"], "caption_options": [pre_caption(c) for c in [caption, *shuffled]]})
    return cases


def _order(name: str, annotations: str):
    def build(root: Path, req: Request):
        cases_file = root / f"{name}_test.json"
        if not cases_file.is_file():
            need(root, annotations)
            cases = _make_order_cases(json.loads((root / annotations).read_text(encoding="utf-8")))
            cases_file.write_text(json.dumps(cases))  # made once: spaCy is slow
        images, items = _Images(), []
        for case in json.loads(cases_file.read_text(encoding="utf-8")):
            items.append({"image": images.add(root / case["image"]), "captions": case["caption_options"],
                          "type": "all"})  # fmt: skip
        return CompositionalSet("", images.paths, _limit(items, req), ties="right")

    return build


register_benchmark(
    "coco_order",
    task="compositional",
    layout="coco_order_test.json (the test cases: image, caption_options), or coco_karpathy_test.json (ARO's "
    "annotations; the cases are made with spaCy and nltk) + the images it names (val2014/...)",
    source=ARO_SOURCE,
)(_order("coco_order", "coco_karpathy_test.json"))
register_benchmark(
    "flickr30k_order",
    task="compositional",
    layout="flickr30k_order_test.json (the test cases), or flickr30k_test.json (ARO's annotations; the cases are "
    "made with spaCy and nltk) + the images it names (flickr30k-images/...)",
    source=ARO_SOURCE,
)(_order("flickr30k_order", "flickr30k_test.json"))


# --- Winoground ---------------------------------------------------------------------------------


def _image_file(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.png", folder / name, folder / f"{name}.jpg"):
        if candidate.is_file():
            return candidate
    return folder / f"{name}.png"


@register_benchmark(
    "winoground",
    task="compositional",
    layout="examples.jsonl + images/<image>.png, or data/{examples.jsonl,images/} (the facebook/winoground files)",
    source="https://huggingface.co/datasets/facebook/winoground",
)
def winoground(root: Path, req: Request):
    base = root / "data" if (root / "data" / "examples.jsonl").is_file() else root
    need(base, "examples.jsonl", "images")
    images, items = _Images(), []
    for line in (base / "examples.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            ex = json.loads(line)
            pair = [images.add(_image_file(base / "images", ex[f"image_{k}"])) for k in (0, 1)]
            kind = ex.get("collapsed_tag") or ex.get("tag") or "all"
            items.append({"images": pair, "captions": [ex["caption_0"], ex["caption_1"]], "type": kind})
    return CompositionalSet("winoground", images.paths, _limit(items, req), scoring="winoground")
