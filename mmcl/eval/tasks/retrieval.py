"""Image <-> text retrieval over a dataset with any number of captions per image."""

from __future__ import annotations

from . import register_task
from .base import Arg, EvalTask, recall_headline


@register_task("retrieval")
class Retrieval(EvalTask):
    position = 20
    about = "image<->text retrieval recall@k (several captions per image) and mean/median rank"
    example = "mmcl eval retrieval --model runs/quickstart --dataset data/shapes/test.csv"
    clip_benchmark = "zeroshot_retrieval"
    texts = True
    arguments = (
        Arg(
            ("--recall-k",),
            "recall_k",
            "k values of recall@k (default: 1 5 10)",
            {"type": int, "nargs": "+", "metavar": "K"},
        ),
        Arg(
            ("--optimistic-ties",),
            "optimistic_ties",
            "also report *_recall_optimistic@k: tied candidates counted in the query's favour "
            "(the default recall@k breaks ties as CLIP_benchmark's torch.topk does)",
            {"action": "store_true"},
        ),
        Arg(
            ("--group-key",),
            "group_key",
            "a column whose equal values mean the same thing: adds attribute-level recall@1 (a retrieved "
            "item of the same group counts as a hit) and duplicate_caption_fraction",
        ),
    )

    def headline_metrics(self, metrics) -> list[str]:
        """Every recall@k computed (image then text retrieval, by k), then the attribute-level
        recalls and the share of duplicate captions where a group column was given."""
        extra = (
            "image_retrieval_attribute_recall@1",
            "text_retrieval_attribute_recall@1",
            "duplicate_caption_fraction",
        )
        return recall_headline(metrics, ("image_retrieval", "text_retrieval"), extra)

    def run(self, adapter, data, cfg) -> dict:
        from ..retrieval import retrieval_from_features

        return retrieval_from_features(
            data.encoded(adapter).with_captions(), tuple(cfg.recall_k), data.progress, cfg.optimistic_ties
        )
