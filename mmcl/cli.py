"""The ``mmcl`` command. Hyperparameters live in recipes; the command line only points at them
and overrides single keys (``section.key=value``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

EPILOG = textwrap.dedent("""\
    examples:
      mmcl train recipes/quickstart.yaml
      mmcl train recipes/quickstart.yaml train.lr=5e-4 train.steps=200
      mmcl train recipes/quickstart.yaml train.resume=latest
      mmcl eval runs/quickstart
      mmcl eval zeroshot --model runs/quickstart --dataset data/shapes/test.csv
      mmcl data make-synthetic data/shapes --n-train 20000
      mmcl report runs/quickstart
    """)


EVAL_EPILOG = textwrap.dedent("""\
    models (--model):
      runs/quickstart                   an mmcl run folder (--pretrained: a checkpoint folder in it)
      ViT-B-32 --pretrained w.pt        an open_clip architecture with a local weights file
      --model-config cfg.json           an open_clip model-config JSON (timm + HF towers work)
      path/to/hf_clip                   a transformers CLIP/SigLIP/VisionTextDualEncoder folder

    datasets (--dataset), format detected from the path or given by --dataset-kind:
      data.csv / data.jsonl             one row per (image, caption); rows sharing an image are its captions
      folder/                           folder/<class>/<image> (labelled) or a flat image folder
      wds_root/                         CLIP_benchmark's WebDataset layout (<split>/nshards.txt, *.tar)
      shards/{0..9}.tar                 WebDataset shards (img2dataset layout)
      hf_dataset/ or x.parquet          Hugging Face datasets (save_to_disk folder, parquet/arrow, imagefolder)

    examples:
      mmcl eval zeroshot --model runs/quickstart --dataset data/shapes/test.csv
      mmcl eval retrieval --model ViT-B-32 --pretrained vit_b32.pt --dataset coco_wds/ --split test
      mmcl eval summarize eval_results/
    """)


def _model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="an mmcl run folder, an HF CLIP folder, or an open_clip name")
    g.add_argument("--pretrained", help="mmcl: checkpoint folder (default: the run's latest); open_clip: weights file")
    g.add_argument(
        "--model-type",
        default="auto",
        choices=["auto", "mmcl", "open_clip", "hf"],
        help="how to read --model (default: auto, from what the path holds)",
    )
    g.add_argument("--model-config", help="open_clip model-config JSON, registered under its file name")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _dataset_args(p, task: str) -> None:
    g = p.add_argument_group("data")
    if task in ("linear-probe", "knn"):
        g.add_argument("--dataset", required=True, help="the labelled test set (see `mmcl eval --help` for formats)")
        g.add_argument("--train", help="the labelled training set (default: --dataset, with --train-split)")
        g.add_argument("--train-split", default="train", help="split of --train for WebDataset/HF data (train)")
        if task == "linear-probe":
            g.add_argument(
                "--val",
                help="a validation set for choosing weight decay (default: a seeded 20%% split of the training set)",
            )
    else:
        g.add_argument(
            "--dataset",
            required=True,
            help="the dataset"
            + (" file (JSON/JSONL/CSV items)" if task == "compositional" else " (see `mmcl eval --help` for formats)"),
        )
    if task == "compositional":
        g.add_argument("--image-root", help="folder image paths are relative to (default: the file's folder)")
        return
    g.add_argument(
        "--dataset-kind",
        default="auto",
        choices=["auto", "csv", "jsonl", "folder", "wds", "hf"],
        help="format of the data (default: auto)",
    )
    g.add_argument("--split", default="test", help="split for WebDataset/HF data (default: test)")
    g.add_argument("--image-key", help="image column / key (default: filepath, image, ...)")
    g.add_argument("--caption-key", help="caption column (default: title, caption, text, ...; WebDataset: txt)")
    g.add_argument("--label-key", help="label column (default: label)")
    g.add_argument("--max-items", type=int, help="use only the first N images")


def _output_args(p) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    g.add_argument("--num-workers", type=int, default=0, help="dataloader workers (default 0)")
    g.add_argument(
        "--output",
        default="eval_results",
        help="result JSON file, or a folder that gets <dataset>_<task>.json (default: eval_results/)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmcl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Multi-modal contrastive learning: train CLIP-like models from YAML recipes and evaluate them.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (also: MMCL_DEBUG=1); errors are one line otherwise",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a model from a recipe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train from a YAML recipe. The recipe is checked in full before any work starts.",
        epilog=textwrap.dedent("""\
            overrides (any recipe key, dotted; values are parsed as YAML):
              train.steps=200  train.lr=5e-4  data.batch_size=128  train.precision=bf16
              train.resume=latest   continue the run in train.output_dir exactly where it stopped
              train.stop_at_step=N  stop after step N (the schedule still spans train.steps)

            outputs in the run folder (train.output_dir, default runs/<name>):
              recipe.yaml, tokenizer/, checkpoints/step-N/ (model.safetensors + state.pt),
              metrics.jsonl, TensorBoard events, results.json and results.md

            multi-process: torchrun --nproc_per_node N -m mmcl.cli train RECIPE
            """),
    )
    t.add_argument("recipe", help="path to a recipe YAML file (see recipes/)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. train.lr=5e-4")
    t.add_argument(
        "--smoke",
        action="store_true",
        help="2 steps on a tiny generated corpus on the CPU, the recipe's model and loss kept "
        "(weights files dropped); output in runs/smoke/<name> unless train.output_dir is given",
    )

    e = sub.add_parser(
        "eval",
        help="evaluate any model: zero-shot, retrieval, linear probe, kNN, compositional",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate an mmcl run, an open_clip model or a Hugging Face CLIP model on local data. "
        "Each task writes one CLIP_benchmark-compatible JSON (dataset, model, pretrained, task, metrics).",
        epilog=EVAL_EPILOG,
    )
    esub = e.add_subparsers(dest="eval_command", metavar="TASK")
    r = esub.add_parser(
        "run",
        help="re-run the evaluators a run's recipe declares (also: mmcl eval RUN_DIR)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Re-run the evaluators declared in a run's recipe (eval.datasets) on one of its checkpoints, "
        "and write results.json / results.md in the run folder.",
        epilog="example:\n  mmcl eval runs/quickstart --checkpoint runs/quickstart/checkpoints/step-0000500\n"
        "  mmcl eval run runs/quickstart eval.batch_size=64",
    )
    r.add_argument("run_dir", help="a run folder written by `mmcl train`")
    r.add_argument("--checkpoint", help="checkpoint folder to evaluate (default: the run's latest)")
    r.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the run's eval section, e.g. eval.batch_size=64"
    )
    tasks = {
        "zeroshot": (
            "zero-shot classification with a classifier built from class names x prompt templates",
            "mmcl eval zeroshot --model runs/quickstart --dataset data/shapes/test.csv",
        ),
        "retrieval": (
            "image<->text retrieval recall@k (several captions per image) and mean/median rank",
            "mmcl eval retrieval --model runs/quickstart --dataset data/shapes/test.csv",
        ),
        "linear-probe": (
            "logistic regression on frozen image features; weight decay chosen on a validation split",
            "mmcl eval linear-probe --model runs/quickstart --train data/shapes/train.csv "
            "--dataset data/shapes/test.csv",
        ),
        "knn": (
            "weighted k-nearest-neighbour classification on frozen image features",
            "mmcl eval knn --model runs/quickstart --train data/shapes/train.csv --dataset data/shapes/test.csv",
        ),
        "compositional": (
            "accuracy of the true caption against hard-negative captions (SugarCrepe-style)",
            "mmcl data make-compositional data/shapes/test.csv data/shapes/compositional.jsonl\n"
            "  mmcl eval compositional --model runs/quickstart --dataset data/shapes/compositional.jsonl",
        ),
    }
    for task, (about, example) in tasks.items():
        t = esub.add_parser(
            task,
            help=about,
            description=about[0].upper() + about[1:] + ".",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"example:\n  {example}",
        )
        _model_args(t)
        _dataset_args(t, task)
        if task == "zeroshot":
            t.add_argument(
                "--classnames",
                help="class names: a text file (one per line), a JSON list, or a shipped "
                "benchmark name (imagenet1k, cifar10, cifar100, ...); default: the dataset's own",
            )
            t.add_argument(
                "--templates",
                help="prompt templates ({c} or {} marks the class name): a file or a shipped "
                "benchmark name; default: the dataset's own, else imagenet1k's 80 CLIP prompts",
            )
        if task == "retrieval":
            t.add_argument(
                "--recall-k",
                type=int,
                nargs="+",
                default=[1, 5, 10],
                metavar="K",
                help="k values of recall@k (default: 1 5 10)",
            )
            t.add_argument(
                "--optimistic-ties",
                action="store_true",
                help="also report *_recall_optimistic@k: tied candidates counted in the query's favour "
                "(the default recall@k breaks ties as CLIP_benchmark's torch.topk does)",
            )
        if task == "linear-probe":
            t.add_argument("--k-shot", type=int, help="use only K random training images per class (few-shot)")
            t.add_argument(
                "--weight-decays",
                type=float,
                nargs="+",
                metavar="WD",
                help="weight decays to choose from on the validation split "
                "(default: 1e-6 ... 1e2, 9 log-spaced points, refined around the best)",
            )
            t.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw and validation split")
        if task == "knn":
            t.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
            t.add_argument("--temperature", type=float, default=0.07, help="weight exp(sim / T) (default 0.07)")
        _output_args(t)
    sm = esub.add_parser(
        "summarize",
        help="a markdown/CSV table from many result JSON files",
        description="Collect result files (CLIP_benchmark-shaped JSON, or folders of them) into one table of the "
        "headline metrics, in percent.",
        epilog="example:\n  mmcl eval summarize eval_results/ --format csv --output summary.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sm.add_argument("paths", nargs="+", help="result JSON files or folders")
    sm.add_argument("--format", choices=["markdown", "csv"], default="markdown", help="table format (markdown)")
    sm.add_argument("--output", help="write the table here instead of printing it")

    rp = sub.add_parser(
        "report",
        help="an HTML page and markdown summary with plots of a run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a self-contained HTML page (report.html), a markdown summary (report.md) and PNG "
        "plots of a run: loss, learning rate, logit scale, throughput, evaluation metrics over steps, a "
        "retrieval recall@k curve and an embedding map of the evaluation images coloured by class or cluster.",
        epilog="The recall@k curve and embedding map encode the recipe's eval.datasets with the run's latest\n"
        "checkpoint; they are skipped, with a note, when either is missing, so a folder holding only\n"
        "metrics.jsonl still gets a report.\n\n"
        "example:\n  mmcl report runs/quickstart\n  mmcl report runs/quickstart --no-embeddings --output /tmp/report",
    )
    rp.add_argument("run_dir", help="a run folder written by `mmcl train`")
    rp.add_argument("--output", help="output folder (default: RUN_DIR/report)")
    rp.add_argument("--no-embeddings", action="store_true", help="skip the recall@k curve and the embedding map")
    rp.add_argument("--checkpoint", help="checkpoint folder to encode with (default: the run's latest)")
    rp.add_argument("--max-images", type=int, default=500, help="images per eval dataset to encode (default 500)")
    rp.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")

    d = sub.add_parser("data", help="data tools", description="Data tools.")
    dsub = d.add_subparsers(dest="data_command", metavar="TOOL")
    ms = dsub.add_parser(
        "make-synthetic",
        help="write the generated shapes corpus (images + CSV) to a folder",
        description="Write the generated captioned-shapes corpus: train/test/novel PNG folders, one CSV per split "
        "(filepath,title,label,key), classnames.txt and templates.txt. Deterministic for a seed.",
    )
    ms.add_argument("out_dir", help="output folder")
    ms.add_argument("--n-train", type=int, default=20000, help="training pairs (default 20000)")
    ms.add_argument("--n-test", type=int, default=1000, help="held-out pairs, unseen images (default 1000)")
    ms.add_argument(
        "--n-novel",
        type=int,
        default=1000,
        help="held-out pairs whose first object is a colour-shape combination never seen in training (default 1000)",
    )
    ms.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    ms.add_argument("--single-fraction", type=float, default=0.3, help="fraction of one-object scenes (default 0.3)")
    ms.add_argument(
        "--max-objects",
        type=int,
        default=2,
        choices=range(2, 10),
        metavar="{2..9}",
        help="the other scenes hold 2..N objects, one per cell of a 3x3 grid (default 2)",
    )
    ms.add_argument(
        "--short-caption-prob",
        type=float,
        default=0.2,
        help="fraction of short captions ('a red circle'), true of every image of their class (default 0.2)",
    )
    ms.add_argument(
        "--sketch", action="store_true", help="also draw each scene as a line sketch (column sketch): paired images"
    )
    ms.add_argument(
        "--masks",
        action="store_true",
        help="also write each scene's segmentation mask (column mask; 0 background, 1 + class): for dense_probe",
    )
    ms.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    mc = dsub.add_parser(
        "make-compositional",
        help="write hard-negative caption items for a shapes-corpus split",
        description="Write compositional items (image, true caption, one hard negative, type) for a split of the "
        "generated shapes corpus. Negative types: replace_colour, replace_shape, swap_colours, swap_relation.",
        epilog="example:\n  mmcl data make-compositional data/shapes/test.csv data/shapes/compositional.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mc.add_argument("csv", help="a split CSV from make-synthetic (needs its key column)")
    mc.add_argument("out", help="output file: .jsonl (default) or .csv")
    mc.add_argument("--seed", type=int, default=0, help="seed of the replacement draws (default 0)")
    mc.add_argument(
        "--merge",
        action="store_true",
        help="one row per image with all its negatives: training data for NegCLIP-style fine-tuning "
        "(data.negatives_key: negatives)",
    )
    mc.add_argument(
        "--keep-captions",
        action="store_true",
        help="with --merge: keep each row's own caption (title) instead of the canonical one rendered from its "
        "key; the negatives are the same kinds of edits made to that caption's own words",
    )
    mc.add_argument(
        "--prefer",
        nargs="+",
        default=[],
        choices=["replace_colour", "replace_shape", "swap_colours", "swap_relation"],
        metavar="TYPE",
        help="with --merge: keep only these types of negative where a row has one, all its negatives otherwise "
        "(choices: replace_colour, replace_shape, swap_colours, swap_relation)",
    )
    cv = dsub.add_parser(
        "convert",
        help="write a CSV/TSV/JSONL file or an image folder as WebDataset shards",
        description="Write WebDataset shards in img2dataset's layout ({key}.jpg/.png/.webp, .txt with one caption "
        "per line, .json, .cls) plus sizes.json and stats.json. Original image bytes are kept; unreadable "
        "images, missing files and caption-less images are skipped and counted.",
        epilog="example:\n  mmcl data convert data/shapes/train.csv data/shapes-wds --shard-size 1000\n"
        "  then train with data.train=data/shapes-wds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cv.add_argument("src", help="a CSV/TSV/JSONL file (rows sharing an image are its captions) or an image folder")
    cv.add_argument("out", help="output folder (must not already hold shards)")
    cv.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    cv.add_argument("--source", default="auto", choices=["auto", "csv", "jsonl", "folder"], help="input format")
    cv.add_argument("--image-key", help="image path column (default filepath)")
    cv.add_argument("--caption-key", help="caption column (default title)")
    cv.add_argument("--label-key", help="integer label column, written as .cls (optional)")
    cv.add_argument(
        "--caption-template",
        default="a photo of a {c}.",
        help="folders: caption each image with its class name in this template (default 'a photo of a {c}.'); "
        "'' writes no caption",
    )
    cv.add_argument("--image-root", help="base folder for relative image paths (default: the file's folder)")
    cv.add_argument("--caption-separator", help="split each caption cell on this into several captions ('|')")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")
    ins = dsub.add_parser(
        "inspect",
        help="count a dataset's samples and skips, caption and image statistics, and draw a sample grid",
        description="Read a dataset as training and evaluation would (CSV/TSV/JSONL, image folder, WebDataset "
        "shards or Hugging Face dataset) and report: images, captions, skipped samples per reason, caption "
        "length and image size statistics, class counts; optionally a PNG grid of samples with captions.",
        epilog="example:\n  mmcl data inspect data/shapes-wds --grid shapes.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ins.add_argument("path", help="dataset path (file, folder, shard pattern)")
    ins.add_argument("--kind", default="auto", choices=["auto", "csv", "jsonl", "folder", "wds", "hf"])
    ins.add_argument("--split", default="train", help="split of a WebDataset benchmark folder or HF dataset")
    ins.add_argument("--image-key", help="image column")
    ins.add_argument("--caption-key", help="caption column (WebDataset: member extension, default txt)")
    ins.add_argument("--label-key", help="label column")
    ins.add_argument("--max-items", type=int, help="read at most this many images")
    ins.add_argument("--grid", help="write a PNG grid of samples here")
    ins.add_argument("--grid-size", type=int, default=16, help="samples in the grid (default 16)")
    ins.add_argument("--json", help="also write the report as JSON here")
    ins.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .interop.cli import add_parser as add_export_parser

    add_export_parser(sub)
    return p


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # read by transformers when it is imported: no import here, so a bad recipe fails fast
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _train(args) -> int:
    from .config import load_recipe

    # the recipe is read and checked before the trainer (torch, timm, transformers) is imported
    if args.smoke:
        from .smoke import smoke_recipe

        recipe = smoke_recipe(args.recipe, args.overrides)
    else:
        recipe = load_recipe(args.recipe, args.overrides)
    from .train import Trainer

    Trainer(recipe).fit()
    return 0


def _eval_run(args) -> int:
    from .config import ConfigError, apply_overrides, recipe_from_dict, recipe_to_dict
    from .eval import MmclAdapter, evaluate, markdown_table, write_results

    adapter = MmclAdapter.from_run(args.run_dir, args.checkpoint)
    recipe = adapter.recipe
    if args.overrides:
        bad = [o for o in args.overrides if not o.startswith("eval.")]
        if bad:
            raise ConfigError(f"mmcl eval only takes eval.* overrides, got: {', '.join(bad)}")
        recipe = recipe_from_dict(apply_overrides(recipe_to_dict(recipe), args.overrides))
    if recipe.train.cpu:
        adapter.device = __import__("torch").device("cpu")
        adapter.model.to(adapter.device)
    if not recipe.eval.datasets:
        raise ConfigError("the run's recipe declares no eval.datasets")
    records = evaluate(adapter, recipe.eval)
    step = int(adapter.checkpoint.name.split("-")[-1])
    json_path, md_path = write_results(records, args.run_dir, step, recipe.name)
    print(markdown_table(records))
    print(f"results: {json_path} and {md_path}")
    return 0


def _report(args) -> int:
    from .report import write_report

    written = write_report(
        args.run_dir,
        args.output,
        embeddings=not args.no_embeddings,
        checkpoint=args.checkpoint,
        max_images=args.max_images,
        device=args.device,
    )
    for note in written["notes"]:
        print(f"note: {note}")
    for path in (written["html"], written["markdown"], *written["plots"].values()):
        print(f"wrote {path}")
    return 0


def _open(args, path, split):
    from .eval.datasets import open_dataset

    return open_dataset(
        path,
        kind=args.dataset_kind,
        split=split,
        image_key=args.image_key,
        caption_key=args.caption_key,
        label_key=args.label_key,
        max_items=args.max_items,
    )


def _eval_task(args) -> int:
    from .eval.adapters import load_adapter
    from .eval.results import make_record, summarize, write_record

    adapter = load_adapter(args.model, args.pretrained, args.model_type, args.model_config, args.device)
    common = {"batch_size": args.batch_size, "num_workers": args.num_workers, "progress": not args.no_progress}
    task = args.eval_command
    if task == "compositional":
        from .eval.compositional import evaluate_compositional

        metrics = evaluate_compositional(adapter, args.dataset, args.image_root, **common)
        name = __import__("pathlib").Path(args.dataset).stem
    else:
        data = _open(args, args.dataset, args.split)
        name = data.name
        if task == "zeroshot":
            from .eval.zero_shot import evaluate_zeroshot

            metrics = evaluate_zeroshot(adapter, data, args.classnames, args.templates, **common)
        elif task == "retrieval":
            from .eval.retrieval import evaluate_retrieval

            metrics = evaluate_retrieval(adapter, data, tuple(args.recall_k), optimistic=args.optimistic_ties, **common)
        else:
            train = _open(args, args.train or args.dataset, args.train_split)
            if task == "knn":
                from .eval.probes import evaluate_knn

                metrics = evaluate_knn(adapter, train, data, args.k, args.temperature, **common)
            else:
                from .eval.probes import evaluate_linear_probe

                val = _open(args, args.val, args.split) if args.val else None
                metrics = evaluate_linear_probe(
                    adapter, train, data, val, args.k_shot, args.weight_decays, seed=args.seed, **common
                )
    record = make_record(task, name, adapter.name, str(adapter.pretrained), metrics)
    path = write_record(record, args.output)
    print(summarize([record]), end="")
    print(f"result: {path}")
    return 0


def _eval(args, parser) -> int:
    if args.eval_command is None:
        parser.parse_args(["eval", "--help"])
        return 2
    if args.eval_command == "run":
        return _eval_run(args)
    if args.eval_command == "summarize":
        from .eval.results import load_records, summarize

        records = load_records(args.paths)
        if not records:
            from .config import ConfigError

            raise ConfigError(f"no result records in: {', '.join(args.paths)}")
        table = summarize(records, args.format)
        if args.output:
            __import__("pathlib").Path(args.output).write_text(table)
            print(f"wrote {args.output} ({len(records)} results)")
        else:
            print(table, end="")
        return 0
    return _eval_task(args)


def _data(args, parser) -> int:
    if args.data_command == "convert":
        from .data.convert import convert_to_wds

        stats = convert_to_wds(
            args.src,
            args.out,
            args.source,
            args.shard_size,
            args.image_key,
            args.caption_key,
            args.label_key,
            args.caption_template or None,
            progress=not args.no_progress,
            image_root=args.image_root,
            caption_separator=args.caption_separator,
        )
        skipped = ", ".join(f"{k}={v}" for k, v in stats["skipped"].items()) or "none"
        print(f"wrote {stats['samples']} samples in {stats['shards']} shards to {args.out} (skipped: {skipped})")
        return 0
    if args.data_command == "inspect":
        from .data.inspect import format_report, inspect_dataset

        keys = {
            k: v
            for k, v in (
                ("image_key", args.image_key),
                ("caption_key", args.caption_key),
                ("label_key", args.label_key),
            )
            if v
        }
        report = inspect_dataset(
            args.path,
            args.kind,
            args.max_items,
            args.grid,
            args.grid_size,
            progress=not args.no_progress,
            split=args.split,
            **keys,
        )
        print(format_report(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    if args.data_command == "make-compositional":
        from .eval.compositional import shapes_compositional_items

        if args.keep_captions and not args.merge:
            from .errors import ConfigError

            raise ConfigError("--keep-captions applies to --merge (training data); add --merge or drop it")
        if args.prefer and not args.merge:
            from .errors import ConfigError

            raise ConfigError("--prefer applies to --merge (training data); add --merge or drop it")
        counts = shapes_compositional_items(
            args.csv,
            args.out,
            seed=args.seed,
            merge=args.merge,
            keep_captions=args.keep_captions,
            prefer=tuple(args.prefer),
        )
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if args.data_command != "make-synthetic":
        parser.parse_args(["data", "--help"])
        return 2
    from .data.synthetic import SyntheticConfig, make_corpus

    cfg = SyntheticConfig(
        root=args.out_dir,
        n_train=args.n_train,
        n_test=args.n_test,
        n_novel=args.n_novel,
        image_size=args.image_size,
        single_fraction=args.single_fraction,
        max_objects=args.max_objects,
        short_caption_prob=args.short_caption_prob,
        sketch=args.sketch,
        masks=args.masks,
        seed=args.seed,
    )
    root = make_corpus(cfg)
    print(
        f"wrote {root}: train.csv ({cfg.n_train}), test.csv ({cfg.n_test}), novel.csv ({cfg.n_novel}), "
        "classnames.txt, templates.txt"
    )
    return 0


EVAL_COMMANDS = ("run", "zeroshot", "retrieval", "linear-probe", "knn", "compositional", "summarize")


def normalise_argv(argv: list[str]) -> list[str]:
    """`mmcl eval RUN_DIR` is short for `mmcl eval run RUN_DIR`; `mmcl train R --smoke K=V` works."""
    argv = list(argv)
    if argv[:1] == ["train"] and "--smoke" in argv:  # a flag anywhere among the overrides
        argv.remove("--smoke")
        argv.insert(1, "--smoke")
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] not in EVAL_COMMANDS and not argv[1].startswith("-"):
        argv.insert(1, "run")
    return argv


def _debug_wanted(argv: list[str]) -> bool:
    """``--debug`` anywhere on the line, or MMCL_DEBUG=1: show tracebacks (for developers)."""
    return "--debug" in argv or os.environ.get("MMCL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _os_error_line(e: OSError) -> str:
    """An OSError as one line: what failed, on which file, and the free space where it matters."""
    import errno
    import shutil

    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    line = f"{what}: {where}" if where else what
    if e.errno in (errno.ENOSPC, errno.EDQUOT) and where:
        folder = Path(where).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            line += (
                f" ({shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}); free space or write elsewhere"
            )
        except OSError:
            pass
    return line


def _run(args, parser) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "eval":
        return _eval(args, parser)
    if args.command == "report":
        return _report(args)
    if args.command == "export":
        return args.func(args)
    return _data(args, parser)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = _parser()
    args = parser.parse_args(normalise_argv(argv))
    if args.version:
        from . import __version__

        print(f"mmcl {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries()
    from .errors import ConfigError, TrainingError

    try:
        return _run(args, parser)
    except (ConfigError, TrainingError) as e:
        if debug:
            raise
        print(f"mmcl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or disk the user pointed at: missing, unreadable, full, read-only
        if debug:
            raise
        print(f"mmcl: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # mmcl.errors.Interrupted says what was saved and sets the exit code
        import signal

        # exiting: one more Ctrl-C ends the process at once, not with a traceback from code run at exit
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # one write: the ranks of a torchrun job share stderr, and their lines must not interleave
        sys.stderr.write(f"mmcl: {e}\n" if str(e) else "mmcl: interrupted\n")
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
