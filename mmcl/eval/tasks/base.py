"""The evaluation-task contract.

A task is a class registered by name (``@register_task("zeroshot")``) that declares what it needs
and how its results read, and runs on one dataset:

    metrics = task.run(adapter, data, cfg)

- ``adapter``: a model adapter (:mod:`mmcl.eval.adapters`: ``encode_image``, ``encode_text``,
  ``preprocess``, ...);
- ``data``: the dataset entry's :class:`~mmcl.eval.context.EvalData`, which opens the test,
  training and validation sets through the data-source registry and encodes them once for all the
  entry's tasks (:func:`~mmcl.eval.encode.encode_dataset`);
- ``cfg``: the entry, an :class:`~mmcl.recipe.EvalDatasetConfig` (a recipe's ``eval.datasets[i]``,
  or what ``mmcl eval TASK`` builds from its arguments);
- returns CLIP_benchmark-named metrics (floats; counts as ints; ``skipped`` as a dict of counts).

A recipe's ``eval.datasets``, in-training evaluation and ``mmcl eval TASK`` all call ``run``.

This module imports nothing heavy: the command line builds its parser from the declarations
without loading torch. Tasks import their metric code inside ``run``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Need:
    """A key of the dataset entry a task cannot run without (checked before any work starts)."""

    key: str  # an EvalDatasetConfig field
    what: str  # what it holds, for the error message ("a labelled training set")


@dataclass(frozen=True)
class Arg:
    """A command-line option of ``mmcl eval TASK`` that sets one :class:`~mmcl.recipe.EvalDatasetConfig`
    field (``dest``); ``options`` go to ``argparse.add_argument``. Left unset, the field keeps its
    default."""

    flags: tuple[str, ...]
    dest: str
    help: str
    options: dict = field(default_factory=dict)


class EvalTask:
    """Base class of evaluation tasks: subclass, declare, implement :meth:`run`, register.

    Attributes:
        name: the canonical name (recipes, ``mmcl eval NAME``); set by :func:`register_task`.
        about: one line for ``--help``; example: a command line for ``--help``.
        aliases: other spellings ``mmcl eval`` accepts (``linear-probe``).
        clip_benchmark: CLIP_benchmark's task name, used in the result records ``mmcl eval`` writes
            (``zeroshot_classification``); None: the task's own name.
        text_tower: needs a text tower (False: runs on image-only models).
        labels: reads the dataset's class labels.
        texts: encodes the dataset's captions (the entry's shared encoding then includes them).
        reads_dataset: False for a task that reads its own file instead of ``path`` (compositional).
        needs: dataset-entry keys it cannot run without.
        sources: the data sources it reads (None: any registered source).
        headline: the metrics tables show (results.md, ``mmcl eval summarize``, ``mmcl report``).
        arguments: its own ``mmcl eval`` options.
        position: where it is listed (``mmcl eval --help``, messages); ties by name.
        dataset_help, dataset_fields: what ``mmcl eval TASK --dataset`` is, and the entry fields it sets.
    """

    name: str = ""
    about: str = ""
    example: str = ""
    aliases: tuple[str, ...] = ()
    clip_benchmark: str | None = None
    text_tower: bool = True
    labels: bool = False
    texts: bool = False
    reads_dataset: bool = True
    needs: tuple[Need, ...] = ()
    sources: tuple[str, ...] | None = None
    headline: tuple[str, ...] = ()
    arguments: tuple[Arg, ...] = ()
    position: int = 100
    dataset_help: str = "the dataset (see `mmcl eval --help` for formats)"
    dataset_fields: tuple[str, ...] = ("path",)

    @property
    def record_name(self) -> str:
        """The ``task`` field of the CLIP_benchmark-shaped records ``mmcl eval TASK`` writes."""
        return self.clip_benchmark or self.name

    def headline_metrics(self, metrics) -> list[str]:
        """The headline metrics present in ``metrics`` (a dict, or any collection of metric names)."""
        return [m for m in self.headline if m in metrics]

    def check(self, cfg, key: str) -> None:
        """Checks beyond ``needs`` before any work starts (raise :class:`~mmcl.errors.ConfigError`
        naming ``key``); ``needs`` are checked already."""

    def run(self, adapter, data, cfg) -> dict:
        """The metrics of ``adapter`` on ``data`` (see the module docstring)."""
        raise NotImplementedError


def recall_headline(metrics, prefixes: tuple[str, str], extra: tuple[str, ...] = ()) -> list[str]:
    """Every ``<prefix>_recall@k`` in ``metrics``, both directions by increasing k, then ``extra``."""
    pattern = re.compile(rf"({'|'.join(map(re.escape, prefixes))})_recall@(\d+)")
    ks = sorted({int(m.group(2)) for m in map(pattern.fullmatch, metrics) if m})
    return [f"{p}_recall@{k}" for k in ks for p in prefixes if f"{p}_recall@{k}" in metrics] + [
        m for m in extra if m in metrics
    ]
