"""Compositional evaluation: the true caption against minimally edited ones (SugarCrepe-style)."""

from __future__ import annotations

from . import register_task
from .base import EvalTask, Need


@register_task("compositional")
class Compositional(EvalTask):
    position = 50
    about = "accuracy of the true caption against hard-negative captions (SugarCrepe-style)"
    example = (
        "mmcl data make-compositional data/shapes/test.csv data/shapes/compositional.jsonl\n"
        "  mmcl eval compositional --model runs/quickstart --dataset data/shapes/compositional.jsonl"
    )
    reads_dataset = False  # its items file names the images
    needs = (Need("compositional", "an items file: mmcl data make-compositional writes one"),)
    headline = ("acc",)
    # `mmcl eval compositional --dataset FILE`: the dataset is the items file
    dataset_help = "the dataset file (JSON/JSONL/CSV items: image, caption, negatives[, type])"
    dataset_fields = ("path", "compositional")

    def headline_metrics(self, metrics) -> list[str]:
        """The overall accuracy, then the accuracy per edit type (``acc/<type>``)."""
        return [m for m in metrics if m == "acc" or m.startswith("acc/")]

    def run(self, adapter, data, cfg) -> dict:
        from ..compositional import evaluate_compositional

        return evaluate_compositional(
            adapter, cfg.compositional, cfg.image_root, data.batch_size, data.num_workers, data.progress
        )
