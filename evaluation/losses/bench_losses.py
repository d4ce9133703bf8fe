"""Forward+backward time and peak memory of contrastive losses: mmcl against open_clip, side by side.

Each (loss, batch) case runs in a fresh subprocess: a warm-up call, then timed calls. Peak extra
memory is the process's peak resident set minus its resident set just before the first call, so
it counts the loss's temporaries, not the inputs. Every subprocess gets an address-space cap of its
size before the call plus ``--mem-budget-gb``, so a dense loss that does not fit fails with an
allocation error (reported as OOM) instead of pushing the machine into swap or the OOM killer.

    python evaluation/losses/bench_losses.py                       # B in 1k, 8k, 32k, 65k; D = 512
    python evaluation/losses/bench_losses.py --batches 1024 8192 --repeats 3

Writes evaluation/losses/results/bench_losses.{json,md}.
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
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"

CASES = {
    # name: (library, constructor expression evaluated in the child)
    "mmcl infonce (chunked 1024)": "mmcl.create_loss('infonce', chunk_size=1024)",
    "mmcl infonce (dense)": "mmcl.create_loss('infonce')",
    "open_clip ClipLoss": "open_clip.loss.ClipLoss()",
    "mmcl siglip (chunked 1024)": "mmcl.create_loss('siglip', chunk_size=1024)",
    "mmcl siglip (dense)": "mmcl.create_loss('siglip')",
    "open_clip SigLipLoss": "open_clip.loss.SigLipLoss()",
}


def _rss_kb(field: str = "VmRSS") -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(case: str, batch: int, dim: int, repeats: int, budget_gb: float) -> dict:
    import open_clip  # noqa: F401
    import torch

    import mmcl  # noqa: F401

    if "siglip" in case and "siglip" not in mmcl.list_losses():
        return {"status": "unavailable"}
    torch.manual_seed(0)
    loss_fn = eval(CASES[case])  # noqa: S307 - expressions are the fixed table above
    img = torch.nn.functional.normalize(torch.randn(batch, dim), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(batch, dim), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    args = (img, txt, scale, bias) if "siglip" in case.lower() else (img, txt, scale)
    limit = _rss_kb("VmSize") * 1024 + int(budget_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    base = _rss_kb()
    times = []
    try:
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            loss = loss_fn(*args)
            loss.backward()
            if i:  # the first call is the warm-up
                times.append(time.perf_counter() - t0)
            img.grad = txt.grad = scale.grad = bias.grad = None
    except (RuntimeError, MemoryError) as e:
        if "alloc" in str(e).lower() or isinstance(e, MemoryError):
            return {"status": "OOM", "error": str(e).splitlines()[0][:200]}
        raise
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"status": "ok", "seconds": min(times), "peak_extra_gb": (peak_kb - base) / 2**20, "loss": loss.item()}


def run_case(case: str, batch: int, dim: int, repeats: int, budget_gb: float, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", case, str(batch), str(dim), str(repeats), str(budget_gb)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {timeout}s"}
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["killed"])[-1]
        return {"status": "OOM" if res.returncode in (-9, 137) or "alloc" in tail.lower() else "error", "error": tail}
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Contrastive loss forward+backward: time and peak extra memory",
        "",
        f"Machine: {meta['machine']}. D = {meta['dim']}, fp32, best of {meta['repeats']} after a warm-up. "
        f"Memory cap per case: {meta['mem_budget_gb']} GB above its inputs. Command: `{meta['command']}`.",
        "Hardware limit: about 68 GFLOP/s fp32 GEMM on these 2 cores (../shared/ENVIRONMENT.md); "
        "dense InfoNCE (mmcl and open_clip) costs 6 B x B x D matrix products (12 B^2 D FLOP); mmcl chunked "
        "in one process costs 4 (both directions share one recomputed logit block).",
        "",
        "| batch | loss | time (s) | peak extra memory (GB) | vs open_clip (time ratio, >1 = mmcl faster) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        peer = "open_clip ClipLoss" if "infonce" in r["case"] else "open_clip SigLipLoss"
        ref = next((x for x in results if x["batch"] == r["batch"] and x["case"] == peer), None)
        ratio = ""
        if r["case"].startswith("mmcl") and ref and ref.get("status") == "ok" and r.get("status") == "ok":
            ratio = f"{ref['seconds'] / r['seconds']:.2f}"
        elif r["case"].startswith("mmcl") and ref and ref.get("status") != "ok" and r.get("status") == "ok":
            ratio = f"open_clip: {ref['status']}"
        if r.get("status") == "ok":
            lines.append(f"| {r['batch']} | {r['case']} | {r['seconds']:.3f} | {r['peak_extra_gb']:.2f} | {ratio} |")
        else:
            lines.append(f"| {r['batch']} | {r['case']} | {r['status']} | | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 8192, 32768, 65536])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--mem-budget-gb", type=float, default=16.0)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    p.add_argument("--out", default=str(OUT / "bench_losses"))
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        case, batch, dim, repeats, budget = args.child
        print(json.dumps(child(case, int(batch), int(dim), int(repeats), float(budget))))
        return
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "dim": args.dim,
        "repeats": args.repeats,
        "mem_budget_gb": args.mem_budget_gb,
        "command": "python evaluation/losses/bench_losses.py " + " ".join(sys.argv[1:]),
    }
    results = []
    for batch in args.batches:
        for case in args.cases:
            r = {
                "case": case,
                "batch": batch,
                **run_case(case, batch, args.dim, args.repeats, args.mem_budget_gb, args.timeout),
            }
            print(json.dumps(r), flush=True)
            results.append(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
