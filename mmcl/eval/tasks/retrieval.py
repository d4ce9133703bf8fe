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
            "a column whose equal values mean the same thing, e.g. label when captions are built from class "
            "names: a retrieved item of the query's group counts as a hit. Adds image_retrieval_group_recall@k "
            "and text_retrieval_group_recall@k for every k, duplicate_caption_fraction (the share of captions "
            "whose group has another caption), and *_attribute_recall@1 (group recall@1, the older name)",
        ),
    )

    def headline_metrics(self, metrics) -> list[str]:
        """Every recall@k computed (image then text retrieval, by k), then the group recalls and the
        share of duplicate captions where a group column was given (results written before group
        recall@k existed: their attribute-level recall@1)."""
        group = recall_headline(metrics, ("image_retrieval_group", "text_retrieval_group"))
        older = () if group else ("image_retrieval_attribute_recall@1", "text_retrieval_attribute_recall@1")
        return recall_headline(metrics, ("image_retrieval", "text_retrieval")) + [
            m for m in (*group, *older, "duplicate_caption_fraction") if m in metrics
        ]

    def run(self, adapter, data, cfg) -> dict:
        from ..metrics import group_recall_at_k
        from ..retrieval import retrieval_from_features, same_caption_same_embedding

        enc = data.encoded(adapter).with_captions()
        ks = tuple(cfg.recall_k)
        metrics = retrieval_from_features(enc, ks, data.progress, cfg.optimistic_ties)
        if enc.image_groups is not None:
            text_features = same_caption_same_embedding(enc.text_features, enc.captions)
            metrics.update(group_recall_at_k(enc.image_features, text_features, enc.image_groups, enc.text_groups, ks))
        return metrics
