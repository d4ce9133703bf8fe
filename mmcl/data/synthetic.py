"""Generated captioned shape scenes: a deterministic image-text corpus with known ground truth.

Each scene has one or two objects on a plain background (up to ``max_objects``, at most 9, when
that is raised). An object has a colour, a shape and a size; the first object also has a position
on a 3x3 grid, and a second object is described by its spatial relation to the first. Every object
has a cell of its own; in scenes of three or more, the caption gives each object's own position.
Captions are rendered from several paraphrase templates, so the same scene can be described in
different words, and every item carries a canonical ``key`` that identifies what its caption says
(two items with the same key are true matches).

Splits:
    train: scenes that never use a held-out (colour, shape) combination.
    test:  unseen scenes from the training distribution.
    novel: scenes whose first object is a held-out (colour, shape) combination.

Single-object scenes carry a class label (colour x shape) for zero-shot classification; scenes of
two or more objects carry label -1 (ignored by classification evaluators).

The generator is pure: ``generate_scene(seed, index, ...)`` depends only on its arguments, so any
subset of any split can be regenerated exactly, in memory or on disk.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..recipe import SyntheticConfig

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 220, 50),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.10, "medium": 0.145, "large": 0.19}  # radius as a fraction of the image side
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
# One held-out (colour, shape) pair per shape; every colour and shape still appears in training.
HELD_OUT = (("red", "triangle"), ("green", "star"), ("blue", "circle"), ("yellow", "square"))

SINGLE_TEMPLATES = (
    "a {o} {at}",
    "there is a {o} {at}",
    "{at_cap}, a {o}",
    "a picture of a {o} {at}",
)
PAIR_TEMPLATES = (
    "a {o1} {at}, {rel} a {o2}",
    "a {o2} {inv} a {o1} {at}",
    "there is a {o1} {at} {rel} a {o2}",
    "{at_cap} a {o1} sits {rel} a {o2}",
)
# Short captions (no size or position) teach the text tower that a bare "red circle" names the
# object, which is what zero-shot prompts look like.
SHORT_SINGLE = "a {c} {s}"
SHORT_PAIR = "a {c1} {s1} {rel} a {c2} {s2}"
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

ZEROSHOT_TEMPLATES = (
    "a {}",
    "a {}.",
    "a picture of a {}.",
    "there is a {}.",
)


def class_names() -> list[str]:
    """The zero-shot classes: every colour x shape, in a fixed order."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


@dataclass
class Scene:
    """Everything known about one generated item."""

    caption: str
    key: str
    label: int
    objects: list[dict] = field(default_factory=list)


def _position_at(cell: tuple[int, int]) -> str:
    name = POSITIONS[cell[0]][cell[1]]
    return "in the centre" if name == "centre" else f"at the {name}"


def _relation(a: tuple[int, int], b: tuple[int, int]) -> str:
    """Relation of object a to object b (grid cells as (row, col))."""
    drow, dcol = b[0] - a[0], b[1] - a[1]
    if abs(dcol) >= abs(drow):
        return "left of" if dcol > 0 else "right of"
    return "above" if drow > 0 else "below"


def _split_offset(split: str) -> int:
    return {"train": 0, "test": 1, "novel": 2}[split]


