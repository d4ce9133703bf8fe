"""Cross-modal retrieval at scale: mmcl's streamed retrieval_metrics against CLIP_benchmark and a bare
matrix multiply, side by side: time and peak extra memory.

For each size (N_images x N_captions) every method runs in a fresh subprocess on the same synthetic,
seeded features (unit-norm images; each caption is its image plus Gaussian noise, re-normalised, so
recall is neither 0 nor 1). Generating the features, and a small warm-up call, are not measured: the
resident set is read after they exist, the peak-RSS counter (VmHWM) is reset, and peak extra memory
is VmHWM after the call minus VmRSS before it. Every subprocess gets an address-space cap of its size
before the call plus ``--mem-budget-gb``, so a method that does not fit fails with an allocation
error (reported as OOM) instead of pushing the machine into swap or the OOM killer.

Methods:
    mmcl            mmcl.eval.metrics.retrieval_metrics (caption x image scores streamed in tiles)
    bare            the same multiply and nothing else: torch.mm on 256 x 4096 tiles into one buffer
                    (the floor for any exact method); also one 2048^3 GEMM, the CPU's fp32 peak
    clip_benchmark  clip_benchmark.metrics.zeroshot_retrieval.evaluate through a table-lookup model;
                    it holds the full N_txt x N_img score matrix plus a boolean one of the same shape,
                    so it is skipped ("does not fit") when its estimated need exceeds the budget

    python evaluation/retrieval/bench_retrieval.py        # 10k x 50k, 100k x 500k, 100k x 1M; D = 256
    python evaluation/retrieval/bench_retrieval.py --sizes 2000x10000 4000x20000 --out-name bench_retrieval_smoke

Writes evaluation/retrieval/results/<out-name>.{json,md} (rewritten after every case, so a long run can be
followed and an interrupted one keeps what finished).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"

METHODS = {
    "mmcl": "mmcl retrieval_metrics (streamed)",
    "bare": "bare matmul (same tiles)",
    "clip_benchmark": "CLIP_benchmark zeroshot_retrieval.evaluate",
}
KS = (1, 5, 10)
TEXT_TILE, IMAGE_TILE = 256, 4096  # mmcl's CPU defaults; the bare loop uses the same tiles
CLIP_BATCH = 256  # DataLoader batch; CLIP_benchmark's recall_at_k is batched by the same size
GEN_CHUNK = 65536  # rows per feature-generation chunk (part of the seeded definition of the features)
SEED = 0
# Caption noise: caption = normalize(image + NOISE * randn(D)). With D = 256 a distractor's score has
# standard deviation about NOISE against the positive's ~1, so the positive sits near the maximum of ~10k
# distractors. Seen at 10k x 50k (recall@1 caption->image / image->caption): 0.25 -> 0.54 / 0.88,
# 0.28 -> 0.38 / 0.72, 0.30 -> 0.30 / 0.60. Recall falls as N_images grows.
NOISE = 0.28
TARGET = {"size": "100000x500000", "peak_gb": 4.0, "time_vs_bare": 1.5}


# ----------------------------------------------------------------------------------------- child side


def _status_kb(field: str = "VmRSS") -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_features(n_img: int, n_txt: int, dim: int, noise: float, seed: int = SEED):
    """Seeded unit-norm features, generated in chunks so no temporary is larger than GEN_CHUNK rows."""
    import torch
    import torch.nn.functional as F

    if n_txt % n_img:
        raise ValueError(f"N_captions ({n_txt}) must be a multiple of N_images ({n_img})")
    per_image = n_txt // n_img
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n_img, dim)
    for s in range(0, n_img, GEN_CHUNK):
        e = min(s + GEN_CHUNK, n_img)
        images[s:e] = F.normalize(torch.randn(e - s, dim, generator=g), dim=-1)
    text_to_image = torch.arange(n_txt) // per_image
    texts = torch.empty(n_txt, dim)
    for s in range(0, n_txt, GEN_CHUNK):
        e = min(s + GEN_CHUNK, n_txt)
        noisy = images[text_to_image[s:e]].add_(torch.randn(e - s, dim, generator=g), alpha=noise)
        texts[s:e] = F.normalize(noisy, dim=-1)
    return images, texts, text_to_image


def bare_matmul(images, texts) -> None:
    """The multiply mmcl's streamed retrieval does, tile for tile, with nothing else."""
    import torch

    n_img, n_txt = images.shape[0], texts.shape[0]
    buf = torch.empty(min(TEXT_TILE, n_txt), min(IMAGE_TILE, n_img), dtype=texts.dtype)
    for ts in range(0, n_txt, TEXT_TILE):
        t = texts[ts : ts + TEXT_TILE]
        for is_ in range(0, n_img, IMAGE_TILE):
            im = images[is_ : is_ + IMAGE_TILE]
            torch.mm(t, im.T, out=buf[: t.shape[0], : im.shape[0]])


