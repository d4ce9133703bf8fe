"""Evaluators and pure metric functions.

Task functions take a model adapter (:func:`load_adapter`) and a dataset (:func:`open_dataset`)
and return a metrics dict with CLIP_benchmark's names; :func:`make_record` / :func:`write_record`
turn it into CLIP_benchmark's result JSON.
"""

from ..data.evalsets import EvalDataset, open_dataset
from .adapters import HFClipAdapter, MmclAdapter, OpenClipAdapter, load_adapter
from .compositional import compositional_accuracy, evaluate_compositional, shapes_compositional_items
from .dense_probe import dense_probe, load_segmentation, segmentation_metrics
from .encode import Encoded, encode_dataset
from .finetune import finetune_classifier, finetune_transfer, subset_per_class
from .knn import knn_classify, knn_metrics
from .linear_probe import few_shot_indices, fit_linear_probe, linear_probe
from .metrics import classification_metrics, retrieval_metrics, retrieval_ranks
from .probes import evaluate_knn, evaluate_linear_probe
from .results import load_records, make_record, summarize, write_record
from .retrieval import evaluate_retrieval
from .runner import evaluate, finetune_task, markdown_table, segmentation_probe, write_results
from .zero_shot import evaluate_zeroshot, zero_shot_classifier, zero_shot_metrics

__all__ = [
    "Encoded",
    "EvalDataset",
    "HFClipAdapter",
    "MmclAdapter",
    "OpenClipAdapter",
    "classification_metrics",
    "compositional_accuracy",
    "dense_probe",
    "encode_dataset",
    "evaluate",
    "evaluate_compositional",
    "evaluate_knn",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "few_shot_indices",
    "finetune_classifier",
    "finetune_task",
    "finetune_transfer",
    "fit_linear_probe",
    "knn_classify",
    "knn_metrics",
    "linear_probe",
    "load_adapter",
    "load_records",
    "load_segmentation",
    "make_record",
    "markdown_table",
    "open_dataset",
    "retrieval_metrics",
    "retrieval_ranks",
    "segmentation_metrics",
    "segmentation_probe",
    "shapes_compositional_items",
    "subset_per_class",
    "summarize",
    "write_record",
    "write_results",
    "zero_shot_classifier",
    "zero_shot_metrics",
]
