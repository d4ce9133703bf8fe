"""Classification of the dataset's labelled images: zero-shot, kNN and the linear probe."""

from __future__ import annotations

from ...errors import ConfigError
from . import register_task
from .base import Arg, EvalTask, Need

CLASSIFICATION_HEADLINE = ("acc1", "acc5", "mean_per_class_recall")

# the recipe key train_max_items: the same limit, so a run's evaluation and this command agree
TRAIN_LIMIT = Arg(
    ("--train-max-items",),
    "train_max_items",
    "use only the first N images of --train (default: all; a recipe's eval.datasets[].train_max_items). "
    "--max-items limits --dataset only",
    {"type": int},
)
TRAIN_ARGS = (
    Arg(("--train",), "train_path", "the labelled training set (default: --dataset, with --train-split)"),
    Arg(("--train-split",), "train_split", "split of --train for WebDataset/HF data (default: train)"),
    TRAIN_LIMIT,
)
TRAINING_SET = Need("train_path", "a labelled training set")


def _with_skips(metrics: dict, **skipped) -> dict:
    skipped = {name: s for name, s in skipped.items() if s}
    if skipped:
        metrics["skipped"] = skipped
    return metrics


@register_task("zeroshot")
class ZeroShot(EvalTask):
    position = 10
    about = "zero-shot classification with a classifier built from class names x prompt templates"
    example = "mmcl eval zeroshot --model runs/quickstart --dataset data/shapes/test.csv"
    clip_benchmark = "zeroshot_classification"
    labels = True
    headline = CLASSIFICATION_HEADLINE
    arguments = (
        Arg(
            ("--classnames",),
            "classnames",
            "class names: a text file (one per line), a JSON list, or a shipped benchmark name "
            "(imagenet1k, cifar10, cifar100, ...); default: the dataset's own",
        ),
        Arg(
            ("--templates",),
            "templates",
            "prompt templates ({c} or {} marks the class name): a file or a shipped benchmark name; "
            "default: the dataset's own, else imagenet1k's 80 CLIP prompts",
        ),
    )

    def check(self, cfg, key: str) -> None:
        """``classnames`` / ``templates`` name files or shipped lists. Class names come from
        ``classnames`` or from the data itself (``classnames.txt`` beside a CSV, class folders,
        CLIP_benchmark's layout, a ``ClassLabel`` column): look, where the data exists already (a
        generated corpus may not)."""
        from pathlib import Path

        from ...data.sources import open_dataset
        from ..classnames import resolve_list, resolve_prompts

        for kind in ("classnames", "templates"):  # a file, or a shipped list's name
            try:
                resolve_list(getattr(cfg, kind), kind, None, cfg.language)
            except ConfigError as e:
                raise ConfigError(f"{key}.{kind}: {e}") from None
        if cfg.classnames is not None or not Path(cfg.path).exists():
            return
        data = open_dataset(
            cfg.path,
            cfg.kind,
            cfg.split,
            cfg.image_key,
            cfg.caption_key,
            cfg.label_key,
            max_items=1,
            language=cfg.language,
            download=cfg.download,
        )
        if data.classnames is None and not data.info.get("classnames"):
            raise ConfigError(
                f"{key}: the zeroshot task needs class names: set classnames (a file, one name per line); "
                f"{cfg.path} carries none (no classnames.txt beside it, no class folders or ClassLabel column)"
            )
        try:  # a benchmark's shipped lists, in the language asked for
            resolve_prompts(data, None, cfg.templates, cfg.language)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None

    def run(self, adapter, data, cfg) -> dict:
        from ..zero_shot import class_prompts, zeroshot_from_features

        names, prompts = class_prompts(data.open("test"), cfg.classnames, cfg.templates, cfg.language)
        return zeroshot_from_features(adapter, data.encoded(adapter), names, prompts, data.batch_size, cfg.name)


@register_task("knn")
class Knn(EvalTask):
    position = 30
    about = "weighted k-nearest-neighbour classification on frozen image features"
    example = "mmcl eval knn --model runs/quickstart --train data/shapes/train.csv --dataset data/shapes/test.csv"
    text_tower = False
    labels = True
    needs = (TRAINING_SET,)
    headline = CLASSIFICATION_HEADLINE
    arguments = (
        *TRAIN_ARGS,
        Arg(("--k",), "knn_k", "neighbours (default 20)", {"type": int}),
        Arg(("--temperature",), "knn_temperature", "weight exp(sim / T) (default 0.07)", {"type": float}),
    )

    def run(self, adapter, data, cfg) -> dict:
        from ..knn import knn_metrics

        x_tr, y_tr, s_tr = data.labelled(adapter, "train")
        x_te, y_te, s_te = data.labelled(adapter, "test")
        metrics = knn_metrics(x_tr, y_tr, x_te, y_te, k=cfg.knn_k, temperature=cfg.knn_temperature)
        return _with_skips(metrics, train=s_tr, test=s_te)


@register_task("linear_probe")
class LinearProbe(EvalTask):
    position = 40
    about = "logistic regression on frozen image features; weight decay chosen on a validation split"
    example = (
        "mmcl eval linear_probe --model runs/quickstart --train data/shapes/train.csv --dataset data/shapes/test.csv"
    )
    aliases = ("linear-probe",)
    clip_benchmark = "linear_probe"
    text_tower = False
    labels = True
    needs = (TRAINING_SET,)
    headline = CLASSIFICATION_HEADLINE
    arguments = (
        *TRAIN_ARGS,
        Arg(
            ("--val",),
            "val_path",
            "a validation set for choosing weight decay (default: a seeded 20%% split of the training set)",
        ),
        Arg(("--k-shot",), "k_shot", "use only K random training images per class (few-shot)", {"type": int}),
        Arg(
            ("--weight-decays",),
            "weight_decays",
            "weight decays to choose from on the validation split "
            "(default: 1e-6 ... 1e2, 9 log-spaced points, refined around the best)",
            {"type": float, "nargs": "+", "metavar": "WD"},
        ),
        Arg(("--seed",), "probe_seed", "seed of the few-shot draw and validation split (default 0)", {"type": int}),
    )

    def run(self, adapter, data, cfg) -> dict:
        from ..linear_probe import linear_probe

        x_tr, y_tr, s_tr = data.labelled(adapter, "train")
        x_te, y_te, s_te = data.labelled(adapter, "test")
        x_va = y_va = s_va = None
        if cfg.val_path is not None:
            x_va, y_va, s_va = data.labelled(adapter, "val")
        metrics = linear_probe(
            x_tr,
            y_tr,
            x_te,
            y_te,
            val_features=x_va,
            val_labels=y_va,
            weight_decays=cfg.weight_decays,
            k_shot=cfg.k_shot,
            seed=cfg.probe_seed,
            device=adapter.device,
        )
        return _with_skips(metrics, train=s_tr, test=s_te, val=s_va)
