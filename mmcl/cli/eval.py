"""``mmcl eval``: re-run a run's evaluators, evaluate any model on a task, summarize results."""

from __future__ import annotations

import argparse
import textwrap

from ..errors import ConfigError

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


def add_parser(sub) -> argparse.ArgumentParser:
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

    e.set_defaults(func=run, eval_parser=e)
    return e


def _eval_run(args) -> int:
    from ..eval import MmclAdapter, evaluate, markdown_table, write_results
    from ..recipe import apply_overrides, recipe_from_dict, recipe_to_dict

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


def _open(args, path, split):
    from ..data.evalsets import open_dataset

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
    from ..eval.adapters import load_adapter
    from ..eval.results import make_record, summarize, write_record

    adapter = load_adapter(args.model, args.pretrained, args.model_type, args.model_config, args.device)
    common = {"batch_size": args.batch_size, "num_workers": args.num_workers, "progress": not args.no_progress}
    task = args.eval_command
    if task == "compositional":
        from ..eval.compositional import evaluate_compositional

        metrics = evaluate_compositional(adapter, args.dataset, args.image_root, **common)
        name = __import__("pathlib").Path(args.dataset).stem
    else:
        data = _open(args, args.dataset, args.split)
        name = data.name
        if task == "zeroshot":
            from ..eval.zero_shot import evaluate_zeroshot

            metrics = evaluate_zeroshot(adapter, data, args.classnames, args.templates, **common)
        elif task == "retrieval":
            from ..eval.retrieval import evaluate_retrieval

            metrics = evaluate_retrieval(adapter, data, tuple(args.recall_k), optimistic=args.optimistic_ties, **common)
        else:
            train = _open(args, args.train or args.dataset, args.train_split)
            if task == "knn":
                from ..eval.probes import evaluate_knn

                metrics = evaluate_knn(adapter, train, data, args.k, args.temperature, **common)
            else:
                from ..eval.probes import evaluate_linear_probe

                val = _open(args, args.val, args.split) if args.val else None
                metrics = evaluate_linear_probe(
                    adapter, train, data, val, args.k_shot, args.weight_decays, seed=args.seed, **common
                )
    record = make_record(task, name, adapter.name, str(adapter.pretrained), metrics)
    path = write_record(record, args.output)
    print(summarize([record]), end="")
    print(f"result: {path}")
    return 0


def run(args) -> int:
    if args.eval_command is None:
        args.eval_parser.print_help()
        return 2
    if args.eval_command == "run":
        return _eval_run(args)
    if args.eval_command == "summarize":
        from ..eval.results import load_records, summarize

        records = load_records(args.paths)
        if not records:
            raise ConfigError(f"no result records in: {', '.join(args.paths)}")
        table = summarize(records, args.format)
        if args.output:
            __import__("pathlib").Path(args.output).write_text(table)
            print(f"wrote {args.output} ({len(records)} results)")
        else:
            print(table, end="")
        return 0
    return _eval_task(args)
