"""``mmcl eval``: re-run a run's evaluators, evaluate any model on a task, summarize results.

The task subcommands come from the evaluation-task registry (:mod:`mmcl.eval.tasks`): each task
gives its help, its example and its own options, and ``mmcl eval TASK`` builds the same dataset
entry a recipe's ``eval.datasets`` holds, so both run the same task code.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..errors import ConfigError
from ..eval.tasks import get_task, ordered_tasks

# the subcommands of `mmcl eval` (anything else after `mmcl eval` is a run folder: `mmcl eval RUN_DIR`)
COMMANDS = ("run", *(n for t in ordered_tasks() for n in (t, *get_task(t).aliases)), "suite", "summarize")

EVAL_EPILOG = textwrap.dedent("""\
    models (--model):
      runs/quickstart                   an mmcl run folder (--pretrained: a checkpoint folder in it)
      recipes/quickstart.yaml           a recipe: its model before training (random init, or the weights it
                                        names; seeded by train.seed): the baseline of a run
      ViT-B-32 --pretrained w.pt        an open_clip architecture with a local weights file
      --model-config cfg.json           an open_clip model-config JSON (timm + HF towers work)
      path/to/hf_clip                   a transformers CLIP/SigLIP/VisionTextDualEncoder folder

    datasets (--dataset), read by a data source told from the path or named by --dataset-kind:
      data.csv / data.jsonl             one row per (image, caption); rows sharing an image are its captions
      folder/                           folder/<class>/<image> (labelled) or a flat image folder
      wds_root/                         CLIP_benchmark's WebDataset layout (<split>/nshards.txt, *.tar)
      shards/{0..9}.tar                 WebDataset shards (img2dataset layout; also a list file, a folder of them)
      hf_dataset/ or x.parquet          Hugging Face datasets (save_to_disk folder, parquet/arrow)
      cifar10 --data-root DIR           a benchmark by name, read in its own layout under DIR (--download
                                        fetches it where possible): imagenet1k, mscoco_captions, sugar_crepe,
                                        wds_<name>, ... (mmcl.data.benchmarks.list_benchmarks())

    Result files are CLIP_benchmark's JSON; their task names are CLIP_benchmark's where it has the
    task (zeroshot_classification, zeroshot_retrieval, linear_probe).

    examples:
    """)


def _model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        required=True,
        help="an mmcl run or pretrained folder, a recipe YAML (its model untrained: a baseline), "
        "an HF CLIP folder, or an open_clip name",
    )
    g.add_argument("--pretrained", help="mmcl: checkpoint folder (default: the run's latest); open_clip: weights file")
    g.add_argument(
        "--model-type",
        default="auto",
        choices=["auto", "mmcl", "open_clip", "hf"],
        help="how to read --model (default: auto, from what the path holds)",
    )
    g.add_argument("--model-config", help="open_clip model-config JSON, registered under its file name")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _benchmark_args(g) -> None:
    g.add_argument(
        "--data-root",
        help="--dataset names a benchmark (cifar10, imagenet1k, mscoco_captions, sugar_crepe, wds_<name>, ...) "
        "whose files are under this folder, in the benchmark's own layout",
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="fetch the benchmark's files into --data-root first where that is possible (network)",
    )
    g.add_argument(
        "--language",
        default="en",
        help="language of captions and prompts (ISO 639-1: en, de, zh, ...): a multilingual benchmark's captions, "
        "the shipped translated class names and templates; recorded in the result (default: en)",
    )


def _dataset_args(p, task) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help=task.dataset_help)
    g.add_argument("--image-root", help="folder image paths are relative to (default: the file's folder)")
    _benchmark_args(g)
    if not task.reads_dataset:
        return
    g.add_argument(
        "--dataset-kind",
        default="auto",
        help="the data source reading it: auto (from the path), csv, jsonl, folder, hf, wds, or another "
        "registered one (mmcl.list_sources())",
    )
    g.add_argument("--split", default="test", help="split for WebDataset/HF data or a benchmark (default: test)")
    g.add_argument("--image-key", help="image column / key (default: filepath, image, ...)")
    g.add_argument("--caption-key", help="caption column (default: title, caption, text, ...; WebDataset: txt)")
    g.add_argument("--label-key", help="label column (default: label)")
    g.add_argument(
        "--max-items",
        type=int,
        help="use only the first N images of --dataset (and of --val); a training set has --train-max-items",
    )


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


def _add_task(esub, task) -> None:
    t = esub.add_parser(
        task.name,
        aliases=list(task.aliases),
        help=task.about,
        description=task.about[0].upper() + task.about[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  {task.example}",
    )
    t.set_defaults(eval_task=task.name)
    _model_args(t)
    _dataset_args(t, task)
    if task.arguments:
        g = t.add_argument_group(task.name)
        for arg in task.arguments:
            options = dict(arg.options)
            if options.get("action") is None:  # `--k-shot K_SHOT`, not the field's name
                options.setdefault("metavar", arg.flags[0].lstrip("-").replace("-", "_").upper())
            g.add_argument(*arg.flags, dest=arg.dest, help=arg.help, **options)
    _output_args(t)


def _add_run(esub) -> None:
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


def _add_suite(esub) -> None:
    su = esub.add_parser(
        "suite",
        help="run a suite of (benchmark, task) pairs and write one grouped table (markdown, CSV, HTML)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every (benchmark, task) entry of a suite (a YAML file, or a shipped suite: clip_benchmark, "
        "datacomp) on one model, each benchmark read from its folder under --data-root. Writes each result JSON "
        "and summary.md / summary.csv / summary.html with the average per group to --output. An entry whose files "
        "are missing is reported and the others go on (exit status 1 when any did not run).",
        epilog="examples:\n  mmcl eval suite clip_benchmark --model runs/quickstart --data-root /data/benchmarks\n"
        "  mmcl eval suite my_suite.yaml --model ViT-B-32 --pretrained w.pt --data-root /data --output results/vitb32\n"
        "  mmcl eval summarize results/vitb32 results/vitl14 --suite clip_benchmark --format html --output cmp.html",
    )
    su.add_argument("suite", help="a suite YAML file, or a shipped suite's name (clip_benchmark, datacomp)")
    _model_args(su)
    g = su.add_argument_group("data")
    g.add_argument(
        "--data-root",
        required=True,
        help="the folder holding each benchmark's folder (the suite's data_root template, default {root}/{benchmark})",
    )
    g.add_argument("--download", action="store_true", help="fetch missing benchmark files where possible (network)")
    g.add_argument("--language", default="en", help="language of captions and prompts (default: en)")
    g.add_argument("--max-items", type=int, help="use only the first N images of every benchmark (a quick check)")
    _output_args(su)


def _add_summarize(esub) -> None:
    sm = esub.add_parser(
        "summarize",
        help="a markdown/CSV table from many result JSON files",
        description="Collect result files (CLIP_benchmark-shaped JSON from mmcl eval or CLIP_benchmark, a run's "
        "results.json, or folders of them) into one table of the headline metrics, in percent.",
        epilog="example:\n  mmcl eval summarize eval_results/ --format csv --output summary.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sm.add_argument("paths", nargs="+", help="result JSON files or folders")
    sm.add_argument("--format", choices=["markdown", "csv", "html"], default="markdown", help="table format (markdown)")
    sm.add_argument(
        "--suite",
        help="lay the results out as this suite's table (a YAML file or a shipped suite): one column per model, "
        "the average per group",
    )
    sm.add_argument("--output", help="write the table here instead of printing it")


def add_parser(sub) -> argparse.ArgumentParser:
    tasks = [get_task(name) for name in ordered_tasks()]
    examples = "".join(f"  {t.example}\n" for t in tasks) + (
        "  mmcl eval zeroshot --model runs/quickstart --dataset cifar10 --data-root /data/cifar10\n"
        "  mmcl eval suite clip_benchmark --model runs/quickstart --data-root /data/benchmarks\n"
        "  mmcl eval summarize eval_results/\n"
    )
    e = sub.add_parser(
        "eval",
        help="evaluate any model: " + ", ".join(t.name for t in tasks),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate an mmcl run, an open_clip model or a Hugging Face CLIP model on local data. "
        "Each task writes one CLIP_benchmark-compatible JSON (dataset, model, pretrained, task, metrics).",
        epilog=EVAL_EPILOG + examples,
    )
    esub = e.add_subparsers(dest="eval_command", metavar="TASK")
    _add_run(esub)
    for task in tasks:
        _add_task(esub, task)
    _add_suite(esub)
    _add_summarize(esub)
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


def _benchmark_entry(args, task) -> dict:
    """The entry fields of ``--dataset NAME --data-root DIR``: the benchmark read from DIR."""
    from ..data.benchmarks import get_benchmark, is_benchmark, missing_files, tasks_of

    if args.data_root is None:
        raise ConfigError(f"--dataset {args.dataset} is a benchmark: pass --data-root DIR, the folder its files are in")
    if not is_benchmark(args.dataset):
        get_benchmark(args.dataset, "--dataset")  # the error lists the benchmarks
    bench = get_benchmark(args.dataset, "--dataset")
    if task.name not in tasks_of(bench):
        raise ConfigError(
            f"--dataset {bench.name} is a {bench.task} benchmark: run it with mmcl eval {' or '.join(tasks_of(bench))}"
        )
    root = Path(args.data_root).expanduser()
    if args.download:
        root.mkdir(parents=True, exist_ok=True)
    elif not root.is_dir():
        raise missing_files(bench, root, str(root))
    values = {"path": str(root), "kind": bench.name, "name": bench.name}
    if any(need.key == "train_path" for need in task.needs) and getattr(args, "train_path", None) is None:
        values["train_path"] = str(root)  # the benchmark's training split
    return values


def dataset_entry(args, task):
    """The :class:`~mmcl.recipe.EvalDatasetConfig` a recipe would hold for ``mmcl eval TASK ARGS``."""
    from ..data.benchmarks import is_benchmark, normalize_language
    from ..recipe import EvalDatasetConfig
    from ..recipe.validate import validate_eval_dataset

    values = dict.fromkeys(task.dataset_fields, args.dataset)
    values["image_root"] = args.image_root
    if task.reads_dataset:
        values.update(
            kind=args.dataset_kind,
            split=args.split,
            image_key=args.image_key,
            caption_key=args.caption_key,
            label_key=args.label_key,
            max_items=args.max_items,
        )
    values.update({a.dest: getattr(args, a.dest) for a in task.arguments if getattr(args, a.dest) is not None})
    p = Path(args.dataset)
    values["name"] = p.stem if p.suffix else p.name
    benchmark = args.data_root is not None or args.download or (is_benchmark(args.dataset) and not p.exists())
    if benchmark:
        values.update(dict.fromkeys(task.dataset_fields, None))
        values.update(_benchmark_entry(args, task))
    elif any(need.key == "train_path" for need in task.needs):
        values.setdefault("train_path", args.dataset)  # the training split of the same data
    values.update(language=normalize_language(args.language), download=args.download)
    cfg = EvalDatasetConfig(tasks=[task.name], **values)
    validate_eval_dataset(cfg, f"mmcl eval {task.name}")
    return cfg


def _eval_task(args) -> int:
    from ..eval.adapters import load_adapter
    from ..eval.checks import check_eval_dataset
    from ..eval.context import EvalData
    from ..eval.results import make_record, summarize, write_record

    task = get_task(args.eval_task)
    cfg = dataset_entry(args, task)
    check_eval_dataset(cfg, f"mmcl eval {task.name}")
    adapter = load_adapter(args.model, args.pretrained, args.model_type, args.model_config, args.device)
    data = EvalData(cfg, args.batch_size, args.num_workers, progress=not args.no_progress)
    metrics = task.run(adapter, data, cfg)
    record = make_record(task.name, cfg.name, adapter.name, str(adapter.pretrained), metrics, cfg.language)
    path = write_record(record, args.output)
    print(summarize([record]), end="")
    print(f"result: {path}")
    return 0


def _suite(args) -> int:
    from ..eval.adapters import load_adapter
    from ..eval.suite import load_suite, run_suite, suite_table, write_suite_tables

    suite = load_suite(args.suite)
    output = Path(args.output if args.output != "eval_results" else f"eval_results/{suite.name}")
    if output.suffix == ".json":
        raise ConfigError(f"--output {output}: a suite writes a folder of results and tables, not one JSON file")
    root = Path(args.data_root).expanduser()
    if not root.is_dir() and not args.download:
        raise ConfigError(f"--data-root {root}: no such folder")
    adapter = load_adapter(args.model, args.pretrained, args.model_type, args.model_config, args.device)
    records, failed = run_suite(
        suite,
        adapter,
        root,
        output,
        args.batch_size,
        args.num_workers,
        not args.no_progress,
        args.language,
        args.download,
        args.max_items,
    )
    written = write_suite_tables(suite, records, output)
    print(suite_table(suite, records), end="")
    print(f"results: {output} ({len(records)} of {sum(not e.skip for e in suite.entries)} entries); tables: "
          + ", ".join(p.name for p in written))  # fmt: skip
    return 1 if failed else 0


def _summarize(args) -> int:
    from ..eval.results import load_records, summarize

    records = load_records(args.paths)
    if not records:
        raise ConfigError(f"no result records in: {', '.join(args.paths)}")
    if args.suite:
        from ..eval.suite import load_suite, suite_table

        table = suite_table(load_suite(args.suite), records, args.format)
    else:
        table = summarize(records, args.format)
    if args.output:
        Path(args.output).write_text(table)
        print(f"wrote {args.output} ({len(records)} results)")
    else:
        print(table, end="")
    return 0


def run(args) -> int:
    if args.eval_command is None:
        args.eval_parser.print_help()
        return 2
    if args.eval_command == "run":
        return _eval_run(args)
    if args.eval_command == "summarize":
        return _summarize(args)
    if args.eval_command == "suite":
        return _suite(args)
    return _eval_task(args)
