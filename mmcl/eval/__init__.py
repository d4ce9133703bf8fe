"""Evaluators and pure metric functions."""

from .adapters import MmclAdapter
from .metrics import classification_metrics, retrieval_metrics
from .runner import evaluate, markdown_table, write_results
from .zero_shot import zero_shot_classifier, zero_shot_metrics

__all__ = [
    "MmclAdapter",
    "classification_metrics",
    "evaluate",
    "markdown_table",
    "retrieval_metrics",
    "write_results",
    "zero_shot_classifier",
    "zero_shot_metrics",
]
