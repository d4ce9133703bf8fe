"""Compositional evaluation: does the model prefer the true caption over minimally changed ones?

Each item is an image, its true caption and one or more hard-negative captions (SugarCrepe's
shape). An item is correct when the true caption scores strictly higher than every negative; the
metric is the accuracy, overall (``acc``) and per item type (``acc/<type>``).

Files are JSON (a list), JSONL or CSV with an image column (``filepath`` or ``image``), a caption
column (``caption``, ``positive`` or ``title``), negatives (``negatives``: a list, or in CSV a
``|``-separated string, or any columns whose names start with ``negative``) and an optional
``type``. :func:`shapes_compositional_items` writes such a file for the generated shapes corpus.

Benchmarks read in their own files (:mod:`mmcl.data.benchmarks.compositional`: SugarCrepe, ARO's
VG-Relation, VG-Attribution, COCO-Order and Flickr30k-Order, Winoground) are scored by their own
definitions: :func:`choice_metrics` (the true caption against its negatives, ties and macro
averages as each benchmark counts them) and :func:`winoground_metrics` (text, image and group
scores); :func:`evaluate_benchmark` encodes a set and scores it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch

from ..data.csv_jsonl import read_table
from ..data.evalsets import EvalDataset, _open_image, _Source
from ..errors import ConfigError
from .encode import encode_dataset


class _PathImages(_Source, torch.utils.data.Dataset):
    def __init__(self, root: Path, paths: list[str]):
        self.root, self.paths = root, paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.root / self.paths[i]
        if not path.is_file():
            return None, "missing_image"
        return self._item(_open_image(path), [], i)


def read_items(path: str | Path) -> list[dict]:
    """Items ``{"image", "caption", "negatives", "type"}`` from a JSON/JSONL/CSV file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"compositional file {str(path)!r} not found")
    rows = (
        json.loads(path.read_text())
        if path.suffix == ".json"
        else read_table(path, "\t" if path.suffix == ".tsv" else ",")
    )
    if not rows:
        raise ConfigError(f"{path}: no items")
    columns = list(rows[0])

    def pick(options):
        found = next((c for c in options if c in columns), None)
        if found is None:
            raise ConfigError(f"{path}: needs one of the columns {', '.join(options)}; available: {', '.join(columns)}")
        return found

    image_col, caption_col = pick(("filepath", "image")), pick(("caption", "positive", "title"))
    neg_cols = [c for c in columns if c.startswith("negative")]
    if not neg_cols:
        raise ConfigError(f"{path}: no negatives column (negatives, or negative_*); available: {', '.join(columns)}")
    items = []
    for r in rows:
        negs = []
        for c in neg_cols:
            v = r.get(c)
            if isinstance(v, list):
                negs.extend(v)
            elif v:
                negs.extend(v.split("|") if c == "negatives" else [v])
        negs = [n.strip() for n in negs if n and n.strip()]
        if negs and str(r[caption_col]).strip():
            items.append(
                {
                    "image": str(r[image_col]),
                    "caption": str(r[caption_col]).strip(),
                    "negatives": negs,
                    "type": str(r.get("type") or "all"),
                }
            )
    return items


def compositional_accuracy(image_features, caption_features, negative_features, negative_owner, types) -> dict:
    """Accuracy from features: item i is right when its caption outscores all its negatives.

    Args:
        image_features: (N, D) the image of each item; caption_features: (N, D);
        negative_features: (M, D); negative_owner: (M,) item index of each negative; types: N names.
    """
    pos = (image_features * caption_features).sum(1)
    neg = (image_features[negative_owner] * negative_features).sum(1)
    best_neg = torch.full_like(pos, -float("inf")).scatter_reduce(0, negative_owner, neg, reduce="amax")
    correct = (pos > best_neg).tolist()
    out = {"acc": sum(correct) / len(correct), "num_items": len(correct)}
    by_type = defaultdict(list)
    for t, c in zip(types, correct):
        by_type[t].append(c)
    if len(by_type) > 1:
        out.update({f"acc/{t}": sum(v) / len(v) for t, v in sorted(by_type.items())})
    return out


