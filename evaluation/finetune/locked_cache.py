"""The locked-tower cache's speed-up: the LiT recipe (recipes/lit-freeze-quickstart.yaml) trained
with and without ``model.vision.cache_locked``, interleaved in one run.

The image tower is a random-init timm tower (EfficientNet-B0 by default, head dropout off) at 112 px,
locked by the recipe's ``model.freeze``; the text tower and projections are the recipe's (the
quickstart's 2-layer BERT). The data is a generated captioned-shapes corpus drawn at 112 px. Each
training runs ``--epochs`` epochs; the runs alternate (uncached, cached, uncached, ...)
``--repeats`` times so that other load on the machine falls on both. Per run it records the wall
time of every optimizer step and reports samples/s over the first epoch (the cache being filled)
and over the later epochs (the cache read), and checks that the two modes logged the same losses.

    python evaluation/finetune/locked_cache.py                       # EfficientNet-B0, 3 epochs, 2 repeats
    python evaluation/finetune/locked_cache.py --tower resnet18 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
RECIPE = ROOT / "recipes" / "lit-freeze-quickstart.yaml"


def make_corpus(root: Path, n: int, size: int) -> Path:
    from mmcl.data.synthetic import make_corpus as generate
    from mmcl.recipe import SyntheticConfig

    generate(SyntheticConfig(root=str(root), n_train=n, n_test=16, n_novel=16, image_size=size), progress=False)
    return root / "train.csv"


def train_once(args, train_csv: Path, out_dir: Path, cache: bool) -> dict:
    """One training of the recipe; the wall time of each step and the logged losses."""
    import mmcl

    steps = args.epochs * (args.samples // args.batch_size)
    overrides = [
        f"data.train={train_csv}",
        "data.synthetic=null",
        f"data.batch_size={args.batch_size}",
        "data.num_workers=0",
        f"model.vision.name={args.tower}",
        "model.vision.kwargs={drop_rate: 0.0}",
        f"model.vision.image_size={args.image_size}",
        "model.init_from=null",
        f"model.vision.cache_locked={str(cache).lower()}",
        f"train.steps={steps}",
        "train.warmup_steps=2",
        f"train.checkpoint_every={steps + 1}",
        "train.log_every=1",
        "train.trackers=[jsonl]",
        "train.progress=false",
        f"train.output_dir={out_dir}",
        "eval.datasets=[]",
    ]
    trainer = mmcl.Trainer(mmcl.load_recipe(RECIPE, overrides))
    stamps: list[float] = []
    after_step = trainer._after_step

    def timed(*a, **k):
        stamps.append(time.perf_counter())
        return after_step(*a, **k)

    trainer._after_step = timed
    trainer.fit()
    per_epoch, b = args.samples // args.batch_size, args.batch_size
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]
    return {
        "cache": cache,
        # the first step (start-up, first batch) is left out of the first epoch's rate
        "epoch1_samples_per_s": (per_epoch - 1) * b / (stamps[per_epoch - 1] - stamps[0]),
        "later_samples_per_s": (len(stamps) - per_epoch) * b / (stamps[-1] - stamps[per_epoch - 1]),
        "losses": losses,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tower", default="efficientnet_b0")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--samples", type=int, default=256, help="generated training pairs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "locked_cache.json"))
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        train_csv = make_corpus(Path(tmp) / "corpus", args.samples, args.image_size)
        for r in range(args.repeats):
            for cache in (False, True):
                run = train_once(args, train_csv, Path(tmp) / f"run-{r}-{cache}", cache)
                runs.append(run)
                print(
                    f"repeat {r} cache={cache!s:5}: epoch 1 {run['epoch1_samples_per_s']:.1f} samples/s, "
                    f"later epochs {run['later_samples_per_s']:.1f} samples/s"
                )
    summary = {}
    for cache in (False, True):
        mine = [x for x in runs if x["cache"] is cache]
        for key in ("epoch1_samples_per_s", "later_samples_per_s"):
            summary[f"{'cached' if cache else 'uncached'}_{key}"] = statistics.median(x[key] for x in mine)
    summary["later_epochs_speedup"] = summary["cached_later_samples_per_s"] / summary["uncached_later_samples_per_s"]
    summary["losses_equal"] = all(x["losses"] == runs[0]["losses"] for x in runs)
    print(
        f"later epochs: uncached {summary['uncached_later_samples_per_s']:.1f} samples/s, cached "
        f"{summary['cached_later_samples_per_s']:.1f} samples/s, ratio {summary['later_epochs_speedup']:.2f}x; "
        f"first epoch: {summary['uncached_epoch1_samples_per_s']:.1f} vs {summary['cached_epoch1_samples_per_s']:.1f}; "
        f"losses equal in every run: {summary['losses_equal']}"
    )
    import torch

    out = {
        "command": "python evaluation/finetune/locked_cache.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "summary": summary,
        "runs": [{k: v for k, v in x.items() if k != "losses"} for x in runs],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