def gemm_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class TableModel:
    """A 'model' whose inputs are row indices into the precomputed feature tables."""

    def __init__(self, images, texts):
        self.images, self.texts = images, texts

    def encode_image(self, x):
        return self.images[x.long().flatten()]

    def encode_text(self, ids):
        return self.texts[ids.long().flatten()]


def table_tokenizer(captions):
    """Captions are the decimal strings of their row numbers."""
    import torch

    return torch.tensor([int(c) for c in captions])


class CaptionedImages:
    """Item i: (image index as a tensor, the list of its captions); captions are in text_to_image order."""

    def __init__(self, n_img: int, per_image: int, start: int = 0):
        self.n_img, self.per_image, self.start = n_img, per_image, start

    def __len__(self) -> int:
        return self.n_img

    def __getitem__(self, i: int):
        import torch

        i += self.start
        return torch.tensor(i), [str(c) for c in range(i * self.per_image, (i + 1) * self.per_image)]


def _collate(batch):
    import torch

    return torch.stack([x for x, _ in batch]), [caps for _, caps in batch]


def clip_benchmark_retrieval(images, texts, n_img: int | None = None) -> dict:
    import torch
    from clip_benchmark.metrics import zeroshot_retrieval

    n_img = images.shape[0] if n_img is None else n_img
    per_image = texts.shape[0] // images.shape[0]
    loader = torch.utils.data.DataLoader(
        CaptionedImages(n_img, per_image), batch_size=CLIP_BATCH, shuffle=False, collate_fn=_collate
    )
    return zeroshot_retrieval.evaluate(
        TableModel(images, texts), loader, table_tokenizer, "cpu", amp=False, recall_k_list=list(KS)
    )