def evaluate_compositional(adapter, path, image_root=None, batch_size=64, num_workers=0, progress=True) -> dict:
    """Compositional accuracy of ``adapter`` on the items of ``path`` (see the module docstring)."""
    items = read_items(path)
    root = Path(image_root) if image_root else Path(path).parent
    paths = sorted({it["image"] for it in items})
    data = EvalDataset(Path(path).stem, "compositional", _PathImages(root, paths))
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=False, progress=progress)
    row_of = {paths[int(i)]: n for n, i in enumerate(enc.labels)}
    items = [it for it in items if it["image"] in row_of]
    captions = [it["caption"] for it in items]
    negatives = [n for it in items for n in it["negatives"]]
    owner = torch.tensor([i for i, it in enumerate(items) for _ in it["negatives"]])

    def texts(strings):
        return torch.cat(
            [adapter.encode_text(strings[s : s + batch_size]).cpu() for s in range(0, len(strings), batch_size)]
        )

    image_features = enc.image_features[[row_of[it["image"]] for it in items]]
    metrics = compositional_accuracy(
        image_features, texts(captions), texts(negatives), owner, [it["type"] for it in items]
    )
    if enc.skipped:
        metrics["skipped"] = enc.skipped
    return metrics


MAX_TYPES_LISTED = 20  # per-type accuracies in the metrics (VG-Relation has hundreds of relations: macro only)


def choice_metrics(scores, types: list[str], ties: str = "wrong", macro: dict | None = None) -> dict:
    """Accuracy of items whose true caption must outscore its negatives.

    Args:
        scores: per item, the image's similarity to its true caption first, then to each negative.
        types: per item, its type (a SugarCrepe category, an ARO relation or attribute pair).
        ties: ``"wrong"``: the true caption must score strictly higher (SugarCrepe's ``>``, the
            argmax over [false, true] of ARO's VG sets); ``"right"``: an equal score counts as right
            (the argmax with the true caption first, ARO's order sets).
        macro: the benchmark's headline, the mean of the per-type accuracies (``macro_acc``) over
            the types with at least ``min_count`` items and not in ``exclude``.

    Returns ``acc`` (over items), ``num_items``, ``acc/<type>`` (up to 20 types) and, with
    ``macro``, ``macro_acc`` and ``num_types``.
    """
    correct = []
    for s in scores:
        best = max(s[1:])
        correct.append(s[0] > best if ties == "wrong" else s[0] >= best)
    out = {"acc": sum(correct) / len(correct), "num_items": len(correct)}
    by_type = defaultdict(list)
    for t, c in zip(types, correct):
        by_type[t].append(c)
    if 1 < len(by_type) <= MAX_TYPES_LISTED:
        out.update({f"acc/{t}": sum(v) / len(v) for t, v in sorted(by_type.items())})
    if macro is not None:
        exclude, least = set(macro.get("exclude") or ()), macro.get("min_count", 1)
        kept = [sum(v) / len(v) for t, v in by_type.items() if t not in exclude and len(v) >= least]
        out["macro_acc"] = sum(kept) / len(kept) if kept else float("nan")
        out["num_types"] = len(kept)
    return out


