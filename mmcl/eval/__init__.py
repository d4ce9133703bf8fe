"""Evaluation tasks, evaluators and pure metric functions.

Tasks are registered by name (:mod:`mmcl.eval.tasks`: :func:`list_tasks`, :func:`register_task`);
each runs as ``task.run(adapter, data, cfg)`` on a model adapter (:func:`load_adapter`) and a
dataset entry, whether a recipe (:func:`evaluate`) or ``mmcl eval TASK`` calls it, and returns a
metrics dict with CLIP_benchmark's names; :func:`make_record` / :func:`write_record` turn it into
CLIP_benchmark's result JSON. The task functions (:func:`evaluate_zeroshot`, ...) take an opened
dataset (:func:`open_dataset`).

Names are imported on first use (PEP 562): the command line reads the task registry to build its
parser without loading torch.
"""

from __future__ import annotations

import importlib

# public name -> module (relative to this package) that defines it
_LAZY = {
    "EvalData": ".context",
    "Encoded": ".encode",
    "encode_dataset": ".encode",
    "EvalDataset": "..data.evalsets",
    "open_dataset": "..data.sources",
    "HFClipAdapter": ".adapters",
    "MmclAdapter": ".adapters",
    "OpenClipAdapter": ".adapters",
    "load_adapter": ".adapters",
    "compositional_accuracy": ".compositional",
    "evaluate_compositional": ".compositional",
    "shapes_compositional_items": ".compositional",
    "dense_probe": ".dense_probe",
    "load_segmentation": ".dense_probe",
    "segmentation_metrics": ".dense_probe",
    "finetune_classifier": ".finetune",
    "finetune_transfer": ".finetune",
    "subset_per_class": ".finetune",
    "knn_classify": ".knn",
    "knn_metrics": ".knn",
    "few_shot_indices": ".linear_probe",
    "fit_linear_probe": ".linear_probe",
    "linear_probe": ".linear_probe",
    "classification_metrics": ".metrics",
    "retrieval_metrics": ".metrics",
    "retrieval_ranks": ".metrics",
    "evaluate_knn": ".probes",
    "evaluate_linear_probe": ".probes",
    "load_records": ".results",
    "make_record": ".results",
    "summarize": ".results",
    "write_record": ".results",
    "evaluate_retrieval": ".retrieval",
    "evaluate": ".runner",
    "finetune_task": ".runner",
    "markdown_table": ".runner",
    "segmentation_probe": ".runner",
    "write_results": ".runner",
    "EvalTask": ".tasks",
    "get_task": ".tasks",
    "list_tasks": ".tasks",
    "register_task": ".tasks",
    "evaluate_zeroshot": ".zero_shot",
    "zero_shot_classifier": ".zero_shot",
    "zero_shot_metrics": ".zero_shot",
}

__all__ = sorted(_LAZY)  # noqa: PLE0605 - the lazy names resolve through __getattr__


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
