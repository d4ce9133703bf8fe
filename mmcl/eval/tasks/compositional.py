"""Compositional evaluation: the true caption against minimally edited ones (SugarCrepe-style), on
an items file or on a compositional benchmark read in its own files (SugarCrepe, ARO, Winoground)."""

from __future__ import annotations

from ...errors import ConfigError
from . import register_task
from .base import EvalTask

ITEMS_FILE = "an items file: mmcl data make-compositional writes one"
HEADLINE = ("acc", "macro_acc", "text_score", "image_score", "group_score")


def _benchmark(cfg) -> bool:
    from ...data.benchmarks import get_benchmark, is_benchmark

    return is_benchmark(cfg.kind) and get_benchmark(cfg.kind).task == "compositional"


@register_task("compositional")
class Compositional(EvalTask):
    position = 50
    about = "accuracy of the true caption against hard-negative captions (SugarCrepe, ARO, Winoground, items files)"
    example = (
        "mmcl data make-compositional data/shapes/test.csv data/shapes/compositional.jsonl\n"
        "  mmcl eval compositional --model runs/quickstart --dataset data/shapes/compositional.jsonl\n"
        "  mmcl eval compositional --model runs/quickstart --dataset sugar_crepe --data-root data/sugar_crepe"
    )
    reads_dataset = False  # its items file (or the benchmark's files) names the images
    # `compositional` (the items file) is needed unless the entry names a compositional benchmark
    # (kind: sugar_crepe, winoground, ...): checked in check() and run()
    headline = HEADLINE
    # `mmcl eval compositional --dataset FILE`: the dataset is the items file
    dataset_help = (
        "the dataset file (JSON/JSONL/CSV items: image, caption, negatives[, type]), or with --data-root a "
        "compositional benchmark: sugar_crepe, vg_relation, vg_attribution, coco_order, flickr30k_order, winoground"
    )
    dataset_fields = ("path", "compositional")

    def headline_metrics(self, metrics) -> list[str]:
        """The overall scores (``acc``; ``macro_acc``, the ARO and SugarCrepe headline; Winoground's
        text, image and group scores), then the accuracy per type (``acc/<type>``)."""
        return [m for m in HEADLINE if m in metrics] + [m for m in metrics if m.startswith("acc/")]

    def check(self, cfg, key: str) -> None:
        if cfg.compositional is None and not _benchmark(cfg):
            raise ConfigError(f"{key}: the compositional task needs compositional ({ITEMS_FILE})")

    def run(self, adapter, data, cfg) -> dict:
        from ..compositional import evaluate_benchmark, evaluate_compositional

        if _benchmark(cfg):
            from ...data.benchmarks import build_benchmark

            cset = build_benchmark(cfg.kind, cfg.path, cfg.split, cfg.language, cfg.download, cfg.max_items)
            return evaluate_benchmark(adapter, cset, data.batch_size, data.num_workers, data.progress)
        self.check(cfg, cfg.name)
        return evaluate_compositional(
            adapter, cfg.compositional, cfg.image_root, data.batch_size, data.num_workers, data.progress
        )
