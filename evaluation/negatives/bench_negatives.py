"""Do cluster-guided negatives help? Arms trained side by side on a corpus whose truth is known.

The corpus (``recipes/cluster-negatives-quickstart.yaml``) is the shapes corpus with half of the
captions short: "a red circle" truly describes EVERY single-object image of a red circle, whatever
its size and position, and "a red circle left of a blue square" every such pair scene. So a batch
holds many false negatives, and the truth of every (image, caption) pair is known:

    caption j is true of image i  <=>  short(j) ? same colours, shapes (and relation) : same key

Each arm trains the same model from the same seed and data order for ``--steps`` steps with one
loss setting, then is scored on the held-out split (1,000 pairs):

- retrieval R@1 in both directions, counted against the true matches;
- zero-shot top-1 over the colour x shape classes;
- compositional accuracy (image vs its caption with a swapped attribute or relation,
  ``mmcl eval compositional``);
- false-negative detection: precision and recall, over all (image i, caption j != i) pairs of
  the first 1,000 TRAINING pairs (where the short captions, and so the false negatives, are; the
  held-out captions are all full descriptions), of what the arm's final state flags (same
  cluster for the mask; p > 0.5 for the calibrated MLP) against the truth above;
- seconds per training step (from the trainer's own throughput log).

Arms: ``infonce`` (plain), ``hcl`` (Robinson et al.'s hard-negative reweighting, the image and its
caption as the two views), ``mask`` (same-cluster false negatives masked), ``margin`` (masked, plus
ClusterNS's bidirectional margin), ``hard`` (+log-weight on negatives from the nearest clusters),
``calibrated`` (MLP-weighted negatives, learnt from cluster agreement), ``calibrated-text`` (the same
MLP learnt from near-duplicate captions), ``hard+calibrated-text`` (the two best single policies
together), ``sampler`` (cluster-aware batches, no other policy), ``duplicates`` (pairs whose
captions are equal after normalisation masked: certain false negatives, no clusters needed) and
``duplicates-positive`` (those pairs counted as extra positives), ``contained`` (pairs whose
caption j's words appear in caption i in order masked: likely false negatives); ``negatives``
(NegCLIP: InfoNCE plus one hard-negative caption per pair, a minimal edit of the pair's own
caption, from ``data/shapes-fn/train-negatives.jsonl``) and ``contained+negatives``, with
``-half`` / ``-quarter`` variants where only that share of the rows carries its negative in a
step (``data.negatives_fraction``: less text-tower time); ``contained+swaps`` (and ``-half``), whose
negatives are only the colour and relation swaps where a caption has them
(``make-compositional --prefer swap_colours swap_relation``); ``-nograd`` variants of both, whose
negatives are encoded without gradient (``data.negatives_grad: false``); ``contained+edits``
(and ``contained+reorder``, reordered words only): the contained mask with batches that put each
caption beside a training caption one minimal edit away (``data.sampler: caption_edits``), so the
edits are ordinary rows, each with its own image, at no extra encoding cost; ``oracle`` (exactly the true false
negatives masked, from the corpus's truth: the ceiling of masking). On request:
``contained+hard`` and ``contained+sampler`` (the contained mask with the ``hard`` policy or the
``sampler``), ``contained-positive``, ``mask+calibrated`` and ``mask+hard``.

    python evaluation/negatives/bench_negatives.py                        # 19 arms, 3 seeds, 400 steps
    python evaluation/negatives/bench_negatives.py --steps 100 --seeds 0 --arms infonce mask   # quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
sys.path.insert(0, str(ROOT))  # this checkout's mmcl, also when another one is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))
import oracle_loss  # noqa: E402, F401  (registers the oracle arm's loss, fn_oracle, for loading its runs)

RECIPE = "recipes/cluster-negatives-quickstart.yaml"
DATA = ROOT / "data" / "shapes-fn"
CLUSTER = {"k": 64, "momentum": 1e-3, "gate": 0.4}
# each training row's own caption plus its minimal edits (`mmcl data make-compositional --merge --keep-captions`)
NEGATIVES_FILE = DATA / "train-negatives.jsonl"
NEGATIVES_DATA = {
    "train": str(NEGATIVES_FILE.relative_to(ROOT)),
    "caption_key": "caption",
    "negatives_key": "negatives",
}
# the same rows with only the swap edits where a caption has one (two objects), all edits otherwise
SWAPS_FILE = DATA / "train-negatives-swaps.jsonl"
# how each negatives file is written: `mmcl data make-compositional data/shapes-fn/train.csv FILE ...`
NEGATIVE_FILES = {
    NEGATIVES_FILE: ["--merge", "--keep-captions"],
    SWAPS_FILE: ["--merge", "--keep-captions", "--prefer", "swap_colours", "swap_relation"],
}
# the contained-caption mask alone (the base of the combinations below)
CONTAINED = {**CLUSTER, "duplicate_captions": "mask", "caption_match": "contained"}
SWAPS_DATA = {**NEGATIVES_DATA, "train": str(SWAPS_FILE.relative_to(ROOT))}
ARMS = {
    "infonce": {"name": "infonce", "kwargs": {}},
    "hcl": {"name": "hcl", "kwargs": {"temperature": 0.07}},  # image and caption as its two views
    "mask": {"name": "cluster_infonce", "kwargs": {**CLUSTER, "false_negatives": "mask"}},
    "margin": {"name": "cluster_infonce", "kwargs": {**CLUSTER, "false_negatives": "margin"}},
    "hard": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "none", "hard_negatives": 2, "hard_log_weight": 1.0},
    },
    "calibrated": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "none", "weighting": "calibrated"},
    },
    "calibrated-text": {
        "name": "cluster_infonce",
        "kwargs": {
            **CLUSTER,
            "false_negatives": "none",
            "weighting": "calibrated",
            "calibration": {"signal": "text_similarity"},
        },
    },
    "mask+calibrated": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "mask", "weighting": "calibrated"},
    },
    "mask+hard": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "mask", "hard_negatives": 2, "hard_log_weight": 1.0},
    },
    "hard+calibrated-text": {  # the two best single policies, together
        "name": "cluster_infonce",
        "kwargs": {
            **CLUSTER,
            "false_negatives": "none",
            "hard_negatives": 2,
            "hard_log_weight": 1.0,
            "weighting": "calibrated",
            "calibration": {"signal": "text_similarity"},
        },
    },
    # certain false negatives: pairs whose captions are equal once normalised (no clusters needed)
    "duplicates": {"name": "cluster_infonce", "kwargs": {**CLUSTER, "duplicate_captions": "mask"}},
    "duplicates-positive": {"name": "cluster_infonce", "kwargs": {**CLUSTER, "duplicate_captions": "positive"}},
    # likely false negatives: (image i, caption j) with caption j's words within caption i's, in order
    "contained": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
    },
    "contained-positive": {
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "duplicate_captions": "positive", "caption_match": "contained"},
    },
    # contained-caption masking with a cluster policy that needs false negatives out of the way
    "contained+hard": {
        "name": "cluster_infonce",
        "kwargs": {
            **CLUSTER,
            "duplicate_captions": "mask",
            "caption_match": "contained",
            "hard_negatives": 2,
            "hard_log_weight": 1.0,
        },
    },
    "contained+sampler": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {"sampler": "clusters", "sampler_kwargs": {"clusters_per_block": 8, "block": 128}},
    },
    # NegCLIP's hard-negative captions (minimal edits of each training caption's own words), alone and
    # with the contained-caption mask: the compositional side of the goal
    "negatives": {"name": "infonce", "kwargs": {}, "data": NEGATIVES_DATA},
    "contained+negatives": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": NEGATIVES_DATA,
    },
    # the same with a seeded share of the rows carrying their negative each step (data.negatives_fraction):
    # each negative is a second text-tower pass, so these trade gain for per-step overhead
    "contained+negatives-half": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {**NEGATIVES_DATA, "negatives_fraction": 0.5},
    },
    "contained+negatives-quarter": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {**NEGATIVES_DATA, "negatives_fraction": 0.25},
    },
    # the compositional test's swaps are at chance for every arm: the negatives all swaps where they can be
    "contained+swaps": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": SWAPS_DATA,
    },
    "contained+swaps-half": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {**SWAPS_DATA, "negatives_fraction": 0.5},
    },
    # the negatives encoded without gradient (data.negatives_grad: false): a forward pass, a third of
    # their text-tower cost; only the image tower learns from them
    "contained+negatives-nograd": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {**NEGATIVES_DATA, "negatives_grad": False},
    },
    "contained+swaps-nograd": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {**SWAPS_DATA, "negatives_grad": False},
    },
    # each caption beside a training caption one minimal edit away (data.sampler: caption_edits): the
    # edits as ordinary rows, each with its own image, at no extra encoding cost
    "contained+edits": {"name": "cluster_infonce", "kwargs": CONTAINED, "data": {"sampler": "caption_edits"}},
    "contained+reorder": {
        "name": "cluster_infonce",
        "kwargs": CONTAINED,
        "data": {"sampler": "caption_edits", "sampler_kwargs": {"edits": ["reorder"]}},
    },
    # the ceiling: exactly the true false negatives masked, read from the corpus (oracle_loss.py)
    "oracle": {"name": "fn_oracle", "kwargs": {}},
    "sampler": {  # (c): each batch from a neighbourhood of 8 clusters, no other policy
        "name": "cluster_infonce",
        "kwargs": {**CLUSTER, "false_negatives": "none"},
        "data": {"sampler": "clusters", "sampler_kwargs": {"clusters_per_block": 8, "block": 128}},
    },
}
# what one command compares (ARMS also has mask+calibrated and mask+hard, on request)
DEFAULT_ARMS = [
    "infonce",
    "hcl",
    "mask",
    "margin",
    "hard",
    "calibrated",
    "calibrated-text",
    "hard+calibrated-text",
    "sampler",
    "duplicates",
    "duplicates-positive",
    "contained",
    "negatives",
    "contained+negatives",
    "contained+negatives-half",
    "contained+negatives-quarter",
    "contained+swaps",
    "contained+swaps-half",
    "oracle",
]
args_reuse = False
args_finished_only = False
METRICS = [
    ("zeroshot_acc1", "zero-shot", "%"),
    ("r1_i2t", "R@1 i->t (true matches)", "%"),
    ("r1_t2i", "R@1 t->i (true matches)", "%"),
    ("comp_acc", "compositional", "%"),
    ("fn_precision", "FN precision", "%"),
    ("fn_recall", "FN recall", "%"),
    ("s_per_step", "s/step", "f"),
]


# the mmcl command line with the oracle's loss registered (oracle_loss.py), for the oracle arm's runs
CLI = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import oracle_loss; "
    "from mmcl.cli import main; sys.exit(main())"
)


def mmcl(*args: str) -> str:
    res = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"mmcl {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def short_key(key: str, caption: str) -> tuple[str, str | None]:
    """(what a short caption says, or None when the caption is a full description)."""
    parts = key.split("|")
    c1, s1 = parts[0].split()[1:]
    short = f"a {c1} {s1}"
    if len(parts) == 4:
        c2, s2 = parts[3].split()[1:]
        short = f"a {c1} {s1} {parts[2]} a {c2} {s2}"
    return short, (short if caption.rstrip(".") == short else None)


def truth_tables(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: (id of its full description, id of its short description, its caption is short)."""
    fulls: dict[str, int] = {}
    shorts: dict[str, int] = {}
    full_ids, short_ids, is_short = [], [], []
    for r in rows:
        short, said = short_key(r["key"], r["title"])
        full_ids.append(fulls.setdefault(r["key"], len(fulls)))
        short_ids.append(shorts.setdefault(short, len(shorts)))
        is_short.append(said is not None)
    return torch.tensor(full_ids), torch.tensor(short_ids), torch.tensor(is_short)


