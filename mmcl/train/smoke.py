"""``mmcl train RECIPE --smoke``: run any recipe for 2 steps on a tiny generated corpus, on the CPU.

It checks that a recipe is whole (model, loss, optimiser, schedule, evaluation) before a long run
or a cluster job, on a laptop. The recipe's model and loss are kept as written. What needs data
or files the machine may not have is replaced:

- ``data``: a 48-pair generated captioned-shapes corpus (CSV), batch 4, no workers; the data
  section's augmentation and sampler are kept; a recipe with ``negatives_key`` gets the corpus's
  hard-negative captions (``make-compositional --merge``);
- ``model.vision.weights``, ``model.init_from`` and an open_clip ``model.pretrained`` file: dropped
  (random init); ViTs run at 64 px (same layers and widths, fewer patches);
- ``train``: 2 steps, CPU, fp32, no torch.compile, a checkpoint at step 2, into
  ``train.output_dir`` (default ``runs/smoke/<name>``);
- ``eval``: retrieval and zero-shot on the corpus's 16 held-out pairs; image-image models
  (``model.kind: image_image``) get kNN, image <-> sketch retrieval when they train on pairs (the
  corpus draws every scene as a sketch too, column ``sketch``), and the per-pixel probe when they
  have a dense head (on the corpus's masks, column ``mask``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..recipe import Recipe, SyntheticConfig, read_recipe_data, recipe_from_dict

SMOKE_TRAIN = {
    "steps": 2,
    "warmup_steps": 1,
    "accumulation_steps": 1,
    "precision": "fp32",
    "cpu": True,
    "compile": False,
    "checkpoint_every": 2,
    "log_every": 1,
    "resume": None,
    "stop_at_step": None,
    "trackers": ["jsonl"],
    "progress": False,
    "overwrite": True,  # a smoke run is thrown away: the next one replaces it
}


def smoke_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """The recipe at ``path`` (with ``overrides``), switched to its smoke-test size."""
    from ..data.synthetic import ensure_corpus

    data = read_recipe_data(path, overrides)
    name = data.get("name", Path(path).stem)
    train = dict(data.get("train") or {})
    out = Path((train.get("output_dir") or "runs/smoke/{name}").replace("{name}", name))
    corpus = ensure_corpus(
        SyntheticConfig(
            root=str(out / "data"), n_train=48, n_test=16, n_novel=8, image_size=32, sketch=True, masks=True
        ),
        progress=False,
    )
    old_data = data.get("data") or {}
    image_image = (data.get("model") or {}).get("kind") == "image_image"
    data["data"] = {
        "train": str(corpus / "train.csv"),
        "batch_size": 4,
        "num_workers": 0,
        "augment": old_data.get("augment", {}),
        **{k: old_data[k] for k in ("sampler", "sampler_kwargs") if k in old_data},
    }
    if image_image:  # labels (SupCon) and the paired image column (sketch) from the generated corpus
        data["data"]["label_key"] = "label"
        if old_data.get("image2_key"):
            data["data"]["image2_key"] = "sketch"
    if old_data.get("negatives_key"):  # NegCLIP-style recipes: the corpus's own hard-negative captions
        from ..eval.compositional import shapes_compositional_items

        merged = out / "data" / "train-negatives.jsonl"
        shapes_compositional_items(corpus / "train.csv", merged, merge=True)
        data["data"].update(train=str(merged), caption_key="caption", negatives_key="negatives")
    model = dict(data.get("model") or {})
    model["init_from"] = None
    vision = {**(model.get("vision") or {}), "weights": None}
    if str(vision.get("name", "")).startswith(("vit_", "deit", "eva", "beit")):
        vision["kwargs"] = {**(vision.get("kwargs") or {}), "img_size": 64}
        vision["image_size"] = 64
    model["vision"] = vision
    if model.get("backend") == "open_clip" and not str(model.get("name", "")).startswith("hf-hub:"):
        # an architecture name and a weights file: random init (no file needed), images at 64 px
        model["pretrained"] = None
        model["kwargs"] = {**(model.get("kwargs") or {}), "force_image_size": 64}
    data["model"] = model
    data["train"] = {**train, **SMOKE_TRAIN, "output_dir": str(out / "run")}
    dataset = {"name": "smoke", "path": str(corpus / "test.csv")}
    if image_image:  # kNN, and image <-> sketch retrieval for paired recipes
        paired = ["image_retrieval"] if old_data.get("image2_key") else []
        dense = ["dense_probe"] if model.get("dense") else []  # a dense head: the per-pixel probe too
        dataset.update(
            tasks=["knn", *paired, *dense], train_path=str(corpus / "train.csv"), image2_key="sketch", mask_key="mask"
        )
    else:
        dataset.update(
            tasks=["zeroshot", "retrieval"],
            classnames=str(corpus / "classnames.txt"),
            templates=str(corpus / "templates.txt"),
        )
    data["eval"] = {"batch_size": 16, "datasets": [dataset]}
    return recipe_from_dict(data)
