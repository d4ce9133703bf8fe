"""LoRA against full fine-tuning of the same pretrained quickstart model, on the same data and steps.

The pretrained run and the corpus are bench_wise_ft.py's (the quickstart model after 300 steps on
the filled-shape images, zero-shot 32%): when ``--work`` holds them they are reused, otherwise they
are made first. Both continue training it on the same images (its own distribution: the sketches
carry no colour, so they cannot tell the 32 colour x shape classes apart) for the same steps. Each
fine-tuning runs as its own ``mmcl train`` process, so its peak resident memory (``wait4``'s
``ru_maxrss``) is its own.

    python evaluation/finetune/bench_lora_vs_full.py            # after bench_wise_ft.py: ~2 min on 2 cores

Writes evaluation/finetune/results/lora_vs_full.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_wise_ft as wise  # noqa: E402  (the corpus and the pretrained run)

# rank-8 adapters on every convolution of the ResNet-10 blocks (and its stem) and every Linear of the
# BERT text tower; the projection heads and the rest are frozen, the logit scale trains
ADAPTER = {
    "r": 8,
    "alpha": 16,
    "target_modules": {"vision": ["conv1", "conv2"], "text": ["query", "key", "value", "dense"]},
    "trainable": ["logit_scale"],
}
METHODS = {"full": {"lr": 5e-4, "adapter": None}, "lora": {"lr": 2e-3, "adapter": ADAPTER}}


def fine_tune(work: Path, data: dict, method: str, steps: int, seed: int) -> dict:
    out = work / f"{method}-{seed}"
    sets = [
        wise.dataset("sketch-test", data["sketch_test"], data["root"]),
        wise.dataset("photo-test", data["photo_test"], data["root"]),
    ]
    spec = METHODS[method]
    overrides = [
        f"data.train={data['photo_train']}",
        "data.synthetic=null",
        "data.num_workers=0",
        "data.batch_size=64",
        f"model.vision.image_size={wise.IMAGE_SIZE}",
        f"model.init_from={work / 'pretrain'}",
        f"model.adapter={json.dumps(spec['adapter'])}" if spec["adapter"] else "model.adapter=null",
        f"train.output_dir={out}",
        f"train.steps={steps}",
        f"train.warmup_steps={max(1, steps // 10)}",
        f"train.lr={spec['lr']}",
        f"train.seed={seed}",
        f"train.checkpoint_every={steps}",
        "train.progress=false",
        "train.trackers=[jsonl]",
        "train.cpu=true",
        "train.overwrite=true",
        f"eval.datasets={json.dumps(sets)}",
    ]
    cmd = [sys.executable, "-m", "mmcl.cli", "train", str(ROOT / "recipes" / "quickstart.yaml"), *overrides]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{log[-3000:]}")
    trainable = next(line for line in log.splitlines() if "parameters:" in line).strip()
    records = json.loads((out / "results.json").read_text())
    return {
        "method": method,
        "lr": spec["lr"],
        "adapter": spec["adapter"],
        "parameters_line": trainable,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "seconds": round(time.time() - t0, 1),
        "zeroshot_acc1": {r["dataset"]: r["metrics"]["acc1"] for r in records if r["task"] == "zeroshot"},
        "adapter_file_kib": round(_size(out, "adapters.safetensors") / 1024, 1),
    }


def _size(folder: Path, name: str) -> int:
    return sum(f.stat().st_size for f in folder.rglob(name))


def counts() -> dict:
    """Trainable and total parameters of the two set-ups, counted on the model itself."""
    import mmcl
    from mmcl.models.adapters import count_trainable
    from mmcl.recipe import read_recipe_data, recipe_from_dict

    out = {}
    for method, spec in METHODS.items():
        data = read_recipe_data(str(ROOT / "recipes" / "quickstart.yaml"))
        data["model"]["adapter"] = spec["adapter"]
        model = mmcl.create_model(recipe_from_dict(data, model_only=True).model)
        trainable, total = count_trainable(model)
        # AdamW keeps two moments per trainable parameter, plus its gradient: 3 x 4 bytes in fp32
        out[method] = {"trainable": trainable, "total": total, "grad_and_adam_mib": round(12 * trainable / 2**20, 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/mmcl-bench-finetune", help="bench_wise_ft.py's --work (reused)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    work = Path(args.work)
    data = wise.make_data(work, 2000, 300)  # bench_wise_ft.py's defaults
    if not (work / "pretrain" / "checkpoints" / "latest").is_file():
        wise.train(work / "pretrain", data, data["photo_train"], 300, 0, 2e-3)
    runs = [fine_tune(work, data, m, args.steps, args.seed) for m in METHODS]
    report = {
        "what": "fine-tuning the photo-pretrained quickstart model (300 steps) for the same further steps on the same "
        "photos: LoRA adapters vs all weights",
        "steps": args.steps,
        "seed": args.seed,
        "counts": counts(),
        "runs": runs,
        "torch_threads": __import__("torch").get_num_threads(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora_vs_full.json").write_text(json.dumps(report, indent=2) + "\n")
    for r in runs:
        print(f"{r['method']}: {r['parameters_line']}; peak RSS {r['peak_rss_mib']} MiB; {r['zeroshot_acc1']}")
    print(f"wrote {out / 'lora_vs_full.json'}")


if __name__ == "__main__":
    main()
