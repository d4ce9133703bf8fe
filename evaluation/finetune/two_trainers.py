"""Same model, two trainers: one open_clip model fine-tuned by mmcl and by open_clip_train, step by step.

Both start from one open_clip model-config JSON and one ``.safetensors`` file written here, and
train on one TSV of generated captioned images (``mmcl.data.synthetic.make_corpus``), with the
same seed, batch size, AdamW settings, warm-up + cosine schedule, weight decay, fp32, no gradient
clipping. What each side runs is its own code:

- mmcl: ``mmcl.Trainer`` built from a recipe (``model.backend: open_clip``); its seeded sampler,
  its CSV/TSV reader and collate, open_clip's tokenizer and eval transform as the backend gives
  them (``data.augment.enabled: false``), its AdamW parameter groups, ``LambdaLR`` schedule,
  ``infonce`` loss, logit-scale clamp; the body of ``Trainer._loop`` (``micro_batches`` ->
  ``_train_step`` -> ``_after_step``) is driven here step by step, so it can be timed in windows.
- open_clip: ``open_clip.create_model_and_transforms(name, pretrained=file, output_dict=True)``,
  ``open_clip_train.data.CsvDataset`` (its eval transform for training: open_clip_train has no
  switch that turns its training augmentation off), ``open_clip.create_loss`` (``ClipLoss``),
  ``open_clip_train.scheduler.cosine_lr``, AdamW over the parameter groups of
  ``open_clip_train.main`` (its no-decay rule, restated here because it is inline in ``main``),
  and ``open_clip_train.train.train_one_epoch`` itself, which also clamps the logit scale.

The only thing made equal from outside is the order of the batches: the open_clip side's
DataLoader takes its ``batch_sampler`` from mmcl's sampler (``trainer.data.sampler``, one epoch
permutation after another), instead of torch's global RNG. The script checks that every batch's
images and token ids are bit-identical on both sides.

Timing: the two trainings alternate in windows of ``--window`` steps in one process (mmcl first
in even pairs, open_clip first in odd ones); each open_clip window is one ``train_one_epoch``
call over a DataLoader of exactly those batches (its step counter is ``window_batches * epoch + i``,
so the schedule runs on across windows). Samples/s leave out the first pair of windows (warm-up).

    python evaluation/finetune/two_trainers.py                 # the reported run (~3 min, 2 cores)
    python evaluation/finetune/two_trainers.py --steps 4 --window 2 --n-train 64 --batch-size 8 --out /tmp/tt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODEL_NAME = "twotrainers-vit"
# a small open_clip CLIP: its own ViT and text transformer, at a size that trains on 2 CPU cores
MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 192, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}


def write_inputs(work: Path, n_train: int, seed: int) -> dict:
    """The corpus, a TSV with absolute image paths, and the model's JSON + safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from mmcl.data.synthetic import make_corpus
    from mmcl.recipe import SyntheticConfig

    corpus = work / "shapes"
    make_corpus(SyntheticConfig(root=str(corpus), n_train=n_train, n_test=4, n_novel=4, image_size=64), progress=False)
    tsv = work / "pairs.tsv"
    with open(corpus / "train.csv", newline="") as f, open(tsv, "w") as out:
        out.write("filepath\ttitle\n")
        for row in csv.DictReader(f):
            out.write(f"{(corpus / row['filepath']).resolve()}\t{row['title']}\n")
    config = work / f"{MODEL_NAME}.json"
    config.write_text(json.dumps(MODEL_CFG, indent=2) + "\n")
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME)
    weights = work / f"{MODEL_NAME}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"tsv": tsv, "config": config, "weights": weights}


def build_mmcl(files: dict, a, run_dir: Path):
    import mmcl
    from mmcl.recipe import recipe_from_dict

    recipe = recipe_from_dict(
        {
            "name": "two-trainers",
            "data": {
                "train": str(files["tsv"]),
                "image_key": "filepath",
                "caption_key": "title",
                "batch_size": a.batch_size,
                "num_workers": 0,
                "augment": {"enabled": False},
            },
            "model": {"backend": "open_clip", "name": str(files["config"]), "pretrained": str(files["weights"])},
            "loss": {"name": "infonce"},
            "train": {
                "output_dir": str(run_dir),
                "steps": a.steps,
                "lr": a.lr,
                "warmup_steps": a.warmup,
                "schedule": "cosine",
                "weight_decay": a.weight_decay,
                "betas": [0.9, 0.98],
                "eps": 1e-6,
                "grad_clip": None,
                "precision": "fp32",
                "seed": a.seed,
                "log_every": 1,
                "checkpoint_every": 10**9,
                "trackers": [],
                "progress": False,
            },
            "eval": {"datasets": []},
        }
    )
    return mmcl.Trainer(recipe)


