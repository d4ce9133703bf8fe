"""SimCLR with mmcl against SimCLR with lightly: the same backbone, data, steps and seed, side by side.

Arms, each trained (or not) in its own process, then probed by the same code:
- mmcl: ``mmcl.Trainer`` on ``recipes/simclr-quickstart.yaml`` (``train.steps`` and ``train.seed`` set,
  no in-run evaluation, one checkpoint at the end), loaded back with ``mmcl.train.load_run``, with the
  recipe's loss: ``hcl``, NT-Xent with hardness-weighted negatives (``--mmcl-override loss.name=ntxent
  --mmcl-override 'loss.kwargs={temperature: 0.2}'`` gives plain NT-Xent, the lightly arm's loss);
- lightly: a plain PyTorch loop as lightly's examples write it, over the same CSV: ``SimCLRTransform``
  (two views), the same timm ResNet-10 + ``SimCLRProjectionHead``, ``NTXentLoss``, torch AdamW with the
  recipe's lr, betas, eps and weight decay, its gradient clipping (``train.grad_clip``) and its
  warm-up + cosine schedule written inline;
- random: the same backbone at random init (``torch.manual_seed(seed)``), no training.
The lightly arm takes every hyper-parameter from the loaded recipe, including mmcl's defaults the recipe
does not spell out (AdamW betas 0.9/0.98, eps 1e-6, gradient clipping at norm 1.0). Both trained arms start
from the same weights for a seed (the random arm's); data order and augmentation draws differ. Both
crops resample bilinearly (the recipe's ``data.augment.interpolation``). Not matched: the lightly arm
decays every parameter (mmcl's AdamW leaves biases and norm weights undecayed), and the mmcl arm
runs channels-last (the recipe's ``train.channels_last``), a speed feature of mmcl's trainer.

Probes read the backbone's pooled features (eval transform: resize to 48 px, ImageNet normalisation),
L2-normalised, of the first 5,000 training rows and 10,000 unseen test scenes (``--probe-test-items``;
the recipe's 1,000 test scenes extended by the same generator, so one seed's probe error is about 0.5
points, not 1.6): ``mmcl.eval.linear_probe`` and a weighted kNN (k 20, temperature 0.07). With several
seeds the report adds the per-seed mmcl - lightly differences and a 95% interval on their mean.
Speed is steady-state training samples/s (images, not views) after the first 10 steps, from mmcl's
logged windows and from the wall clock of the lightly loop alike.
Memory is the arm's process peak resident set (``ru_maxrss``) at the end of training. Arms run one
after another, never in parallel.

    python evaluation/ssl/bench_ssl.py             # 500 steps, seed 0; writes evaluation/ssl/results/ssl.{json,md}
    python evaluation/ssl/bench_ssl.py --steps 100 --seeds 0 1 --arms mmcl lightly
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
RECIPE = "recipes/simclr-quickstart.yaml"
CORPUS = ROOT / "data" / "shapes-ssl"
PROBE_TRAIN_ITEMS = 5000
SKIP_STEPS = 10  # steps left out of the speed: start-up, first batches, mmcl's FLOP count
ARMS = ("mmcl", "lightly", "random")


def load_recipe(steps: int, seed: int, output_dir: str = "runs/ssl-bench", extra: list[str] | None = None):
    import mmcl

    overrides = [f"train.steps={steps}", f"train.seed={seed}", f"train.output_dir={output_dir}"]
    overrides += ["train.progress=false", f"train.checkpoint_every={steps}", "eval.datasets=[]", *(extra or [])]
    return mmcl.load_recipe(ROOT / RECIPE, overrides)


def read_items(path: Path, limit: int | None = None) -> list[tuple[Path, int]]:
    """(image path, label) rows of a corpus CSV; file paths are relative to the CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [(path.parent / r["filepath"], int(r["label"])) for r in rows]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def image_dataset(items: list[tuple[Path, int]], transform: Callable):
    import torch
    from PIL import Image

    class CsvImages(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int):
            path, label = items[i]
            return transform(Image.open(path).convert("RGB")), label

    return CsvImages()


def probe_corpus(recipe, test_items: int) -> Path:
    """The corpus whose test split the probes score. ``0``: the recipe's own (its ``n_test``
    items). Otherwise ``data/shapes-ssl-probe``: the same generator and seed with ``test_items``
    test scenes and no other split. Scenes are pure functions of (seed, split, index), so its first
    ``n_test`` items are the recipe's test split and the training data is untouched."""
    from dataclasses import replace

    from mmcl.data.synthetic import ensure_corpus

    cfg = recipe.data.synthetic
    if not test_items:
        return ensure_corpus(cfg, progress=False)
    return ensure_corpus(replace(cfg, root=f"{cfg.root}-probe", n_train=0, n_test=test_items, n_novel=0), False)