def winoground_metrics(scores, types: list[str] | None = None) -> dict:
    """Winoground's scores from ``scores[n][c][i]``, the similarity of caption ``c`` and image ``i``
    of example ``n`` (caption c goes with image c):

    - text score: each image prefers its own caption, ``s(c0,i0) > s(c1,i0)`` and ``s(c1,i1) > s(c0,i1)``;
    - image score: each caption prefers its own image, ``s(c0,i0) > s(c0,i1)`` and ``s(c1,i1) > s(c1,i0)``;
    - group score: both.

    Returns ``text_score``, ``image_score``, ``group_score``, ``num_items`` and, where the
    examples have types (Winoground's collapsed tags), each score per type."""
    text, image = [], []
    for s in scores:
        text.append(s[0][0] > s[1][0] and s[1][1] > s[0][1])
        image.append(s[0][0] > s[0][1] and s[1][1] > s[1][0])
    group = [a and b for a, b in zip(text, image)]
    out = {}
    for name, values in (("text_score", text), ("image_score", image), ("group_score", group)):
        out[name] = sum(values) / len(values)
    out["num_items"] = len(group)
    by_type = defaultdict(list)
    for n, t in enumerate(types or []):
        by_type[t].append(n)
    if 1 < len(by_type) <= MAX_TYPES_LISTED:
        for t, rows in sorted(by_type.items()):
            for name, values in (("text_score", text), ("image_score", image), ("group_score", group)):
                out[f"{name}/{t}"] = sum(values[n] for n in rows) / len(rows)
    return out


def _encode_texts(adapter, strings: list[str], batch_size: int) -> torch.Tensor:
    steps = range(0, len(strings), batch_size)
    return torch.cat([adapter.encode_text(strings[s : s + batch_size]).cpu() for s in steps])


def evaluate_benchmark(adapter, cset, batch_size=64, num_workers=0, progress=True) -> dict:
    """Score ``adapter`` on a compositional benchmark read from its own files (a
    :class:`~mmcl.data.benchmarks.compositional.CompositionalSet`), by the benchmark's own
    definition. Items whose image cannot be read are left out and counted under ``skipped``."""
    data = EvalDataset(cset.name, "compositional", cset.source)
    enc = encode_dataset(adapter, data, batch_size, num_workers, texts=False, progress=progress)
    row_of = {int(i): n for n, i in enumerate(enc.labels)}
    key = "images" if cset.scoring == "winoground" else "image"
    items = [it for it in cset.items if all(i in row_of for i in (it[key] if key == "images" else [it[key]]))]
    if not items:
        raise ConfigError(f"{cset.name}: none of its items has a readable image ({enc.skipped})")
    texts = sorted({c for it in items for c in it["captions"]})
    text_index = {c: n for n, c in enumerate(texts)}
    text_features = _encode_texts(adapter, texts, batch_size)
    types = [it["type"] for it in items]
    if cset.scoring == "winoground":
        scores = [
            [[float(enc.image_features[row_of[i]] @ text_features[text_index[c]]) for i in it["images"]]
             for c in it["captions"]]
            for it in items
        ]  # fmt: skip
        metrics = winoground_metrics(scores, types)
    else:
        scores = [
            [float(enc.image_features[row_of[it["image"]]] @ text_features[text_index[c]]) for c in it["captions"]]
            for it in items
        ]
        metrics = choice_metrics(scores, types, cset.ties, cset.macro)
    skipped = dict(enc.skipped)
    if len(items) < len(cset.items):
        skipped["items_without_image"] = len(cset.items) - len(items)
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def benchmark_items(name: str, root, out_path) -> Counter:
    """Write the items of a compositional benchmark read in its own files (SugarCrepe, ARO's sets)
    as an items file (JSONL or CSV, :func:`read_items`); image paths relative to the file. ARO's VG
    sets crop each image to a box: the crops are written beside the file (``<out>_crops/``).

    An items file is scored with one rule (the true caption strictly above every negative, no
    macro average); ``mmcl eval compositional --dataset NAME --data-root DIR`` scores a benchmark
    by its own definition. Returns the number of items per type."""
    from ..data.benchmarks import build_benchmark, get_benchmark

    bench = get_benchmark(name)
    if bench.task != "compositional":
        raise ConfigError(f"{bench.name} is a {bench.task} benchmark, not a compositional one")
    cset = build_benchmark(name, root)
    if cset.scoring != "choice":
        raise ConfigError(
            f"{bench.name} pairs two images with two captions, which an items file (one image per item) cannot "
            f"hold; evaluate it by name: mmcl eval compositional --dataset {bench.name} --data-root DIR"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    files = list(cset.images)
    if cset.boxes is not None and any(b is not None for b in cset.boxes):
        crops = out_path.parent / f"{out_path.stem}_crops"
        crops.mkdir(exist_ok=True)
        for i, (path, box) in enumerate(zip(cset.images, cset.boxes)):
            image = _open_image(path)
            if image is not None:
                files[i] = crops / f"{i:06d}.png"
                (image.crop(tuple(box)) if box is not None else image).save(files[i])
    base = out_path.resolve().parent
    out, counts = [], Counter()
    for it in cset.items:
        path = os.path.relpath(Path(files[it["image"]]).resolve(), base)
        captions = it["captions"]
        out.append({"filepath": path, "caption": captions[0], "negatives": list(captions[1:]), "type": it["type"]})
        counts[it["type"]] += 1
    _write_items(out, out_path)
    return counts


def _write_items(items: list[dict], out_path: Path) -> None:
    if out_path.suffix == ".csv":
        with open(out_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["filepath", "caption", "negatives", "type"])
            w.writeheader()
            w.writerows({**o, "negatives": "|".join(o["negatives"])} for o in items)
    else:
        out_path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in items), encoding="utf-8")