def sample_scene(
    rng: np.random.Generator, split: str, single_fraction: float, short_caption_prob: float, max_objects: int = 2
) -> Scene:
    """Draw the attributes and caption of one scene: one object with probability ``single_fraction``,
    else 2 (``max_objects`` 2, the default) or a uniform count in 2..``max_objects``."""
    colours, classes = list(COLOURS), class_names()
    held = set(HELD_OUT)
    n_obj = 1 if rng.random() < single_fraction else 2
    if n_obj == 2 and max_objects > 2:  # drawn only then, so max_objects 2 keeps the corpora written before it
        n_obj = int(rng.integers(2, max_objects + 1))
    objects = []
    cells = [(r, c) for r in range(3) for c in range(3)]
    first_cell = cells[rng.integers(9)]
    for i in range(n_obj):
        while True:
            colour, shape = colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))]
            combo_held = (colour, shape) in held
            if split == "novel" and i == 0:
                ok = combo_held
            else:
                ok = not combo_held
            if ok:
                break
        size = list(SIZES)[rng.integers(len(SIZES))]
        if i == 0:
            cell = first_cell
        else:
            taken = {tuple(o["cell"]) for o in objects}
            others = [c for c in cells if c not in taken]
            cell = others[rng.integers(len(others))]
        objects.append({"colour": colour, "shape": shape, "size": size, "cell": list(cell)})

    o1 = objects[0]
    at = _position_at(tuple(o1["cell"]))
    desc1 = f"{o1['size']} {o1['colour']} {o1['shape']}"
    short = rng.random() < short_caption_prob
    if n_obj == 1:
        key = f"{desc1}|{at}"
        label = classes.index(f"{o1['colour']} {o1['shape']}")
        if short:
            caption = SHORT_SINGLE.format(c=o1["colour"], s=o1["shape"])
        else:
            t = SINGLE_TEMPLATES[rng.integers(len(SINGLE_TEMPLATES))]
            caption = t.format(o=desc1, at=at, at_cap=at[0].upper() + at[1:])
    elif n_obj > 2:
        key, caption = _many_objects_caption(objects, short)
        label = -1
    else:
        o2 = objects[1]
        rel = _relation(tuple(o1["cell"]), tuple(o2["cell"]))
        desc2 = f"{o2['size']} {o2['colour']} {o2['shape']}"
        key = f"{desc1}|{at}|{rel}|{desc2}"
        label = -1
        if short:
            caption = SHORT_PAIR.format(c1=o1["colour"], s1=o1["shape"], rel=rel, c2=o2["colour"], s2=o2["shape"])
        else:
            t = PAIR_TEMPLATES[rng.integers(len(PAIR_TEMPLATES))]
            caption = t.format(o1=desc1, o2=desc2, at=at, rel=rel, inv=INVERSE[rel], at_cap=at[0].upper() + at[1:])
    if rng.random() < 0.5:  # captions in the wild end with or without a full stop
        caption += "."
    return Scene(caption=caption, key=key, label=label, objects=objects)


def _many_objects_caption(objects: list[dict], short: bool) -> tuple[str, str]:
    """Key and caption of a scene of three or more objects: every object with its own position
    (short: colour and shape only), in drawing order."""
    parts = [(f"{o['size']} {o['colour']} {o['shape']}", _position_at(tuple(o["cell"]))) for o in objects]
    key = "|".join(f"{desc}|{at}" for desc, at in parts)
    if short:
        named = [f"a {o['colour']} {o['shape']}" for o in objects]
    else:
        named = [f"a {desc} {at}" for desc, at in parts]
    return key, ", ".join(named[:-1]) + " and " + named[-1]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def render_scene(
    scene: Scene, rng: np.random.Generator, image_size: int, sketch: bool = False, mask: bool = False
) -> Image.Image:
    """Draw a scene: jittered background, colours, positions and sizes. ``sketch``: the same
    geometry (for the same ``rng`` state) as black outlines on white, without colour. ``mask``: the
    same geometry as a segmentation mask ('L' image): 0 background, 1 + the object's colour x shape
    class elsewhere (a later object covers an earlier one, as in the image)."""
    bg = int(rng.integers(15, 70))
    if mask:
        img = Image.new("L", (image_size, image_size), 0)
    else:
        img = Image.new("RGB", (image_size, image_size), (255, 255, 255) if sketch else (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    style = {"fill": None, "outline": (0, 0, 0), "width": max(1, image_size // 32)} if sketch else {}
    cell = image_size / 3
    classes = class_names()
    for obj in scene.objects:
        r = SIZES[obj["size"]] * image_size * float(rng.uniform(0.9, 1.1))
        jitter = cell * 0.18
        cx = (obj["cell"][1] + 0.5) * cell + float(rng.uniform(-jitter, jitter))
        cy = (obj["cell"][0] + 0.5) * cell + float(rng.uniform(-jitter, jitter))
        base = np.array(COLOURS[obj["colour"]])
        fill = tuple(int(v) for v in np.clip(base + rng.integers(-18, 19, size=3), 0, 255))
        if mask:
            fill = 1 + classes.index(f"{obj['colour']} {obj['shape']}")
        kw = style or {"fill": fill}
        shape = obj["shape"]
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], **kw)
        elif shape == "square":
            h = r * 0.88
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], **kw)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.85), (cx + r, cy + r * 0.85)], **kw)
        elif shape == "star":
            draw.polygon(_star(cx, cy, r * 1.1), **kw)
    return img


