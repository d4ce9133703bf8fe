"""Evaluation tasks, registered by name: what a recipe's ``eval.datasets[].tasks`` lists and what
``mmcl eval TASK`` runs, through the same code (:class:`~mmcl.eval.tasks.base.EvalTask`).

    zeroshot         zero-shot classification (class names x prompt templates)
    retrieval        image <-> text retrieval recall@k, any number of captions per image
    knn              weighted kNN on frozen image features (needs a training set)
    linear_probe     logistic regression on frozen image features (needs a training set)
    compositional    true caption vs hard-negative captions (SugarCrepe-style items file)
    image_retrieval  image <-> paired image retrieval (image2_key)
    dense_probe      per-pixel linear probe on the vision tower's feature map (mask_key)
    finetune         full fine-tuning vs the same architecture from scratch (needs a training set)

A new task is an :class:`EvalTask` subclass decorated with ``@register_task("name")``; recipes,
``mmcl eval NAME``, result tables and the registry-generated tests then know it.
"""

from __future__ import annotations

from ...errors import ConfigError
from ...registry import Registry
from .base import Arg, EvalTask, Need, recall_headline

TASKS: Registry[type] = Registry("evaluation task")


def register_task(name: str):
    """Class decorator: register an :class:`EvalTask` subclass under ``name``."""

    def decorator(cls: type) -> type:
        cls.name = name
        return TASKS.register(name)(cls)

    return decorator


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered evaluation tasks (``eval.datasets[].tasks``, ``mmcl eval TASK``)."""
    return TASKS.list(pattern)


def ordered_tasks() -> list[str]:
    """The registered tasks in their ``position`` order (help texts, messages), ties by name."""
    return sorted(list_tasks(), key=lambda n: (TASKS.get(n).position, n))


def get_task(name: str, key: str = "task") -> EvalTask:
    """The registered task ``name`` (an instance); a :class:`ConfigError` naming ``key`` otherwise."""
    if name not in TASKS:
        raise ConfigError(f"{key}: {name!r} is not an evaluation task; valid choices: {', '.join(ordered_tasks())}")
    return TASKS.get(name)()


def task_of_record(task: str) -> EvalTask | None:
    """The task a result record's ``task`` field names: a registered name (in-run ``results.json``),
    CLIP_benchmark's name (``mmcl eval`` and CLIP_benchmark's files) or an alias (older files); None
    for a task mmcl does not know."""
    for name in list_tasks():
        t = get_task(name)
        if task in (t.name, t.clip_benchmark, *t.aliases):
            return t
    return None


def headline(task: str, metrics) -> list[str] | None:
    """The headline metrics of a record of ``task`` (any spelling, see :func:`task_of_record`)
    present in ``metrics``; None for an unknown task (callers choose their own fallback)."""
    t = task_of_record(task)
    return None if t is None else t.headline_metrics(metrics)


# the built-in tasks register themselves
from . import classification, compositional, images, retrieval  # noqa: E402, F401

__all__ = [
    "TASKS",
    "Arg",
    "EvalTask",
    "Need",
    "get_task",
    "headline",
    "list_tasks",
    "ordered_tasks",
    "recall_headline",
    "register_task",
    "task_of_record",
]