def true_pairs(full: torch.Tensor, short: torch.Tensor, is_short: torch.Tensor) -> torch.Tensor:
    """(images x captions) bool from :func:`truth_tables` rows: caption j is true of image i."""
    return torch.where(is_short[None, :], short[:, None] == short[None, :], full[:, None] == full[None, :])


def truth_matrix(rows: list[dict]) -> torch.Tensor:
    """(images x captions) bool: caption j is a true description of image i."""
    return true_pairs(*truth_tables(rows))


def encode(adapter, rows: list[dict]):
    from PIL import Image

    imgs, txts = [], []
    for start in range(0, len(rows), 250):
        part = rows[start : start + 250]
        batch = torch.stack([adapter.preprocess(Image.open(DATA / r["filepath"]).convert("RGB")) for r in part])
        imgs.append(adapter.encode_image(batch))
        txts.append(adapter.encode_text([r["title"] for r in part]))
    return torch.cat(imgs), torch.cat(txts)


def detection(flagged: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    off = ~torch.eye(truth.shape[0], dtype=torch.bool)
    f, t = flagged & off, truth & off
    tp = float((f & t).sum())
    return tp / max(1.0, float(f.sum())), tp / max(1.0, float(t.sum()))


def score(run: Path, arm: str, rows: list[dict], truth: torch.Tensor, fn_rows: list[dict], fn_truth) -> dict:
    from mmcl.eval.adapters import MmclAdapter

    adapter = MmclAdapter.from_run(run, device="cpu")
    ckpt = adapter.checkpoint
    img, txt = encode(adapter, rows)
    sim = img @ txt.T
    n = len(rows)
    m = {
        "r1_i2t": float(truth[torch.arange(n), sim.argmax(1)].float().mean()),
        "r1_t2i": float(truth[sim.argmax(0), torch.arange(n)].float().mean()),
    }
    loss = ARMS[arm]
    if loss["name"] == "cluster_infonce":
        import mmcl as lib
        from mmcl.negatives.duplicates import caption_keys, caption_words, contained

        loss_fn = lib.create_loss(loss["name"], **loss["kwargs"])
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        loss_fn.load_state_dict(state["loss"])
        if loss["kwargs"].get("duplicate_captions", "none") != "none":  # what these arms flag: equal captions
            titles = [r["title"] for r in fn_rows]
            if loss["kwargs"].get("caption_match") == "contained":  # or contained ones
                flagged = contained(caption_words(titles), caption_words(titles))
            else:
                keys = caption_keys(titles)
                flagged = keys[:, None] == keys[None, :]
            m["fn_precision"], m["fn_recall"] = detection(flagged, fn_truth)
        if loss_fn.centroids.started:
            scores = loss_fn.pair_scores(*encode(adapter, fn_rows))
            if "p_aligned" in scores:
                m["fn_precision"], m["fn_recall"] = detection(scores["p_aligned"] > 0.5, fn_truth)
            elif "fn_precision" not in m:
                m["fn_precision"], m["fn_recall"] = detection(scores["same_cluster"], fn_truth)
            m["same_cluster_precision"], m["same_cluster_recall"] = detection(scores["same_cluster"], fn_truth)
            emb = torch.cat([img, txt])
            m["_clusters"] = loss_fn.centroids.assign(emb).tolist()
    if loss["name"] == "fn_oracle":  # it masks the truth itself
        m["fn_precision"], m["fn_recall"] = 1.0, 1.0
    m["_embeddings"] = torch.cat([img, txt])
    return m


def run_arm(arm: str, steps: int, seed: int, out: Path, rows, truth, fn_rows, fn_truth) -> dict | None:
    """Train (unless reusing a finished run) and score one arm; the row is also saved in the run
    folder (``bench_row.json``), so a later ``--reuse`` reads it instead of scoring again."""
    loss = ARMS[arm]
    run = out / f"{arm}-seed{seed}"
    if args_reuse and (run / "bench_row.json").is_file():
        print(f"reusing the scores of {run}", flush=True)
        row = json.loads((run / "bench_row.json").read_text())
        return {**row, "comp_types": row.get("comp_types") or comp_types(run)}
    if args_reuse and (run / "results.json").is_file():
        print(f"reusing {run}", flush=True)
    elif args_finished_only:
        print(f"skipping {run}: not trained (--finished-only)", flush=True)
        return None
    else:
        train_arm(run, arm, loss, steps, seed)
    row = score_arm(run, arm, steps, seed, rows, truth, fn_rows, fn_truth)
    (run / "bench_row.json").write_text(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}) + "\n")
    return row