def mmcl_order(trainer, steps: int) -> list[list[int]]:
    """The index batches mmcl's sampler gives, epoch after epoch, for ``steps`` steps."""
    sampler, order, epoch = trainer.data.sampler, [], 0
    while len(order) < steps:
        sampler.set_epoch(epoch)
        order.extend(list(sampler))
        epoch += 1
    sampler.set_epoch(0)
    return order[:steps]


def openclip_param_groups(model, wd: float) -> list[dict]:
    """open_clip_train.main's AdamW groups (its rule, restated: it is inline in main())."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
    rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    return [{"params": gain_or_bias, "weight_decay": 0.0}, {"params": rest, "weight_decay": wd}]


def decay_rules(trainer, oc_model) -> dict:
    """Which parameters each trainer decays, by open_clip parameter name."""
    from mmcl.train.optim import param_groups

    names = {id(p): n.removeprefix("model.") for n, p in trainer.unwrapped.named_parameters()}
    mm = {names[id(p)] for p in param_groups(trainer.unwrapped, 1.0)[0]["params"]}
    oc_names = {id(p): n for n, p in oc_model.named_parameters()}
    oc = {oc_names[id(p)] for p in openclip_param_groups(oc_model, 1.0)[1]["params"]}
    return {"mmcl_decayed": len(mm), "open_clip_decayed": len(oc), "differ": sorted(mm ^ oc)}


class Recorder:
    """open_clip_train's ``tb_writer``: keeps the values train_one_epoch logs at each step."""

    def __init__(self):
        self.values: dict[str, dict[int, float]] = {}

    def add_scalar(self, name, value, step):
        self.values.setdefault(name, {})[int(step)] = float(value)


class KeepBatches:
    """A DataLoader wrapper that keeps the batches it yields (compared with mmcl's after the window)."""

    def __init__(self, loader, kept: list, num_samples: int):
        self.loader, self.kept = loader, kept
        self.num_batches, self.num_samples = len(loader), num_samples

    def __iter__(self):
        for batch in self.loader:
            self.kept.append(batch)
            yield batch

    def __len__(self):
        return len(self.loader)


def build_openclip(files: dict, a):
    import open_clip
    import torch
    from open_clip_train.data import CsvDataset
    from open_clip_train.params import parse_args
    from open_clip_train.scheduler import cosine_lr

    model, _, preprocess_val = open_clip.create_model_and_transforms(
        MODEL_NAME, pretrained=str(files["weights"]), output_dict=True
    )
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    # open_clip_train's own arguments, as its command line would give them (beta1/beta2/eps: its
    # defaults for ViT names), and what its main() sets for one CPU process
    args = parse_args(
        ["--model", MODEL_NAME, "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--wd", str(a.weight_decay),
         "--warmup", str(a.warmup), "--precision", "fp32", "--seed", str(a.seed), "--log-every-n-steps", "1",
         "--train-data", str(files["tsv"]), "--csv-img-key", "filepath", "--csv-caption-key", "title"]
    )  # fmt: skip
    args.device, args.distributed, args.world_size, args.rank, args.local_rank = "cpu", False, 1, 0, 0
    # as main() sets them
    args.distill = args.distill_model is not None and args.distill_pretrained is not None
    args.wandb = "wandb" in args.report_to or "all" in args.report_to
    dataset = CsvDataset(
        args.train_data, preprocess_val, args.csv_img_key, args.csv_caption_key, args.csv_separator, tokenizer
    )
    loss = open_clip.create_loss(args)
    optimizer = torch.optim.AdamW(
        openclip_param_groups(model, args.wd), lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps
    )
    scheduler = cosine_lr(optimizer, args.lr, args.warmup, a.steps)
    return SimpleNamespace(model=model, dataset=dataset, args=args, loss=loss, opt=optimizer, sched=scheduler)


