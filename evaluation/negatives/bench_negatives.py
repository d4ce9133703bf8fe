"""Do cluster-guided negatives help? Arms trained side by side on the generated shapes corpus.

The corpus knows its truth:
- **False negatives.** About 10% of held-out pairs share their attributes, and so their meaning,
  with another pair; many training pairs do too. Plain InfoNCE pushes those apart.
- **Compositional hard negatives.** `mmcl data make-compositional` writes captions that differ
  from the true one by one colour, one shape, swapped colours or an inverted relation.

Each arm trains the quickstart model (recipes/quickstart.yaml) for ``--steps`` steps with one
loss, from the same seed and data order, then is scored on:
- held-out retrieval: instance R@1, and attribute-level R@1, where a retrieved pair with the same
  attributes counts;
- zero-shot accuracy;
- the compositional test.

Arms:
- ``infonce``: plain InfoNCE;
- ``mask``: cluster_infonce, same-cluster false negatives masked;
- ``hard``: cluster_infonce, +1.0 log-weight on negatives from the 2 nearest clusters, no mask;
- ``mask+hard``: both.

HCL in mmcl is a two-view loss for image-image training, so it is not an image-text arm here.

    python evaluation/negatives/bench_negatives.py                    # 4 arms x 400 steps
    python evaluation/negatives/bench_negatives.py --steps 100 --arms infonce mask   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = {"k": 64, "momentum": 1e-3, "gate": 0.4}
ARMS = {
    "infonce": {"name": "infonce", "kwargs": {}},
    "mask": {"name": "cluster_infonce", "kwargs": {**CLUSTER, "false_negatives": "mask"}},
    "hard": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "none", "hard_negatives": 2, "hard_log_weight": 1.0},
    },
    "mask+hard": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "mask", "hard_negatives": 2, "hard_log_weight": 1.0},
    },
}


def mmcl(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "mmcl.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"mmcl {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def run_arm(arm: str, steps: int, seed: int, out: Path) -> dict:
    loss = ARMS[arm]
    run = out / f"{arm}-seed{seed}"
    t0 = time.perf_counter()
    mmcl(
        "train", "recipes/quickstart.yaml", f"name=neg-{arm}", f"train.output_dir={run}", f"train.steps={steps}",
        f"train.seed={seed}", "train.progress=false", "train.checkpoint_every=100000", f"loss.name={loss['name']}",
        f"loss.kwargs={json.dumps(loss['kwargs'])}",
    )
    train_s = time.perf_counter() - t0
    records = json.loads((run / "results.json").read_text())
    metrics = {}
    for rec in records:
        if rec["dataset"] != "shapes-test":
            continue
        m = rec["metrics"]
        if rec["task"] == "zeroshot":
            metrics["zeroshot_acc1"] = m["acc1"]
        else:
            metrics.update(
                r1_i2t=m["text_retrieval_recall@1"], r1_t2i=m["image_retrieval_recall@1"],
                attr_r1_i2t=m["text_retrieval_attribute_recall@1"], attr_r1_t2i=m["image_retrieval_attribute_recall@1"],
            )
    comp_dir = run / "compositional"
    mmcl("eval", "compositional", "--model", str(run), "--dataset", "data/shapes/compositional.jsonl", "--output",
         str(comp_dir))
    comp = json.loads(next(comp_dir.glob("*.json")).read_text())["metrics"]
    metrics.update({f"comp_{k.split('/')[-1]}": v for k, v in comp.items() if k != "num_items"})
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = next((x for x in reversed(logged) if "negatives/cluster_agreement" in x), {})
    metrics["cluster_agreement"] = last.get("negatives/cluster_agreement")
    metrics["masked_pairs_per_row"] = last.get("negatives/masked_pairs")
    return {"arm": arm, "seed": seed, "steps": steps, "train_s": train_s, **metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(ROOT / "runs" / "negatives"))
    p.add_argument("--results", default=str(ROOT / "evaluation" / "results" / "negatives"))
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    mmcl("data", "make-synthetic", "data/shapes") if not (ROOT / "data/shapes/train.csv").is_file() else None
    if not (ROOT / "data/shapes/compositional.jsonl").is_file():
        mmcl("data", "make-compositional", "data/shapes/test.csv", "data/shapes/compositional.jsonl")
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            row = run_arm(arm, args.steps, seed, Path(args.out))
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python evaluation/negatives/bench_negatives.py", *sys.argv[1:]])
    out.with_suffix(".json").write_text(json.dumps({"command": command, "arms": ARMS, "rows": rows}, indent=2) + "\n")
    cols = [
        ("zeroshot_acc1", "zero-shot"), ("r1_i2t", "R@1 i->t"), ("r1_t2i", "R@1 t->i"),
        ("attr_r1_i2t", "attr R@1 i->t"), ("attr_r1_t2i", "attr R@1 t->i"), ("comp_acc", "compositional"),
        ("comp_swap_colours", "swap colours"), ("comp_swap_relation", "swap relation"),
        ("cluster_agreement", "image-caption same cluster"),
    ]
    lines = [
        "# Cluster-guided negatives on the shapes corpus",
        "",
        f"Quickstart model and data, {args.steps} steps per arm, seeds {args.seeds}; held-out `test` split "
        "(1,000 pairs) and its 3,328 compositional items. Command: `" + command + "`.",
        "",
        "| arm | seed | " + " | ".join(c[1] for c in cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for r in rows:
        cells = [f"{r[k]:.2%}" if isinstance(r.get(k), float) else "-" for k, _ in cols]
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
