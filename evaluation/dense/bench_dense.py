"""Dense against image-level contrastive learning on the same backbone and budget, and fine-tuning transfer.

Arms (``--recipe``, by default ``recipes/densecl-quickstart.yaml``: the narrow ResNet-10 with output
stride 8, a 6x6 feature map at 48 px, on unlabelled shape scenes that also carry segmentation masks;
``recipes/densecl-crowded.yaml`` is the same on scenes of 2-6 objects with geometry and cell negatives):
- densecl: the recipe as written (DenseCL, dense weight 0.5 after a 50-step warm-up);
- global: the same recipe with ``loss.kwargs.dense_weight=0``: MoCo v2 on the same model, data, steps and
  seed (the dense head is built but never weighted), i.e. the image-level loss alone;
- random: the same backbone at random init, no training;
- densecl-geometry (on request): the recipe with ``loss.kwargs.match=geometry``: each query cell's
  positive is the key cell nearest to it in the source image, from the views' crop boxes, instead of
  the most similar backbone feature;
- densecl-cells (on request): densecl-geometry plus ``loss.kwargs.cell_negatives=1.5``: the key cells of the
  same image more than 1.5 cells from the positive are negatives too (beside the queue of pooled keys).

Every arm is scored by the same evaluators (``mmcl.eval.evaluate``) on 1,000 unseen scenes:
- ``dense_probe``: a per-pixel linear probe (1x1 conv on the frozen 6x6 feature map, bilinear upsampling,
  33 classes = background + 32 colour x shape) trained on 2,000 training scenes' masks;
- ``linear_probe`` and ``knn`` on pooled features (the recipe's ``train_max_items``: 2,000 training scenes);
- ``finetune`` (the arms in ``--finetune-arms``, by default densecl only: the scratch baseline is the same
  for every arm, and it is the slow part): the whole tower fine-tuned with a linear head on 1% and 10% of
  the 10,000 labelled training scenes (stratified, seeded), against the same architecture trained from
  scratch on the same subset (30 epochs, AdamW 1e-3, flip + translation); ``gain`` = pretrained - scratch.

``--label-schemes shape colour`` also fits the per-pixel probe on the same frozen maps with the mask
classes merged: ``shape`` (background + 4 shapes, colour ignored) or ``colour`` (background + 8
colours), to tell what the maps localise; reported as ``dense_probe_<scheme>/...``.

Runs are written to ``--runs``/<arm>-seed<k>; an arm whose run folder already holds a finished run of the
same recipe is evaluated without training again (``--retrain`` forces training).

    python evaluation/dense/bench_dense.py           # seed 0, writes evaluation/dense/results/dense.{json,md}
    python evaluation/dense/bench_dense.py --arms global random densecl   # the slow fine-tuning last
    python evaluation/dense/bench_dense.py --seeds 0 1 --arms densecl global
    python evaluation/dense/bench_dense.py --finetune-arms --label-schemes shape colour   # finished runs, more probes
    python evaluation/dense/bench_dense.py --recipe recipes/densecl-crowded.yaml --finetune-arms \
        --runs runs/dense-crowded --out evaluation/dense/results/dense_crowded   # 2-6 objects, no labels: no fine-tune
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
RECIPE = "recipes/densecl-quickstart.yaml"
ARMS = ("densecl", "global", "random", "densecl-geometry", "densecl-cells")
CELL_RADIUS = 1.5  # densecl-cells: key cells more than 1.5 cells from the positive (all but the 8 neighbours)
SCHEMES = ("shape", "colour")  # merged mask classes, see scheme_probes
HEADLINE = [
    ("dense_probe", "mean_iou", "dense probe mIoU"),
    ("dense_probe", "pixel_acc", "dense probe pixel acc"),
    ("dense_probe", "foreground_iou", "foreground IoU"),
    ("dense_probe_shape", "mean_iou", "shape-only probe mIoU"),
    ("dense_probe_colour", "mean_iou", "colour-only probe mIoU"),
    ("linear_probe", "acc1", "linear probe"),
    ("knn", "acc1", "kNN"),
    ("finetune", "1%/pretrained_acc1", "fine-tune 1%"),
    ("finetune", "10%/pretrained_acc1", "fine-tune 10%"),
    ("finetune", "1%/scratch_acc1", "scratch 1%"),
    ("finetune", "10%/scratch_acc1", "scratch 10%"),
]


def recipe_for(arm: str, seed: int, run_dir: Path, extra: list[str] | None = None, recipe: str = RECIPE):
    import mmcl

    overrides = [*(extra or []), f"train.seed={seed}", f"train.output_dir={run_dir}", "train.progress=false"]
    overrides.append(f"name=dense-bench-{arm}")
    if arm == "global":
        overrides.append("loss.kwargs.dense_weight=0")
    if arm in ("densecl-geometry", "densecl-cells"):
        overrides.append("loss.kwargs.match=geometry")
    if arm == "densecl-cells":
        overrides.append(f"loss.kwargs.cell_negatives={CELL_RADIUS}")
    return mmcl.load_recipe(ROOT / recipe, overrides)


def eval_config(recipe, finetune: bool):
    """The recipe's datasets, plus (``finetune``) the fine-tuning comparison on all 10,000 labelled
    training scenes."""
    from mmcl.recipe import EvalConfig, EvalDatasetConfig

    base = recipe.eval.datasets[0]
    datasets = [base]
    if finetune:
        datasets.append(
            EvalDatasetConfig(
                name=base.name,
                path=base.path,
                tasks=["finetune"],
                train_path=base.train_path,
                finetune_fractions=[0.01, 0.1],
            )
        )
    return EvalConfig(batch_size=recipe.eval.batch_size, datasets=datasets)


def scheme_probes(adapter, ds, batch_size: int, schemes: list[str]) -> dict:
    """The per-pixel probe on the same frozen maps of eval dataset ``ds``, with the mask classes
    merged by each scheme."""
    import torch

    from mmcl.data.synthetic import SHAPES
    from mmcl.eval.dense_probe import dense_probe
    from mmcl.eval.runner import segmentation_splits

    if not schemes:
        return {}
    with torch.no_grad():
        splits = segmentation_splits(adapter, ds, batch_size)
    n = len(SHAPES)  # a mask value v > 0 is 1 + colour * n + shape
    merges = {"shape": lambda m: (m - 1) % n + 1, "colour": lambda m: (m - 1) // n + 1}
    out = {}
    for name in schemes:
        train_m, test_m = (torch.where(m > 0, merges[name](m), m) for m in (splits["train"][1], splits["test"][1]))
        metrics = dense_probe(splits["train"][0], train_m, splits["test"][0], test_m, epochs=ds.dense_probe_epochs)
        out.update({f"dense_probe_{name}/{k}": v for k, v in metrics.items() if isinstance(v, float)})
    return out


def finished(run_dir: Path, steps: int) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text())["step"] >= steps


def run_arm(
    arm: str,
    seed: int,
    runs: Path,
    retrain: bool,
    finetune: bool,
    schemes: list[str],
    extra: list[str],
    recipe_path: str = RECIPE,
) -> dict:
    import torch

    import mmcl
    from mmcl.data import image_transforms
    from mmcl.eval import MmclAdapter, evaluate

    run_dir = runs / f"{arm}-seed{seed}"
    recipe = recipe_for(arm, seed, run_dir, extra, recipe_path)
    evals = eval_config(recipe, finetune)
    train_s = None
    if arm == "random":
        mmcl.data.synthetic.ensure_corpus(recipe.data.synthetic, progress=False)
        torch.manual_seed(seed)
        model = mmcl.create_model(recipe.model)
        _, eval_tf = image_transforms(model.vision.data_config(), recipe.data.augment)
        adapter = MmclAdapter(model, None, eval_tf, torch.device("cpu"), name="random")
    else:
        if retrain or not finished(run_dir, recipe.train.steps):
            recipe.eval.datasets = []  # evaluated below, with the other arms' evaluators
            start = time.perf_counter()
            mmcl.Trainer(recipe).fit()
            train_s = time.perf_counter() - start
        adapter = MmclAdapter.from_run(run_dir, device="cpu")
    start = time.perf_counter()
    records = evaluate(adapter, evals, progress=False)
    metrics: dict = {}
    for r in records:
        for k, v in r["metrics"].items():
            metrics[f"{r['task']}/{k}"] = v
    metrics.update(scheme_probes(adapter, evals.datasets[0], evals.batch_size, schemes))
    cached = run_dir / "bench-result.json"
    if train_s is None and cached.is_file():  # the same finished run (or random init), scored before:
        for k, v in json.loads(cached.read_text())["metrics"].items():  # keep what was not recomputed
            metrics.setdefault(k, v)
    result = {"arm": arm, "seed": seed, "train_s": train_s, "eval_s": time.perf_counter() - start, "metrics": metrics}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bench-result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}%"
    return f"{100 * statistics.mean(values):.1f}% ± {100 * statistics.stdev(values):.1f}"


def write_report(results: list[dict], args, command: str) -> str:
    arms = [a for a in ARMS if any(r["arm"] == a for r in results)]
    lines = [
        "# Dense (DenseCL) vs image-level (MoCo v2) contrastive learning, and fine-tuning transfer",
        "",
        f"`{args.recipe}`{' with ' + ', '.join(f'`{o}`' for o in args.override) if args.override else ''}, "
        f"seeds {args.seeds}; 1,000 unseen scenes. densecl = the recipe as written; global = the same recipe with "
        "`loss.kwargs.dense_weight=0`. Fine-tune rows: the pretrained tower fine-tuned on 1% / 10% of the "
        "labels; scratch rows: the same architecture from random init on the same subset.",
        "",
        "| metric | " + " | ".join(arms) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    for task, key, label in HEADLINE:
        cells = []
        for arm in arms:
            vals = [r["metrics"].get(f"{task}/{key}") for r in results if r["arm"] == arm]
            vals = [v for v in vals if v is not None]
            cells.append(mean_sd(vals) if vals else "-")
        if all(c == "-" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    times = []
    for arm in arms:
        t = [r["train_s"] for r in results if r["arm"] == arm and r["train_s"] is not None]
        times.append(f"{statistics.mean(t) / 60:.1f} min" if t else "-")
    if any(t != "-" for t in times):  # runs reused from an earlier invocation were not timed here
        lines.append("| training time | " + " | ".join(times) + " |")
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs.", ""]
    lines += [f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=RECIPE, help=f"the dense recipe every arm starts from (default {RECIPE})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]))
    p.add_argument("--runs", default=str(ROOT / "runs" / "dense-bench"), help="folder of the arms' run folders")
    p.add_argument("--retrain", action="store_true", help="train even where a finished run exists")
    p.add_argument(
        "--finetune-arms",
        nargs="*",
        choices=ARMS,
        default=["densecl"],
        help="arms that also get the fine-tuning comparison (its scratch baseline is the same for every arm)",
    )
    p.add_argument(
        "--label-schemes",
        nargs="*",
        choices=SCHEMES,
        default=[],
        help="also probe with the mask classes merged: shape (colour ignored) and/or colour (shape ignored)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for every arm (repeatable), e.g. data.synthetic.single_fraction=0.0 for "
        "two-object scenes (with their own data.synthetic.root, data.train and eval.datasets)",
    )
    p.add_argument("--out", default=str(RESULTS / "dense"), help="results path, no suffix")
    args = p.parse_args()
    os.chdir(ROOT)  # the recipe's corpus paths are relative to the repository
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            results.append(
                run_arm(
                    arm,
                    seed,
                    Path(args.runs),
                    args.retrain,
                    arm in args.finetune_arms,
                    args.label_schemes,
                    args.override,
                    args.recipe,
                )
            )
            print(json.dumps({k: v for k, v in results[-1].items() if k != "metrics"}), flush=True)
    command = "python evaluation/dense/bench_dense.py"
    if args.recipe != RECIPE:
        command += f" --recipe {args.recipe}"
    command += " --seeds " + " ".join(map(str, args.seeds))
    if tuple(args.arms) != ARMS[:3]:
        command += " --arms " + " ".join(args.arms)
    if args.finetune_arms != ["densecl"]:
        command += " --finetune-arms" + "".join(f" {a}" for a in args.finetune_arms)
    if args.label_schemes:
        command += " --label-schemes " + " ".join(args.label_schemes)
    command += "".join(f" --override '{o}'" for o in args.override)
    if Path(args.runs) != ROOT / "runs" / "dense-bench":
        command += f" --runs {args.runs}"
    if Path(args.out) != RESULTS / "dense":
        command += f" --out {args.out}"
    report = write_report(results, args, command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    Path(args.out + ".md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
