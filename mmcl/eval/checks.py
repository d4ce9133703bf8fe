"""Whether a recipe's ``eval.datasets`` can run, from what each registered task declares
(:class:`~mmcl.eval.tasks.EvalTask`): its name, the keys it needs, the data sources it reads, and
whether it needs a text tower."""

from __future__ import annotations

from pathlib import Path

from ..data.benchmarks import is_benchmark
from ..data.sources import check_source, detect_source
from ..errors import ConfigError
from ..recipe import EvalDatasetConfig, Recipe
from .tasks import get_task, ordered_tasks


def check_eval_dataset(ds: EvalDatasetConfig, key: str, image_only: bool = False, generated: bool = False) -> None:
    """Raise :class:`ConfigError` when an evaluation dataset entry cannot run: an unknown source or
    task, a key a task needs, a task's own check, a text task on an image-only model, data a task
    cannot read. ``generated``: the data is a corpus the run generates before training (its files
    do not exist yet), so the tasks' own checks of the files wait for the run."""
    check_source(ds.kind, f"{key}.kind", benchmarks=True)
    if ds.download and not is_benchmark(ds.kind):
        raise ConfigError(f"{key}.download: only a benchmark fetches its files (kind: cifar10, ...); kind is {ds.kind}")
    tasks = [get_task(name, f"{key}.tasks") for name in ds.tasks]
    for task in tasks:
        for need in task.needs:
            if getattr(ds, need.key) is None:
                raise ConfigError(f"{key}: the {task.name} task needs {need.key} ({need.what})")
    if image_only:
        bad = sorted(t.name for t in tasks if t.text_tower)
        if bad:
            image_tasks = [n for n in ordered_tasks() if not get_task(n).text_tower]
            raise ConfigError(
                f"{key}.tasks: {bad} need a text tower; an image_image model supports: {', '.join(image_tasks)}"
            )
    if not generated:
        for task in tasks:
            task.check(ds, key)
    # a source restriction can be checked once the format is known (a generated corpus may not exist yet)
    kind = ds.kind
    if kind == "auto" and (Path(ds.path).exists() or Path(ds.path).suffix):
        try:
            kind = detect_source(ds.path, f"{key}.path")
        except ConfigError:
            kind = "auto"  # reported with the reading itself
    for task in tasks:
        if task.sources is not None and task.reads_dataset and kind != "auto" and kind not in task.sources:
            raise ConfigError(
                f"{key}: the {task.name} task reads {', '.join(task.sources)} data; {ds.path} is a {kind} source"
            )


def check_eval(recipe: Recipe) -> None:
    """Raise :class:`ConfigError` for an ``eval.datasets`` entry that cannot run."""
    image_only = recipe.model.kind == "image_image"
    synthetic = recipe.data.synthetic
    root = Path(synthetic.root).resolve() if synthetic is not None else None
    for i, ds in enumerate(recipe.eval.datasets):
        generated = root is not None and Path(ds.path).resolve().is_relative_to(root)
        check_eval_dataset(ds, f"eval.datasets[{i}]", image_only, generated)