def probe(encode: Callable, data_config: dict, recipe, test_items: int) -> dict[str, float]:
    """Linear-probe and kNN top-1 accuracy of ``encode``'s L2-normalised features (eval mode)."""
    import torch

    from mmcl.data import image_transforms
    from mmcl.eval.knn import knn_metrics
    from mmcl.eval.linear_probe import linear_probe

    _, eval_tf = image_transforms(data_config, recipe.data.augment)

    @torch.no_grad()
    def features(items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        loader = torch.utils.data.DataLoader(image_dataset(items, eval_tf), batch_size=256)
        xs, ys = zip(*((encode(x), y) for x, y in loader))
        return torch.nn.functional.normalize(torch.cat(xs), dim=-1), torch.cat(ys)

    x_tr, y_tr = features(read_items(CORPUS / "train.csv", PROBE_TRAIN_ITEMS))
    x_te, y_te = features(read_items(probe_corpus(recipe, test_items) / "test.csv"))
    return {
        "linear_acc1": linear_probe(x_tr, y_tr, x_te, y_te)["acc1"],
        "knn_acc1": knn_metrics(x_tr, y_tr, x_te, y_te, k=20, temperature=0.07)["acc1"],
    }


def timm_backbone(recipe):
    import timm

    v = recipe.model.vision
    trunk = timm.create_model(v.name, num_classes=0, **v.kwargs)
    data_config = timm.data.resolve_data_config({}, model=trunk)
    data_config["input_size"] = (3, v.image_size, v.image_size)
    return trunk, data_config


def train_mmcl(recipe, seed: int) -> tuple[Callable, dict, float]:
    import mmcl
    from mmcl.train import load_run

    mmcl.Trainer(recipe).fit()
    logs = [json.loads(line) for line in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = sorted((r["step"], r["train/samples_per_s"]) for r in logs if "train/samples_per_s" in r)
    samples = seconds = 0.0
    for (prev, _), (step, rate) in zip(windows, windows[1:]):  # every window after the first
        if prev >= SKIP_STEPS:
            n = (step - prev) * recipe.data.batch_size
            samples, seconds = samples + n, seconds + n / rate
    model, _, _, _ = load_run(recipe.run_dir)
    return model.eval().features, model.vision.data_config(), samples / seconds


def train_lightly(recipe, seed: int) -> tuple[Callable, dict, float]:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    d, t, aug = recipe.data, recipe.train, recipe.data.augment
    # lightly scales the jitter by cj_strength: brightness = strength * 0.8 (mmcl's too), hue = strength * cj_hue
    hue = 0.2 if aug.hue is None else aug.hue / aug.color_jitter if aug.color_jitter else 0.0
    transform = SimCLRTransform(
        input_size=recipe.model.vision.image_size,
        cj_prob=aug.jitter_prob,
        cj_strength=aug.color_jitter,
        cj_hue=hue,
        min_scale=aug.scale[0],
        random_gray_scale=aug.grayscale,
        gaussian_blur=aug.blur,
        hf_prob=aug.hflip,
        normalize={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    )
    dataset = image_dataset(read_items(ROOT / d.train), transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=d.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=d.num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    torch.manual_seed(seed)
    backbone, data_config = timm_backbone(recipe)
    head = SimCLRProjectionHead(backbone.num_features, backbone.num_features, recipe.model.embed_dim)
    model = torch.nn.Sequential(backbone, head)
    criterion = NTXentLoss(temperature=recipe.loss.kwargs["temperature"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay
    )

    def warmup_cosine(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
    model.train()
    step, start = 0, 0.0
    while step < t.steps:
        for (x0, x1), _ in loader:
            loss = criterion(model(x0), model(x1))
            loss.backward()
            if t.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step == SKIP_STEPS:
                start = time.perf_counter()
            if step == t.steps:
                break
    speed = (t.steps - SKIP_STEPS) * d.batch_size / (time.perf_counter() - start)
    return backbone.eval(), data_config, speed


def random_init(recipe, seed: int) -> tuple[Callable, dict, None]:
    import torch

    torch.manual_seed(seed)
    backbone, data_config = timm_backbone(recipe)
    return backbone.eval(), data_config, None


def arm_loss(arm: str, recipe) -> dict | None:
    """The loss an arm trained with, as the report names it."""
    if arm == "mmcl":
        return {"name": recipe.loss.name, "kwargs": dict(recipe.loss.kwargs)}
    if arm == "lightly":
        return {"name": "lightly.loss.NTXentLoss", "kwargs": {"temperature": recipe.loss.kwargs["temperature"]}}
    return None


def child(arm: str, steps: int, seed: int, out: Path, overrides: list[str], test_items: int) -> None:
    import torch

    with tempfile.TemporaryDirectory(prefix=f"bench-ssl-{arm}-") as tmp:
        recipe = load_recipe(steps, seed, tmp, overrides if arm == "mmcl" else None)
        train = {"mmcl": train_mmcl, "lightly": train_lightly, "random": random_init}[arm]
        encode, data_config, speed = train(recipe, seed)
        peak_train = rss_mib()
        result = {"arm": arm, "seed": seed, "steps": 0 if arm == "random" else steps, "samples_per_s": speed}
        result["loss"] = arm_loss(arm, recipe)
        result |= probe(encode, data_config, recipe, test_items)
    result |= {"peak_rss_mib": peak_train, "peak_rss_mib_with_probes": rss_mib()}
    result["torch_threads"] = torch.get_num_threads()
    out.write_text(json.dumps(result, indent=1) + "\n")


def run_arm(arm: str, steps: int, seed: int, overrides: list[str], test_items: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(steps), "--seed", str(seed), "--out", str(out)]
        cmd += [f"--mmcl-override={o}" for o in overrides]
        cmd += ["--probe-test-items", str(test_items)]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            raise RuntimeError(f"arm {arm} (seed {seed}) failed:\n{res.stderr[-3000:]}")
        return json.loads(out.read_text())


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def summary(values: list[float | None], fmt: Callable[[float], str]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def paired_differences(mine: list[dict], theirs: list[dict], cols: list[tuple]) -> list[str]:
    """Report lines: the per-seed mmcl - lightly differences of each accuracy, in points, with
    their mean and its 95% t-interval (the arms of a seed share the initial weights)."""
    from scipy import stats

    by_seed = {r["seed"]: r for r in theirs}
    pairs = [(r, by_seed[r["seed"]]) for r in mine if r["seed"] in by_seed]
    if len(pairs) < 2:
        return []
    lines = ["", "Paired by seed, mmcl - lightly in points (mean, 95% t-interval over seeds):", ""]
    for key, name, _ in cols:
        diffs = [100 * (m[key] - t[key]) for m, t in pairs]
        mean, sem = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
        half = stats.t.ppf(0.975, len(diffs) - 1) * sem
        per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
        lines.append(f"- {name}: {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]; per seed {per_seed}")
    return lines


def machine_text(machines: list[dict]) -> str:
    """The report's machine line; runs pooled from several files give the range of their GEMM peaks."""
    cpus = sorted({m["cpu"] for m in machines})
    threads = sorted({m["torch_threads"] for m in machines})
    peaks = [m["gemm_peak_gflops"] for m in machines]
    peak = f"{peaks[0]:.0f}" if len(peaks) == 1 else f"{min(peaks):.0f}-{max(peaks):.0f}"
    return f"{', '.join(cpus)}, {'/'.join(map(str, threads))} torch threads, measured fp32 GEMM peak {peak} GFLOP/s"


def pooled_results(paths: list[str]) -> tuple[list[dict], list[dict], int, int | None]:
    """The result rows of earlier runs' JSON files, checked to be one experiment: the same recipe and
    steps and probe size (files written before the probe size was recorded match any), and no (arm,
    seed) twice. Returns the rows, the files' machines, their steps and probe size (None: not recorded)."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    for key in ("recipe", "steps", "probe_test_items"):
        values = {json.dumps(r[key]) for r in reports if r.get(key) is not None}
        if len(values) > 1:
            raise SystemExit(
                f"--report-from: the files differ in {key!r} ({', '.join(sorted(values))}); pool one experiment"
            )
    results = [row for r in reports for row in r["results"]]
    seen = set()
    for row in results:
        if (row["arm"], row["seed"]) in seen:
            raise SystemExit(f"--report-from: arm {row['arm']!r} seed {row['seed']} is in more than one file")
        seen.add((row["arm"], row["seed"]))
    test_items = next((r["probe_test_items"] for r in reports if r.get("probe_test_items") is not None), None)
    return results, [r["machine"] for r in reports], reports[0]["steps"], test_items


def write_report(results: list[dict], machine: dict | list[dict], args: argparse.Namespace, command: str) -> str:
    cols = [
        ("linear_acc1", "linear probe acc1", lambda v: f"{100 * v:.1f}%"),
        ("knn_acc1", "kNN acc1", lambda v: f"{100 * v:.1f}%"),
        ("samples_per_s", "samples/s", lambda v: f"{v:.1f}"),
        ("peak_rss_mib", "peak RSS MiB", lambda v: f"{v:.0f}"),
    ]
    by_arm = {a: [r for r in results if r["arm"] == a] for a in args.arms}
    test_items = args.probe_test_items or "all"
    lines = [
        "# SimCLR: mmcl vs lightly on the shapes-ssl corpus",
        "",
        f"`{RECIPE}`, {args.steps} steps, seeds {args.seeds}; probes on {PROBE_TRAIN_ITEMS} training and "
        f"{test_items} unseen test items. Samples/s: images per second after the first {SKIP_STEPS} steps. "
        f"Peak RSS: the arm's process at the end of training. "
        f"Machine: {machine_text(machine if isinstance(machine, list) else [machine])}.",
        "",
        "| arm | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for arm, rows in by_arm.items():
        lines.append(f"| {arm} | " + " | ".join(summary([r[k] for r in rows], f) for k, _, f in cols) + " |")
    if by_arm.get("mmcl") and by_arm.get("lightly"):
        ratios = []
        for key, _, _ in cols:
            mine = statistics.mean(r[key] for r in by_arm["mmcl"])
            theirs = statistics.mean(r[key] for r in by_arm["lightly"])
            ratios.append(f"{mine / theirs:.3f}" if theirs else "-")
        lines.append("| **mmcl / lightly** | " + " | ".join(ratios) + " |")
        lines += paired_differences(by_arm["mmcl"], by_arm["lightly"], cols[:2])
    for arm, rows in by_arm.items():
        losses = {json.dumps(r.get("loss"), sort_keys=True) for r in rows if r.get("loss")}
        lines += ["", f"The {arm} arm's loss: " + "; ".join(f"`{x}`" for x in sorted(losses))] if losses else []
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--out", default=str(RESULTS / "ssl"), help="results path, no suffix")
    p.add_argument(
        "--mmcl-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for the mmcl arm only, e.g. train.channels_last=false (repeatable)",
    )
    p.add_argument(
        "--probe-test-items",
        type=int,
        default=10000,
        help="score the probes on this many unseen test scenes, the recipe's test split extended by the same "
        "generator (default 10000: a 1.6-point binomial error on 1,000 items becomes 0.5); 0: the recipe's own",
    )
    p.add_argument(
        "--report-from",
        nargs="+",
        metavar="JSON",
        help="train nothing: write the report of earlier runs' result files, their seeds pooled (e.g. two runs "
        "on disjoint seeds), to --out",
    )
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # child mode: one arm, --out is its JSON
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.chdir(ROOT)  # the recipe's data paths are relative to the repository
    if args.steps <= SKIP_STEPS:
        p.error(f"--steps must be more than {SKIP_STEPS} (the speed leaves out the first {SKIP_STEPS})")
    if args.arm:
        child(args.arm, args.steps, args.seed, Path(args.out), args.mmcl_override, args.probe_test_items)
        return
    command = " ".join(["python evaluation/ssl/bench_ssl.py", *sys.argv[1:]])
    if args.report_from:
        results, machines, args.steps, test_items = pooled_results(args.report_from)
        args.arms = [a for a in ARMS if any(r["arm"] == a for r in results)]
        args.seeds = sorted({r["seed"] for r in results})
        args.probe_test_items = args.probe_test_items if test_items is None else test_items
        write_outputs(Path(args.out), results, machines, args, command, {"pooled_from": args.report_from})
        return

    import torch

    from mmcl.data.synthetic import ensure_corpus
    from mmcl.train.throughput import measure_cpu_peak

    recipe = load_recipe(args.steps, 0)
    ensure_corpus(recipe.data.synthetic, progress=False)  # both corpora before any timed arm
    probe_corpus(recipe, args.probe_test_items)
    machine = {
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "gemm_peak_gflops": measure_cpu_peak() / 1e9,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            results.append(run_arm(arm, args.steps, seed, args.mmcl_override, args.probe_test_items))
            print(f"{arm} seed {seed}: " + json.dumps(results[-1]), file=sys.stderr)
    write_outputs(Path(args.out), results, machine, args, command, {})


def write_outputs(res: Path, results: list[dict], machine, args, command: str, extra: dict) -> None:
    """``res``.json (the rows and how they were made) and ``res``.md (the report), and print the report."""
    res.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "recipe": RECIPE, "steps": args.steps, "probe_test_items": args.probe_test_items}
    report |= {"machine": machine, **extra, "results": results}
    res.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    table = write_report(results, machine, args, command)
    res.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
