"""``mmcl wise-ft RUN --alphas 0,0.5,1``: WiSE-FT, the weight-space ensemble of a fine-tuned run and
the weights it started from, evaluated at each mixing coefficient."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ..errors import ConfigError

EPILOG = textwrap.dedent("""\
    theta(alpha) = (1 - alpha) * theta_start + alpha * theta_finetuned; the start is the run's
    model.init_from, else the pretrained weights its recipe loads (model.pretrained / path,
    model.vision.weights, model.text.path), or --start. LoRA runs are merged first.

    examples:
      mmcl wise-ft runs/finetune --alphas 0,0.25,0.5,0.75,1
      mmcl wise-ft runs/finetune --dataset data/shapes/test.csv --dataset data/shapes-sketch/test.csv
      mmcl wise-ft runs/finetune --alphas 0,0.5,1 --save-alpha 0.5 models/wise-0.5
      mmcl wise-ft runs/finetune eval.batch_size=128
    """)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "wise-ft",
        help="WiSE-FT: interpolate a fine-tuned run with its start weights and evaluate each mix",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate the weight-space ensembles of a fine-tuned run and the weights it started from "
        "(Wortsman et al. 2022) with the run's eval datasets or given ones; write wise_ft.json (metrics per "
        "alpha, the best alpha) and wise_ft.png, and optionally save one alpha's model as a pretrained folder.",
        epilog=EPILOG,
    )
    p.add_argument("run_dir", help="a fine-tuning run folder written by `mmcl train`")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="mixing coefficients in [0, 1], comma-separated")
    p.add_argument("--start", help="the weights to interpolate with (pretrained, run or open_clip folder)")
    p.add_argument("--checkpoint", help="the fine-tuned checkpoint folder (default: the run's latest)")
    p.add_argument(
        "--dataset",
        action="append",
        help="evaluate this dataset (repeatable; the first is the fine-tuning distribution, the second a shifted "
        "one) with the settings of the run's first eval dataset; classnames/templates files beside it are used",
    )
    p.add_argument(
        "--select",
        help="DATASET or DATASET/TASK/METRIC the best alpha maximises (default: the mean "
        "of every dataset's first headline metric)",
    )
    p.add_argument("--output", help="output folder (default: RUN_DIR/wise_ft)")
    p.add_argument("--save-alpha", nargs=2, metavar=("ALPHA", "OUT"), help="save theta(ALPHA) as a pretrained folder")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the run's eval section")
    p.set_defaults(func=run)
    return p


def _alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        alphas = []
    if not alphas or not all(0 <= a <= 1 for a in alphas):
        raise ConfigError(f"--alphas: comma-separated numbers in [0, 1], e.g. 0,0.25,0.5,0.75,1; got {text!r}")
    return alphas


def _eval_config(run_dir: str, datasets: list[str] | None, overrides: list[str]):
    import dataclasses

    from ..models.run_folder import load_run_recipe
    from ..recipe import apply_overrides, recipe_from_dict, recipe_to_dict

    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise ConfigError(f"mmcl wise-ft only takes eval.* overrides, got: {', '.join(bad)}")
    recipe = load_run_recipe(run_dir)
    if overrides:
        recipe = recipe_from_dict(apply_overrides(recipe_to_dict(recipe), overrides), model_only=True)
    cfg = recipe.eval
    if not datasets:
        return cfg
    if not cfg.datasets:
        raise ConfigError("--dataset copies the settings of the run's first eval dataset, and it has none")
    template = cfg.datasets[0]
    entries = []
    for path in datasets:
        folder = Path(path).parent
        files = {
            key: str(folder / Path(getattr(template, key)).name)
            for key in ("classnames", "templates")
            if getattr(template, key) and (folder / Path(getattr(template, key)).name).is_file()
        }
        name = Path(path).stem if Path(path).suffix else Path(path).name
        if name in {e.name for e in entries}:  # test.csv of two corpora: tell them apart by folder
            name = f"{folder.name}-{name}"
        entries.append(dataclasses.replace(template, name=name, path=str(path), **files))
    return dataclasses.replace(cfg, datasets=entries)


def run(args) -> int:
    from ..eval.wise_ft import save_alpha, wise_ft_sweep, write_sweep

    alphas = _alphas(args.alphas)
    keep = None
    if args.save_alpha:
        try:
            keep = float(args.save_alpha[0])
        except ValueError:
            raise ConfigError(f"--save-alpha ALPHA OUT: ALPHA must be a number, got {args.save_alpha[0]!r}") from None
    eval_cfg = _eval_config(args.run_dir, args.dataset, args.overrides)
    result = wise_ft_sweep(
        args.run_dir,
        alphas,
        start=args.start,
        eval_cfg=eval_cfg,
        checkpoint=args.checkpoint,
        select=args.select,
        device=args.device,
    )
    keys = result["selected_by"]
    print(f"start: {result['start']}\nfine-tuned: {result['checkpoint']}")
    print("| alpha | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for row in result["alphas"]:
        print(f"| {row['alpha']:g} | " + " | ".join(f"{100 * row['metrics'][k]:.2f}%" for k in keys) + " |")
    print(f"best alpha: {result['best_alpha']:g} (mean {100 * result['best_score']:.2f}%)")
    json_path, png = write_sweep(result, args.output or Path(args.run_dir) / "wise_ft")
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))
    if keep is not None:
        out = save_alpha(result, keep, args.save_alpha[1])
        print(f"wrote {out}: theta(alpha={keep:g}); mmcl.load_pretrained({str(out)!r}) loads it")
    return 0