def generate_scene(
    seed: int, split: str, index: int, cfg: SyntheticConfig, sketch: bool = False, mask: bool = False
) -> tuple[Image.Image, Scene]:
    """Item ``index`` of ``split``: a pure function of its arguments. ``sketch``: the item's line
    drawing instead (the same objects at the same places); ``mask``: its segmentation mask."""
    rng = np.random.default_rng([seed, _split_offset(split), index])
    short = cfg.short_caption_prob if split == "train" else 0.0
    scene = sample_scene(rng, split, cfg.single_fraction, short, cfg.max_objects)
    return render_scene(scene, rng, cfg.image_size, sketch=sketch, mask=mask), scene


def _manifest(cfg: SyntheticConfig) -> dict:
    params = asdict(cfg)
    params.pop("root")
    for option, default in (("sketch", False), ("masks", False), ("max_objects", 2)):
        if params[option] == default:  # corpora written before these options existed stay current
            params.pop(option)
    return {"generator": "mmcl.shapes.v2", "params": params}


def corpus_is_current(cfg: SyntheticConfig) -> bool:
    """True when ``cfg.root`` already holds a corpus made with exactly these parameters."""
    path = Path(cfg.root) / "manifest.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == _manifest(cfg)
    except (OSError, json.JSONDecodeError):
        return False


def make_corpus(cfg: SyntheticConfig, progress: bool = True) -> Path:
    """Write the corpus to ``cfg.root``: PNG images, one CSV per split, class names and templates.

    CSV columns: ``filepath`` (relative to the CSV), ``title``, ``label``, ``key``, and with
    ``sketch: true`` also ``sketch`` (the scene's line drawing, a paired image modality), and with
    ``masks: true`` also ``mask`` (its segmentation mask, see :func:`render_scene`). The manifest is
    written last, so an interrupted generation is redone rather than trusted.
    """
    from tqdm.auto import tqdm

    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    sizes = {"train": cfg.n_train, "test": cfg.n_test, "novel": cfg.n_novel}
    for split, n in sizes.items():
        img_dir = root / split
        img_dir.mkdir(exist_ok=True)
        rows = []
        for i in tqdm(range(n), desc=f"shapes/{split}", disable=not progress, unit="img"):
            img, scene = generate_scene(cfg.seed, split, i, cfg)
            rel = f"{split}/{i:07d}.png"
            img.save(root / rel, optimize=False, compress_level=1)
            rows.append({"filepath": rel, "title": scene.caption, "label": scene.label, "key": scene.key})
            for column, wanted, kind in (("sketch", cfg.sketch, "sketch"), ("mask", cfg.masks, "mask")):
                if wanted:
                    rows[-1][column] = f"{split}/{i:07d}-{kind}.png"
                    extra, _ = generate_scene(cfg.seed, split, i, cfg, **{kind: True})
                    extra.save(root / rows[-1][column], compress_level=1)
        tmp = root / f".{split}.csv.tmp"
        columns = ["filepath", "title", "label", "key"] + ["sketch"] * cfg.sketch + ["mask"] * cfg.masks
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, root / f"{split}.csv")
    (root / "classnames.txt").write_text("\n".join(class_names()) + "\n")
    (root / "templates.txt").write_text("\n".join(ZEROSHOT_TEMPLATES) + "\n")
    (root / "manifest.json").write_text(json.dumps(_manifest(cfg), indent=2))
    return root


def ensure_corpus(cfg: SyntheticConfig, progress: bool = True) -> Path:
    """Generate the corpus unless an identical one is already on disk."""
    if not corpus_is_current(cfg):
        make_corpus(cfg, progress=progress)
    return Path(cfg.root)