def child(method: str, n_img: int, n_txt: int, dim: int, budget_gb: float, noise: float, threads: int) -> dict:
    import torch

    from mmcl.eval.metrics import retrieval_metrics

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    images, texts, text_to_image = make_features(n_img, n_txt, dim, noise)
    out: dict = {"generation_seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}
    # Warm-up on a small slice (thread pool, first-call costs), then the GEMM peak for the bare case.
    w_img = min(n_img, 512)
    w_txt = w_img * (n_txt // n_img)
    if method == "mmcl":
        retrieval_metrics(images[:w_img], texts[:w_txt], text_to_image[:w_txt], ks=KS)
    elif method == "bare":
        bare_matmul(images[:w_img], texts[:w_txt])
        out["gemm_peak_gflops"] = gemm_peak_gflops()
    else:
        clip_benchmark_retrieval(images, texts, n_img=w_img)

    limit = _status_kb("VmSize") * 1024 + int(budget_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out["hwm_reset"] = _reset_peak()
    base_kb = _status_kb("VmRSS")
    out["baseline_rss_gb"] = base_kb / 2**20
    try:
        t0 = time.perf_counter()
        if method == "mmcl":
            metrics = retrieval_metrics(images, texts, text_to_image, ks=KS, progress=False)
        elif method == "bare":
            bare_matmul(images, texts)
            metrics = None
        else:
            metrics = clip_benchmark_retrieval(images, texts)
        seconds = time.perf_counter() - t0
    except (RuntimeError, MemoryError) as e:
        if "alloc" in str(e).lower() or isinstance(e, MemoryError):
            out.update(status="OOM", error=(str(e).splitlines() or [type(e).__name__])[0][:200])
            out["peak_extra_gb"] = (_status_kb("VmHWM") - base_kb) / 2**20
            return out
        raise
    out.update(status="ok", seconds=seconds, peak_extra_gb=(_status_kb("VmHWM") - base_kb) / 2**20)
    out["gflops"] = 2 * n_img * n_txt * dim / seconds / 1e9  # useful multiply rate (for mmcl: equivalent)
    if metrics is not None:
        out["metrics"] = metrics
    return out


# ---------------------------------------------------------------------------------------- parent side


def parse_size(s: str) -> tuple[int, int]:
    a, b = s.lower().split("x")
    n_img, n_txt = int(float(a)), int(float(b))
    if n_img <= 0 or n_txt % n_img:
        raise argparse.ArgumentTypeError(f"{s}: need N_images x N_captions with N_captions a multiple of N_images")
    return n_img, n_txt


def features_gb(n_img: int, n_txt: int, dim: int) -> float:
    return ((n_img + n_txt) * dim * 4 + n_txt * 8) / 2**30


def clip_benchmark_need_gb(n_img: int, n_txt: int, dim: int) -> float:
    """Full fp32 score matrix + bool positive-pair matrix, plus headroom: the int64 one-hot of a batch's
    top-k (batch x k x N) and its product with the positives, the gathered and concatenated embedding
    copies; times 1.25 plus 0.25 GB for allocator slack (measured peaks: 0.63-0.71 GB at 2k x 10k, where
    the terms sum to 0.48 GB; 1.33-1.78 GB at 4k x 20k, where they sum to 1.19 GB)."""
    scores = n_txt * n_img * (4 + 1)
    onehot = 2 * CLIP_BATCH * max(KS) * max(n_img, n_txt) * 8
    embeddings = 2 * (n_img + n_txt) * dim * 4
    return 1.25 * (scores + onehot + embeddings) / 2**30 + 0.25


def run_case(method: str, n_img: int, n_txt: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", method, str(n_img), str(n_txt), str(args.dim)]
    cmd += [str(args.mem_budget_gb), str(args.noise), str(args.threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {args.timeout}s"}
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["killed"])[-1]
        oom = res.returncode in (-9, 137) or "alloc" in tail.lower() or "MemoryError" in tail
        return {"status": "OOM" if oom else "error", "returncode": res.returncode, "error": tail[:300]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def hardware() -> dict:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None)
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    try:
        from importlib.metadata import version

        clip_version = version("clip-benchmark")
    except Exception:
        clip_version = None
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "clip_benchmark": clip_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _by(results: list[dict], size: str, method: str) -> dict | None:
    return next((r for r in results if r["size"] == size and r["method"] == method), None)


def _ok(r: dict | None) -> bool:
    return bool(r) and r.get("status") == "ok"


def summarise(results: list[dict], sizes: list[tuple[int, int]], dim: int) -> list[dict]:
    rows = []
    for n_img, n_txt in sizes:
        size = f"{n_img}x{n_txt}"
        m, b, c = (_by(results, size, k) for k in METHODS)
        row: dict = {
            "size": size,
            "n_images": n_img,
            "n_captions": n_txt,
            "features_gb": features_gb(n_img, n_txt, dim),
        }
        if _ok(m) and _ok(b):
            row["mmcl_over_bare"] = m["seconds"] / b["seconds"]
        if _ok(c) and _ok(m):
            row["clip_benchmark_over_mmcl"] = c["seconds"] / m["seconds"]
            keys = [f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in KS]
            diff = max(abs(m["metrics"][k] - c["metrics"][k]) for k in keys)
            row["agree"] = c["agree"] = diff <= 1e-6
            row["max_abs_recall_diff"] = c["max_abs_recall_diff"] = diff
        if _ok(m):
            row["recall@1"] = {d: m["metrics"][f"{d}_retrieval_recall@1"] for d in ("image", "text")}
        rows.append(row)
    return rows


def _fmt(r: dict | None, key: str, spec: str = ".2f") -> str:
    """The value, or for a case that did not finish its status in the time column and '-' elsewhere."""
    if r is None:
        return "-"
    if r.get("status") != "ok":
        if key != "seconds":
            return "-"
        return r["status"] + (f" (needs ~{r['estimated_gb']:.3g} GB)" if "estimated_gb" in r else "")
    return format(r[key], spec)


def markdown(results: list[dict], summary: list[dict], meta: dict) -> str:
    hw = meta["hardware"]
    peaks = [r["gemm_peak_gflops"] for r in results if "gemm_peak_gflops" in r]
    peak = f"{max(peaks):.1f} GFLOP/s (best over the bare-matmul children)" if peaks else "not measured in this run"
    lines = [
        "# Cross-modal retrieval at scale: time and peak extra memory",
        "",
        "Recall@1/5/10 in both directions over N_images images and N_captions captions "
        f"({meta['captions_per_image']} per image), D = {meta['dim']}, fp32, on synthetic seeded features "
        f"(caption = normalize(image + {meta['noise']} * randn)). Each method runs once, in its own subprocess, "
        "after a small warm-up; generating the features is not measured. Peak extra memory = peak resident "
        "set during the call minus the resident set before it (the features are not counted). Memory cap per "
        f"case: {meta['mem_budget_gb']} GB above that.",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Hardware: {hw['cpu']}, {hw['cores']} cores, {hw['memory_gb']} GiB; torch {hw['torch']} with "
        f"{meta['threads']} threads per case; CLIP_benchmark {hw['clip_benchmark']}; {hw['platform']}. "
        f"fp32 GEMM peak (one 2048^3 multiply): {peak}.",
        "",
        "- **mmcl**: `mmcl.eval.metrics.retrieval_metrics`, the score matrix streamed in "
        f"{TEXT_TILE} x {IMAGE_TILE} tiles (one GEMM plus two comparisons per score).",
        f"- **bare**: the same multiply and nothing else, `torch.mm` on the same {TEXT_TILE} x {IMAGE_TILE} tiles "
        "into one buffer: the floor for an exact method. GFLOP/s = 2 N_img N_txt D / time.",
        "- **CLIP_b**: `clip_benchmark.metrics.zeroshot_retrieval.evaluate` (amp=False, batch "
        f"{CLIP_BATCH}) through a table-lookup model and tokenizer; its time includes the lookup loop. It builds "
        "the full N_txt x N_img fp32 score matrix and a bool matrix of the same shape, so it runs only where "
        "its estimated need fits the cap.",
        "",
        "| N_img x N_txt | features (GB) | mmcl (s) | bare (s) | bare GFLOP/s (2048^3 GEMM) | mmcl / bare | CLIP_b (s) "
        "| CLIP_b / mmcl | mmcl peak (GB) | bare peak (GB) | CLIP_b peak (GB) | agree | R@1 t2i / i2t |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        size = row["size"]
        m, b, c = (_by(results, size, k) for k in METHODS)
        r1 = row.get("recall@1")
        r1 = f"{r1['image']:.3f} / {r1['text']:.3f}" if r1 else "-"
        bare_rate = f"{b['gflops']:.1f} ({b['gemm_peak_gflops']:.1f})" if _ok(b) else _fmt(b, "gflops")
        lines.append(
            f"| {row['n_images']:,} x {row['n_captions']:,} | {row['features_gb']:.2f} | {_fmt(m, 'seconds')} "
            f"| {_fmt(b, 'seconds')} | {bare_rate} "
            f"| {format(row['mmcl_over_bare'], '.2f') if 'mmcl_over_bare' in row else '-'} "
            f"| {_fmt(c, 'seconds')} "
            f"| {format(row['clip_benchmark_over_mmcl'], '.2f') if 'clip_benchmark_over_mmcl' in row else '-'} "
            f"| {_fmt(m, 'peak_extra_gb', '.2f')} | {_fmt(b, 'peak_extra_gb', '.2f')} "
            f"| {_fmt(c, 'peak_extra_gb', '.2f')} | {row.get('agree', '-')} "
            f"| {r1} |"
        )
    tgt = next((r for r in summary if r["size"] == TARGET["size"]), None)
    m = _by(results, TARGET["size"], "mmcl")
    if tgt and _ok(m) and "mmcl_over_bare" in tgt:
        met = m["peak_extra_gb"] <= TARGET["peak_gb"] and tgt["mmcl_over_bare"] <= TARGET["time_vs_bare"]
        verdict = (
            f"measured {m['peak_extra_gb']:.2f} GB and {tgt['mmcl_over_bare']:.2f}x: {'met' if met else 'NOT met'}"
        )
    else:
        verdict = "that size is not in this run"
    lines += [
        "",
        "Notes:",
        "",
        f"- Target: at {TARGET['size'].replace('x', ' x ')}, mmcl peak extra memory <= {TARGET['peak_gb']:.0f} GB "
        f"and time <= {TARGET['time_vs_bare']}x the bare matmul; {verdict}.",
        "- agree: mmcl's recall@1/5/10 in both directions equal CLIP_benchmark's to 1e-6 (only where CLIP_b ran). "
        "CLIP_b re-normalises the features and multiplies them in one GEMM, so a caption whose positive and "
        "k-th competitor differ by about 1e-7 could in principle flip; max_abs_recall_diff is in the JSON.",
        "- 'does not fit': CLIP_b's estimated need (N_txt N_img x 5 bytes for the score and positive-pair "
        f"matrices, plus 2 x {CLIP_BATCH} x {max(KS)} x max(N_img, N_txt) x 8 bytes for its int64 top-k one-hot and "
        "its product, plus embedding copies; x 1.25 + 0.25 GB) exceeds the cap, so it was not attempted. 'OOM': an "
        "allocation failed under the cap.",
        "- Raw numbers (generation time, baseline RSS, all metrics, per-case GEMM peak) are in the JSON.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["10000x50000", "100000x500000", "100000x1000000"])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--mem-budget-gb", type=float, default=16.0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--noise", type=float, default=NOISE, help="caption noise scale (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's default)")
    p.add_argument("--timeout", type=int, default=7200, help="seconds per case")
    p.add_argument(
        "--attempt-all", action="store_true", help="run CLIP_benchmark even where its estimate exceeds the budget"
    )
    p.add_argument("--out-name", default="bench_retrieval")
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        method, n_img, n_txt, dim, budget, noise, threads = args.child
        res = child(method, int(n_img), int(n_txt), int(dim), float(budget), float(noise), int(threads))
        print(json.dumps(res))
        return

    sizes = [parse_size(s) for s in args.sizes]
    hw = hardware()
    args.threads = args.threads or hw["torch_threads"]
    per_image = {n_txt // n_img for n_img, n_txt in sizes}
    meta = {
        "hardware": hw,
        "dim": args.dim,
        "noise": args.noise,
        "seed": SEED,
        "captions_per_image": per_image.pop() if len(per_image) == 1 else "varies",
        "threads": args.threads,
        "mem_budget_gb": args.mem_budget_gb,
        "tiles": [TEXT_TILE, IMAGE_TILE],
        "clip_batch": CLIP_BATCH,
        "ks": list(KS),
        "target": TARGET,
        "command": "python evaluation/retrieval/bench_retrieval.py " + " ".join(sys.argv[1:]),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    out = OUT / args.out_name
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    cases = [(n_img, n_txt, method) for n_img, n_txt in sizes for method in args.methods]
    for i, (n_img, n_txt, method) in enumerate(cases, 1):
        size = f"{n_img}x{n_txt}"
        r = {"size": size, "n_images": n_img, "n_captions": n_txt, "method": method, "label": METHODS[method]}
        need = clip_benchmark_need_gb(n_img, n_txt, args.dim) if method == "clip_benchmark" else None
        if need is not None:
            r["estimated_gb"] = need
        stamp = datetime.now().strftime("%H:%M:%S")
        if need is not None and need > args.mem_budget_gb and not args.attempt_all:
            r["status"] = "does not fit"
        else:
            print(f"[{i}/{len(cases)} {stamp}] {size} {METHODS[method]} ...", file=sys.stderr, flush=True)
            r.update(run_case(method, n_img, n_txt, args))
        line = f"[{i}/{len(cases)} {datetime.now().strftime('%H:%M:%S')}] {size} {METHODS[method]}: {r['status']}"
        if r["status"] == "ok":
            line += f", {r['seconds']:.2f} s, peak extra {r['peak_extra_gb']:.2f} GB, {r['gflops']:.1f} GFLOP/s"
        elif "estimated_gb" in r:
            line += f" (estimated {need:.1f} GB, budget {args.mem_budget_gb} GB)"
        if "error" in r:
            line += f": {r['error']}"
        print(line, file=sys.stderr, flush=True)
        results.append(r)
        summary = summarise(results, sizes, args.dim)
        meta["finished"] = datetime.now().isoformat(timespec="seconds")
        out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "summary": summary, "results": results}, indent=2)
        )
        out.with_suffix(".md").write_text(markdown(results, summary, meta))
    print(markdown(results, summarise(results, sizes, args.dim), meta))


if __name__ == "__main__":
    main()