def train_arm(run: Path, arm: str, loss: dict, steps: int, seed: int) -> None:
    mmcl(
        "train",
        RECIPE,
        f"name=neg-{arm}",
        f"train.output_dir={run}",
        f"train.steps={steps}",
        f"train.seed={seed}",
        "train.progress=false",
        "train.checkpoint_every=100000",
        "train.log_every=10",
        f"loss.name={loss['name']}",
        f"loss.kwargs={json.dumps(loss['kwargs'])}",
        *[f"data.{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in loss.get("data", {}).items()],
    )


def score_arm(run: Path, arm: str, steps: int, seed: int, rows, truth, fn_rows, fn_truth) -> dict:
    metrics: dict = {}
    for rec in json.loads((run / "results.json").read_text()):
        if rec["task"] == "zeroshot":
            metrics["zeroshot_acc1"] = rec["metrics"]["acc1"]
    comp_dir = run / "compositional"
    mmcl(
        "eval",
        "compositional",
        "--model",
        str(run),
        "--dataset",
        str(DATA / "compositional.jsonl"),
        "--output",
        str(comp_dir),
    )
    comp = json.loads(next(comp_dir.glob("*.json")).read_text())["metrics"]
    metrics["comp_acc"] = comp.get("acc", comp.get("compositional/acc"))
    metrics["comp_types"] = comp_types(run)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [x["train/samples_per_s"] for x in logged if "train/samples_per_s" in x][1:]  # skip the warm-up window
    batch = 128
    metrics["s_per_step"] = batch / statistics.median(speeds) if speeds else None
    metrics["curve"] = [(x["step"], x["train/loss"]) for x in logged if "train/loss" in x]
    metrics.update(score(run, arm, rows, truth, fn_rows, fn_truth))
    return {"arm": arm, "seed": seed, "steps": steps, **metrics}


COMP_TYPES = ("replace_colour", "replace_shape", "swap_colours", "swap_relation")


def comp_types(run: Path) -> dict[str, float]:
    """Compositional accuracy per kind of negative caption, from the run's ``mmcl eval compositional``."""
    files = sorted((run / "compositional").glob("*.json"))
    if not files:
        return {}
    metrics = json.loads(files[0].read_text())["metrics"]
    return {kind: metrics[f"acc/{kind}"] for kind in COMP_TYPES if f"acc/{kind}" in metrics}


def summarise(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        out[arm] = {}
        for key, _, _ in METRICS:
            vals = [r[key] for r in mine if r.get(key) is not None]
            if vals:
                out[arm][key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
    return out


def plots(rows: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    colours = plt.get_cmap("tab20").colors  # one colour per arm, up to 20
    for k, arm in enumerate(arms):
        curves = [r["curve"] for r in rows if r["arm"] == arm]
        steps = [s for s, _ in curves[0]]
        mean = [statistics.fmean(c[i][1] for c in curves) for i in range(len(steps))]
        ax.plot(steps, mean, label=arm, color=colours[k % len(colours)], linestyle="-" if k < 20 else "--")
    ax.set(xlabel="step", ylabel="training loss (mean over seeds)", title="Learning curves per arm")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(out.with_name(out.name + "_curves.png"), dpi=110)
    written.append(out.name + "_curves.png")
    plt.close(fig)

    pick = next((r for r in rows if r.get("_clusters") and r["arm"] != "infonce"), None)
    if pick is not None:
        emb = pick["_embeddings"]
        centred = emb - emb.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        xy = (centred @ v[:, :2]).numpy()
        n = emb.shape[0] // 2
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.scatter(xy[:n, 0], xy[:n, 1], c=pick["_clusters"][:n], cmap="tab20", s=8, marker="o", label="images")
        ax.scatter(xy[n:, 0], xy[n:, 1], c=pick["_clusters"][n:], cmap="tab20", s=10, marker="x", label="captions")
        ax.set(title=f"Held-out embeddings ({pick['arm']}, seed {pick['seed']}), PCA, coloured by cluster")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_name(out.name + "_embeddings.png"), dpi=110)
        written.append(out.name + "_embeddings.png")
        plt.close(fig)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arms",
        nargs="+",
        default=DEFAULT_ARMS,
        choices=list(ARMS),
    )
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "runs" / "negatives"))
    p.add_argument("--results", default=str(RESULTS / "negatives"))
    p.add_argument("--reuse", action="store_true", help="score finished runs in --out instead of training again")
    p.add_argument(
        "--finished-only", action="store_true", help="with --reuse: leave out (arm, seed) runs not trained yet"
    )
    p.add_argument(
        "--include", nargs="*", default=[], help="earlier results .json files: their rows join this run's table"
    )
    args = p.parse_args()
    global args_reuse, args_finished_only
    args_reuse, args_finished_only = args.reuse, args.finished_only
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mmcl import load_recipe
    from mmcl.data.synthetic import ensure_corpus

    os.chdir(ROOT)  # the recipe's data paths are relative to the repository
    ensure_corpus(load_recipe(RECIPE).data.synthetic)
    if not (DATA / "compositional.jsonl").is_file():
        mmcl("data", "make-compositional", str(DATA / "test.csv"), str(DATA / "compositional.jsonl"))
    for path, options in NEGATIVE_FILES.items():
        wanted = any(ARMS[a].get("data", {}).get("train") == str(path.relative_to(ROOT)) for a in args.arms)
        if wanted and not path.is_file():
            mmcl("data", "make-compositional", str(DATA / "train.csv"), str(path), *options)
    with open(DATA / "test.csv", newline="") as f:
        test_rows = list(csv.DictReader(f))
    truth = truth_matrix(test_rows)
    with open(DATA / "train.csv", newline="") as f:
        fn_rows = list(csv.DictReader(f))[:1000]
    fn_truth = truth_matrix(fn_rows)
    rows = [row for f in args.include for row in json.loads(Path(f).read_text())["rows"]]
    for seed in args.seeds:
        for arm in args.arms:
            row = run_arm(arm, args.steps, seed, Path(args.out), test_rows, truth, fn_rows, fn_truth)
            if row is None:
                continue
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("_") and k != "curve"}), flush=True)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not any(r.get("_clusters") for r in rows):  # reused scores: embed one cluster arm for the map

        def run_of(r: dict) -> Path:
            return Path(args.out) / f"{r['arm']}-seed{r['seed']}"

        # the first cluster arm whose run is here (rows joined with --include may come from elsewhere)
        pick = next(
            (r for r in rows if ARMS[r["arm"]]["name"] == "cluster_infonce" and (run_of(r) / "recipe.yaml").is_file()),
            None,
        )
        if pick is not None:
            pick.update(score(run_of(pick), pick["arm"], test_rows, truth, fn_rows, fn_truth))
    images = plots(rows, out)
    command = " ".join(["python evaluation/negatives/bench_negatives.py", *sys.argv[1:]])
    summary = summarise(rows)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                "arms": {a: ARMS[a] for a in dict.fromkeys(r["arm"] for r in rows)},
                "summary": summary,
                "rows": public,
            },
            indent=1,
        )
        + "\n"
    )
    off = ~torch.eye(len(test_rows), dtype=torch.bool)
    lines = [
        "# Cluster-guided negatives on a corpus with known false negatives",
        "",
        f"`{RECIPE}` (quickstart model, shapes corpus with half the captions short), "
        f"{'/'.join(map(str, sorted({r['steps'] for r in rows})))} steps per arm, seeds "
        f"{sorted({r['seed'] for r in rows})}; mean +/- std over seeds (n: runs per arm). "
        f"Retrieval: held-out split, {len(test_rows)} pairs, of which "
        f"{int((truth & off).sum())} (image, other caption) pairs are also true matches. False-negative (FN) "
        f"detection: the first {len(fn_rows)} training pairs, with "
        f"{int((fn_truth & ~torch.eye(len(fn_rows), dtype=torch.bool)).sum())} true (image, other caption) "
        f"matches. Command: `{command}`.",
        "",
        "| arm | n | " + " | ".join(c[1] for c in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for arm, vals in summary.items():
        cells = []
        for key, _, kind in METRICS:
            if key not in vals:
                cells.append("-")
            elif kind == "%":
                cells.append(f"{100 * vals[key][0]:.1f} +/- {100 * vals[key][1]:.1f}")
            else:
                cells.append(f"{vals[key][0]:.3f} +/- {vals[key][1]:.3f}")
        n = sum(r["arm"] == arm for r in rows)
        lines.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Compositional accuracy by kind of negative caption (mean +/- std over seeds; chance is 50%):",
        "",
        "| arm | " + " | ".join(k.replace("_", " ") for k in COMP_TYPES) + " |",
        "|---|" + "---:|" * len(COMP_TYPES),
    ]
    for arm in summary:
        per = [r.get("comp_types", {}) for r in rows if r["arm"] == arm]
        cells = []
        for kind in COMP_TYPES:
            vals = [100 * p[kind] for p in per if kind in p]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.1f} +/- {sd:.1f}" if vals else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    embeddings = out.with_name(out.name + "_embeddings.png")
    if embeddings.name not in images and embeddings.is_file():  # from the run that trained a cluster arm
        images.append(embeddings.name)
    lines += ["", *[f"![{name}]({name})" for name in images]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
