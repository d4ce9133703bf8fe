"""Whether a recipe's ``eval.datasets`` can run: task names, what each task needs, and whether the
model has the towers a task reads."""

from __future__ import annotations

from ..errors import ConfigError
from ..recipe import Recipe

TASKS = ("zeroshot", "retrieval", "knn", "linear_probe", "compositional", "image_retrieval", "dense_probe", "finetune")
# tasks that read images only (no text tower needed)
IMAGE_TASKS = ("knn", "linear_probe", "image_retrieval", "dense_probe", "finetune")
# task -> (key of the dataset entry it needs, what that key is)
NEEDS = {
    "zeroshot": [("classnames", "classnames file"), ("templates", "templates file")],
    "knn": [("train_path", "training set")],
    "linear_probe": [("train_path", "training set")],
    "dense_probe": [("train_path", "training set"), ("mask_key", "column of segmentation masks")],
    "finetune": [("train_path", "training set")],
    "compositional": [("compositional", "compositional items file (mmcl data make-compositional)")],
    "image_retrieval": [("image2_key", "column of the paired image")],
}


def check_eval(recipe: Recipe) -> None:
    """Raise :class:`ConfigError` for an ``eval.datasets`` entry that cannot run."""
    image_only = recipe.model.kind == "image_image"
    for i, ds in enumerate(recipe.eval.datasets):
        key = f"eval.datasets[{i}]"
        for task in ds.tasks:
            if task not in TASKS:
                raise ConfigError(f"{key}.tasks: {task!r} is not an evaluation task; valid choices: {', '.join(TASKS)}")
            for attr, what in NEEDS.get(task, []):
                if getattr(ds, attr) is None:
                    raise ConfigError(f"{key}: the {task} task needs {attr} (the {what})")
        if image_only:
            bad = sorted(set(ds.tasks) - set(IMAGE_TASKS))
            if bad:
                raise ConfigError(
                    f"{key}.tasks: {bad} need a text tower; an image_image model supports: {', '.join(IMAGE_TASKS)}"
                )
