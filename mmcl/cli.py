"""The ``mmcl`` command. Hyperparameters live in recipes; the command line only points at them
and overrides single keys (``section.key=value``)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

EPILOG = textwrap.dedent("""\
    examples:
      mmcl train recipes/quickstart.yaml
      mmcl train recipes/quickstart.yaml train.lr=5e-4 train.steps=200
      mmcl train recipes/quickstart.yaml train.resume=latest
      mmcl eval runs/quickstart
      mmcl data make-synthetic data/shapes --n-train 20000
    """)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmcl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Multi-modal contrastive learning: train CLIP-like models from YAML recipes and evaluate them.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
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

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Re-run the evaluators declared in a run's recipe (eval.datasets) on one of its checkpoints, "
        "and write results.json / results.md in the run folder.",
        epilog="example:\n  mmcl eval runs/quickstart --checkpoint runs/quickstart/checkpoints/step-0000500\n"
        "  mmcl eval runs/quickstart eval.batch_size=64",
    )
    e.add_argument("run_dir", help="a run folder written by `mmcl train`")
    e.add_argument("--checkpoint", help="checkpoint folder to evaluate (default: the run's latest)")
    e.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the run's eval section, e.g. eval.batch_size=64"
    )

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
    ms.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()


def _train(args) -> int:
    from .config import load_recipe
    from .train import Trainer

    recipe = load_recipe(args.recipe, args.overrides)
    Trainer(recipe).fit()
    return 0


def _eval(args) -> int:
    import torch

    from .config import ConfigError, apply_overrides, recipe_from_dict, recipe_to_dict
    from .data import Tokenize, image_transforms
    from .eval import MmclAdapter, evaluate, markdown_table, write_results
    from .train import load_run

    model, tokenizer, recipe, ckpt = load_run(args.run_dir, args.checkpoint)
    if args.overrides:
        bad = [o for o in args.overrides if not o.startswith("eval.")]
        if bad:
            raise ConfigError(f"mmcl eval only takes eval.* overrides, got: {', '.join(bad)}")
        recipe = recipe_from_dict(apply_overrides(recipe_to_dict(recipe), args.overrides))
    device = torch.device("cuda" if torch.cuda.is_available() and not recipe.train.cpu else "cpu")
    model.to(device).eval()
    _, eval_tf = image_transforms(model.vision.data_config(), recipe.data.augment)
    adapter = MmclAdapter(model, Tokenize(tokenizer, recipe.model.text.max_length), eval_tf, device)
    if not recipe.eval.datasets:
        raise ConfigError("the run's recipe declares no eval.datasets")
    records = evaluate(adapter, recipe.eval)
    step = int(ckpt.name.split("-")[-1])
    json_path, md_path = write_results(records, args.run_dir, step, recipe.name)
    print(markdown_table(records))
    print(f"results: {json_path} and {md_path}")
    return 0


def _data(args, parser) -> int:
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
        seed=args.seed,
    )
    root = make_corpus(cfg)
    print(
        f"wrote {root}: train.csv ({cfg.n_train}), test.csv ({cfg.n_test}), novel.csv ({cfg.n_novel}), "
        "classnames.txt, templates.txt"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"mmcl {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_libraries()
    from .config import ConfigError
    from .train.trainer import TrainingError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        return _data(args, parser)
    except (ConfigError, TrainingError) as e:
        print(f"mmcl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
