"""Tasks that read images only, each its own way: paired images, segmentation masks, labelled
images for fine-tuning. They run on image-only models (``model.kind: image_image``)."""

from __future__ import annotations

from . import register_task
from .base import Arg, EvalTask, Need, recall_headline
from .classification import TRAIN_ARGS, TRAIN_LIMIT, TRAINING_SET

TABLES = ("csv", "jsonl")  # read through the CSV/JSONL row readers


@register_task("image_retrieval")
class ImageRetrieval(EvalTask):
    position = 60
    about = "image <-> paired image retrieval recall@k (sketch/photo, RGB/depth: row i's two images match)"
    example = "mmcl eval image_retrieval --model runs/sketches --dataset data/shapes/test.csv --image2-key sketch"
    text_tower = False
    needs = (Need("image2_key", "the column of the paired image"),)
    sources = TABLES
    arguments = (Arg(("--image2-key",), "image2_key", "the column of each row's paired image"),)

    def headline_metrics(self, metrics) -> list[str]:
        return recall_headline(metrics, ("forward", "backward"), ("chance_recall_at_1",))

    def run(self, adapter, data, cfg) -> dict:
        from ..image_tasks import paired_image_retrieval

        return paired_image_retrieval(adapter, cfg, data.batch_size, data.progress)


@register_task("dense_probe")
class DenseProbe(EvalTask):
    position = 70
    about = "per-pixel linear probe of segmentation masks on the vision tower's frozen feature map"
    example = (
        "mmcl eval dense_probe --model runs/densecl --train data/shapes/train.csv --dataset data/shapes/test.csv "
        "--mask-key mask"
    )
    text_tower = False
    needs = (TRAINING_SET, Need("mask_key", "the column of segmentation masks"))
    sources = TABLES
    headline = ("pixel_acc", "mean_iou", "foreground_iou")
    arguments = (
        TRAIN_ARGS[0],
        TRAIN_LIMIT,
        Arg(("--mask-key",), "mask_key", "the column of segmentation masks (PNGs of class indices)"),
        Arg(("--epochs",), "dense_probe_epochs", "epochs of the probe (default 30)", {"type": int}),
        Arg(
            ("--size",),
            "dense_probe_size",
            "side images and masks are resized to (default: the tower's input size)",
            {"type": int},
        ),
    )

    def run(self, adapter, data, cfg) -> dict:
        from ..image_tasks import segmentation_probe

        return segmentation_probe(adapter, cfg, data.batch_size)


@register_task("finetune")
class Finetune(EvalTask):
    position = 80
    about = "fine-tune the whole vision tower on fractions of the training set vs the same tower from scratch"
    example = "mmcl eval finetune --model runs/simclr --train data/shapes/train.csv --dataset data/shapes/test.csv"
    text_tower = False
    labels = True
    needs = (TRAINING_SET,)
    arguments = (
        *TRAIN_ARGS,
        Arg(
            ("--fractions",),
            "finetune_fractions",
            "fractions of the training set's labelled images (default: 0.01 0.1)",
            {"type": float, "nargs": "+", "metavar": "F"},
        ),
        Arg(("--epochs",), "finetune_epochs", "epochs per fine-tuning (default 30)", {"type": int}),
        Arg(("--lr",), "finetune_lr", "learning rate (default 1e-3)", {"type": float}),
    )

    def headline_metrics(self, metrics) -> list[str]:
        """Per labelled fraction, the pretrained and the from-scratch top-1 (``1%/pretrained_acc1``)."""
        return [k for k in metrics if k.endswith(("/pretrained_acc1", "/scratch_acc1"))]

    def run(self, adapter, data, cfg) -> dict:
        from ..image_tasks import finetune_task

        return finetune_task(adapter, data, cfg, data.progress)