def _caption_edits(caption: str, rng: random.Random) -> dict[str, str]:
    """Minimal edits of a shapes caption's own words, by type: ``replace_colour`` / ``replace_shape``
    (the first colour / shape word), ``swap_colours`` (its first two different colour words) and
    ``swap_relation`` (its relation, inverted). Only the edits the caption's words allow."""
    from ..data.synthetic import COLOURS, INVERSE, SHAPES

    def words_of(vocabulary):
        return list(re.finditer(r"\b(" + "|".join(map(re.escape, vocabulary)) + r")\b", caption))

    def put(spans: list[tuple[re.Match, str]]) -> str:
        text, end = [], 0
        for m, word in sorted(spans, key=lambda x: x[0].start()):
            text += [caption[end : m.start()], word]
            end = m.end()
        return "".join(text) + caption[end:]

    edits = {}
    colours, shapes, relations = words_of(COLOURS), words_of(SHAPES), words_of(INVERSE)
    if colours:
        first = colours[0]
        edits["replace_colour"] = put([(first, rng.choice([c for c in COLOURS if c != first.group()]))])
    if shapes:
        first = shapes[0]
        edits["replace_shape"] = put([(first, rng.choice([x for x in SHAPES if x != first.group()]))])
    other = next((m for m in colours[1:] if m.group() != colours[0].group()), None) if colours else None
    if other is not None:
        edits["swap_colours"] = put([(colours[0], other.group()), (other, colours[0].group())])
    if relations:
        edits["swap_relation"] = put([(relations[0], INVERSE[relations[0].group()])])
    return edits


def _parse_key(key: str) -> tuple[list[dict], str, str | None]:
    """Objects, position phrase and relation from a shapes-corpus ``key`` of a one- or two-object
    scene (crowded scenes' keys have another layout: a ValueError)."""
    parts = key.split("|")
    if len(parts) not in (2, 4):
        raise ValueError(
            f"key {key!r} describes a scene of {len(parts) // 2} objects; compositional items are made for "
            "scenes of one or two objects (make-synthetic --max-objects 2)"
        )

    def obj(desc):
        size, colour, shape = desc.split(" ")
        return {"size": size, "colour": colour, "shape": shape}

    if len(parts) == 2:
        return [obj(parts[0])], parts[1], None
    return [obj(parts[0]), obj(parts[3])], parts[1], parts[2]


def _caption(objects: list[dict], at: str, rel: str | None) -> str:
    d = [f"{o['size']} {o['colour']} {o['shape']}" for o in objects]
    return f"a {d[0]} {at}" if rel is None else f"a {d[0]} {at}, {rel} a {d[1]}"


EDIT_TYPES = ("replace_colour", "replace_shape", "swap_colours", "swap_relation")


