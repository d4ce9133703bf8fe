"""``mmcl train RECIPE [KEY=VALUE ...]``: train from a recipe.

Command modules import the library inside ``run``: ``mmcl --help`` and a mistake in a recipe are
reported before torch, timm or transformers load.
"""

from __future__ import annotations

import argparse
import textwrap

from ..recipe import read_recipe


def add_parser(sub) -> argparse.ArgumentParser:
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

    t.set_defaults(func=run)
    return t


def run(args) -> int:
    # Types and values first: a mistake there is reported before torch, timm or transformers load.
    recipe = read_recipe(args.recipe, args.overrides) if not args.smoke else None
    from ..train.recipes import check_recipe  # the layers' checks import the libraries they check against

    if args.smoke:
        from ..train.smoke import smoke_recipe

        recipe = smoke_recipe(args.recipe, args.overrides)
    else:
        check_recipe(recipe)
    from ..train import Trainer

    Trainer(recipe).fit()
    return 0