def max_abs_diff(sd_a: dict, sd_b: dict) -> tuple[float, str]:
    worst, name = 0.0, ""
    for k, v in sd_a.items():
        d = (v.float() - sd_b[k].float()).abs().max().item()
        if d > worst:
            worst, name = d, k
    return worst, name


def run(a) -> dict:
    import torch
    from open_clip_train.data import DataInfo
    from open_clip_train.train import train_one_epoch
    from tqdm.auto import tqdm

    from mmcl.train.batches import micro_batches

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    work = Path(a.work or tempfile.mkdtemp(prefix="two-trainers-"))
    files = write_inputs(work, a.n_train, a.seed)
    trainer = build_mmcl(files, a, work / "mmcl-run")
    oc = build_openclip(files, a)
    init_diff, _ = max_abs_diff(trainer.unwrapped.model.state_dict(), oc.model.state_dict())
    decay = decay_rules(trainer, oc.model)
    order = mmcl_order(trainer, a.steps)

    # mmcl's loop as Trainer._loop runs it (start-up outside the timing, as open_clip's set-up is)
    trainer._start()
    trainer._bar = tqdm(total=a.steps, disable=True)
    trainer.model.train()
    trainer.position.commit()
    stream = micro_batches(trainer)
    stats = {"mmcl": {"loss": [], "lr": [], "sec": [], "samples": []}, "open_clip": {"sec": [], "samples": []}}
    mm_batches: dict[int, tuple] = {}
    same_batches, recorder, oc_kept = [], Recorder(), []

    def mmcl_window(k: int) -> None:
        t0, n = time.perf_counter(), 0
        for _ in range(a.window):
            batches = [next(stream)]
            stats["mmcl"]["lr"].append(trainer.optimizer.param_groups[0]["lr"])
            loss = trainer._train_step(batches)
            if loss is None:
                raise RuntimeError(f"mmcl skipped step {trainer.step} (non-finite)")
            trainer._after_step(batches, loss, a.steps, 0)
            stats["mmcl"]["loss"].append(loss)
            mm_batches[trainer.step - 1] = (batches[0]["images"], batches[0]["input_ids"], batches[0]["index"])
            n += batches[0]["size"]
        stats["mmcl"]["sec"].append(time.perf_counter() - t0)
        stats["mmcl"]["samples"].append(n)

    def openclip_window(k: int) -> None:
        batches = order[k * a.window : (k + 1) * a.window]
        loader = torch.utils.data.DataLoader(oc.dataset, batch_sampler=batches, num_workers=0)
        kept: list = []
        data = {"train": DataInfo(KeepBatches(loader, kept, sum(len(b) for b in batches)))}
        t0 = time.perf_counter()
        train_one_epoch(oc.model, data, oc.loss, k, oc.opt, None, oc.sched, None, oc.args, tb_writer=recorder)
        stats["open_clip"]["sec"].append(time.perf_counter() - t0)
        stats["open_clip"]["samples"].append(sum(len(b) for b in batches))
        oc_kept.extend((k * a.window + i, b) for i, b in enumerate(kept))

    n_windows = a.steps // a.window
    for k in range(n_windows):
        first, second = (mmcl_window, openclip_window) if k % 2 == 0 else (openclip_window, mmcl_window)
        first(k)
        second(k)
        for step, (images, texts) in oc_kept:
            mi, mt, idx = mm_batches.pop(step)
            same_batches.append(
                bool(torch.equal(mi, images) and torch.equal(mt, texts) and idx.tolist() == order[step])
            )
        oc_kept.clear()
        print(
            f"window {k + 1}/{n_windows}: step {trainer.step} loss mmcl {stats['mmcl']['loss'][-1]:.6f} "
            f"open_clip {recorder.values['train/loss'][trainer.step - 1]:.6f}",
            flush=True,
        )
    trainer._bar.close()
    stream.close()

    steps = list(range(a.steps))
    oc_loss = [recorder.values["train/loss"][s] for s in steps]
    oc_lr = [recorder.values["train/lr"][s] for s in steps]
    diff = [m - o for m, o in zip(stats["mmcl"]["loss"], oc_loss)]
    w_diff, w_name = max_abs_diff(trainer.unwrapped.model.state_dict(), oc.model.state_dict())

    def rate(side: str, skip: int) -> float:
        return sum(stats[side]["samples"][skip:]) / sum(stats[side]["sec"][skip:])

    skip = 1 if n_windows > 1 else 0
    window_ratios = [
        (stats["mmcl"]["samples"][k] / stats["mmcl"]["sec"][k])
        / (stats["open_clip"]["samples"][k] / stats["open_clip"]["sec"][k])
        for k in range(skip, n_windows)
    ]
    import open_clip

    return {
        "settings": {
            **{k: v for k, v in vars(a).items() if k not in ("out", "work")},
            "schedule": "warm-up + cosine to 0",
            "betas": [0.9, 0.98],
            "eps": 1e-6,
            "grad_clip": None,
            "precision": "fp32",
            "model_cfg": MODEL_CFG,
            "params": sum(p.numel() for p in oc.model.parameters()),
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "python": platform.python_version(),
        },
        "initial_weights_max_abs_diff": init_diff,
        "weight_decay_rule": decay,
        "batches_identical": all(same_batches),
        "batches_compared": len(same_batches),
        "loss": {"mmcl": stats["mmcl"]["loss"], "open_clip": oc_loss, "difference": diff},
        "max_abs_loss_diff": max(abs(d) for d in diff),
        "steps_bit_identical": sum(d == 0 for d in diff),
        "lr": {"mmcl": stats["mmcl"]["lr"], "open_clip": oc_lr},
        "max_abs_lr_diff": max(abs(m - o) for m, o in zip(stats["mmcl"]["lr"], oc_lr)),
        "final_weights_max_abs_diff": w_diff,
        "final_weights_worst_tensor": w_name,
        "throughput": {
            "window_steps": a.window,
            "windows": n_windows,
            "windows_timed": n_windows - skip,
            "mmcl_samples_per_s": rate("mmcl", skip),
            "open_clip_samples_per_s": rate("open_clip", skip),
            "ratio_mmcl_over_open_clip": rate("mmcl", skip) / rate("open_clip", skip),
            "window_ratio_median": statistics.median(window_ratios),
            "window_ratio_min": min(window_ratios),
            "window_ratio_max": max(window_ratios),
            "window_seconds": {"mmcl": stats["mmcl"]["sec"], "open_clip": stats["open_clip"]["sec"]},
        },
        "peak_rss_gb_both_in_one_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(result["loss"]["mmcl"]) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    top.plot(steps, result["loss"]["open_clip"], lw=3.5, color="tab:orange", alpha=0.55, label="open_clip_train")
    top.plot(steps, result["loss"]["mmcl"], lw=1.2, color="tab:blue", label="mmcl")
    top.set_ylabel("training loss (InfoNCE)")
    tp = result["throughput"]
    top.set_title(
        f"Same open_clip model, two trainers: max |loss diff| {result['max_abs_loss_diff']:.2g}, "
        f"samples/s ratio {tp['ratio_mmcl_over_open_clip']:.2f}",
        fontsize=10,
    )
    top.legend()
    bottom.plot(steps, result["loss"]["difference"], marker=".", lw=0.8, color="k")
    bottom.axhline(0, color="grey", lw=0.5)
    bottom.set_ylabel("mmcl - open_clip")
    bottom.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--window", type=int, default=5, help="steps per timed window (divides --steps)")
    p.add_argument("--n-train", type=int, default=320, help="generated captioned images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="folder for the corpus, model files and mmcl's run (default: temp)")
    p.add_argument("--out", default=str(HERE / "results" / "two_trainers"), help="writes OUT.json and OUT.png")
    a = p.parse_args(argv)
    if a.steps % a.window:
        p.error("--window must divide --steps")
    args = list(sys.argv[1:] if argv is None else argv)
    result = {"command": " ".join(["python", str(Path(__file__).resolve().relative_to(ROOT)), *args]), **run(a)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    tp = result["throughput"]
    print(
        f"max |loss diff| {result['max_abs_loss_diff']:.3g} ({result['steps_bit_identical']}/{a.steps} steps "
        f"bit-identical); final weights max |diff| {result['final_weights_max_abs_diff']:.3g}; "
        f"samples/s mmcl {tp['mmcl_samples_per_s']:.2f} open_clip {tp['open_clip_samples_per_s']:.2f} "
        f"ratio {tp['ratio_mmcl_over_open_clip']:.3f}; wrote {out.with_suffix('.json')}"
    )
    return result


if __name__ == "__main__":
    main()