def shapes_compositional_items(
    csv_path: str | Path,
    out_path: str | Path,
    seed: int = 0,
    merge: bool = False,
    keep_captions: bool = False,
    prefer: tuple[str, ...] = (),
) -> Counter:
    """Write compositional items for a shapes-corpus split (``mmcl data make-synthetic``).

    Every item's true caption is rendered canonically from the scene's key, and each negative
    changes exactly one thing: ``replace_colour`` / ``replace_shape`` (first object), and for
    two-object scenes ``swap_colours`` (the objects exchange colours) and ``swap_relation`` (the
    relation is inverted). Returns the number of items per type.

    ``merge``: one row per image with all its negatives (type ``all``), the layout of training data
    for NegCLIP-style fine-tuning (``data.negatives_key: negatives``). ``keep_captions`` (with
    ``merge``): each row keeps its own caption (``title``: short, paraphrased, ...) as the positive,
    and its negatives are the same kinds of edits made to that caption's own words (NegCLIP's
    recipe): a colour or shape word replaced, the two colour words swapped, the relation inverted.
    A caption with no colour or shape word gets the canonical negatives instead. ``prefer`` (with
    ``merge``): keep only these types of negative where a row has one, all its negatives otherwise
    (e.g. the swaps, which one-object captions cannot have).
    """
    unknown = sorted(set(prefer) - set(EDIT_TYPES))
    if unknown:
        raise ConfigError(f"prefer: unknown negative types {unknown}; valid choices: {', '.join(EDIT_TYPES)}")
    from ..data.synthetic import COLOURS, INVERSE, SHAPES

    rng = random.Random(seed)
    out_path = Path(out_path)
    # Image paths in the output are relative to the output file's folder.
    image_dir = os.path.relpath(Path(csv_path).resolve().parent, out_path.resolve().parent)
    rows = read_table(csv_path)
    if rows and "key" not in rows[0]:
        raise ConfigError(
            f"{csv_path}: no 'key' column; this generator needs a shapes-corpus CSV (mmcl data make-synthetic). "
            "SugarCrepe, ARO and Winoground are read in their own files: mmcl eval compositional --dataset NAME "
            "--data-root DIR, or make-compositional --benchmark NAME DIR OUT for an items file"
        )
    out, counts = [], Counter()
    for r in rows:
        try:
            objects, at, rel = _parse_key(r["key"])
        except ValueError as e:
            raise ConfigError(f"{csv_path}: {e}") from None
        true = _caption(objects, at, rel)
        variants = {}
        first = objects[0]
        colour = rng.choice([c for c in COLOURS if c != first["colour"]])
        variants["replace_colour"] = _caption([{**first, "colour": colour}, *objects[1:]], at, rel)
        shape = rng.choice([s for s in SHAPES if s != first["shape"]])
        variants["replace_shape"] = _caption([{**first, "shape": shape}, *objects[1:]], at, rel)
        if rel is not None:
            a, b = objects
            if a["colour"] != b["colour"]:
                variants["swap_colours"] = _caption(
                    [{**a, "colour": b["colour"]}, {**b, "colour": a["colour"]}], at, rel
                )
            variants["swap_relation"] = _caption(objects, at, INVERSE[rel])
        if merge:
            path = os.path.normpath(os.path.join(image_dir, r["filepath"]))
            caption, edits = true, variants
            if keep_captions:
                caption = r["title"]
                edits = _caption_edits(caption, rng) or variants
            chosen = {k: v for k, v in edits.items() if k in prefer}
            negatives = list((chosen or edits).values())
            out.append({"filepath": path, "caption": caption, "negatives": negatives, "type": "all"})
            counts["all"] += 1
            continue
        for kind, negative in variants.items():
            out.append(
                {
                    "filepath": os.path.normpath(os.path.join(image_dir, r["filepath"])),
                    "caption": true,
                    "negatives": [negative],
                    "type": kind,
                }
            )
            counts[kind] += 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_items(out, out_path)
    return counts
