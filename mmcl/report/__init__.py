"""Run reports: ``mmcl report RUN_DIR`` writes a self-contained HTML page, a markdown summary and
the PNG plots they show.

Plots (each written only when the run has what it needs):

- ``loss.png``, ``lr.png``, ``logit_scale.png``, ``throughput.png``: training curves from
  ``metrics.jsonl``;
- ``eval_metrics.png``: headline evaluation metrics over steps (``eval/<dataset>/<task>/<metric>``);
- ``recall_at_k.png``: image->text and text->image recall@1..10 on the run's evaluation data,
  encoded with the latest checkpoint;
- ``embedding_map.png``: those image embeddings on their first two principal components,
  a distinct colour per class label with a legend, or by k-means cluster when the data has no labels;
- ``gallery_text_to_image.png`` / ``gallery_image_to_text.png``: for a fixed sample of captions of
  the first dataset, the top-5 images each retrieves with the true one framed; and the reverse;
- ``zeroshot_confusion.png``: zero-shot predictions on the labelled images of the first
  ``zeroshot`` dataset, true x predicted class (the most confused 20 classes of more).

The last four need ``recipe.yaml``, a checkpoint and readable ``eval.datasets``; without them (or
with ``embeddings=False``) they are skipped and the page says why, so a folder holding only
``metrics.jsonl`` still gets a report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .render import Page, Plot, Table, render_html, render_markdown
from .run_data import RunData, read_run

__all__ = ["RunData", "read_run", "write_report"]

TRAIN_CURVES = (
    # (metrics.jsonl key, file stem, title, y label, smoothed)
    ("train/loss", "loss", "Training loss", "loss", True),
    ("train/lr", "lr", "Learning rate", "learning rate", False),
    ("train/logit_scale", "logit_scale", "Logit scale (1 / temperature)", "exp(logit_scale)", False),
)
TRAIN_FINAL = (
    ("train/loss", "loss"),
    ("train/lr", "learning rate"),
    ("train/logit_scale", "logit scale"),
    ("train/samples_per_s", "samples / s"),
    ("train/tflops_per_device", "TFLOP/s per device"),
    ("train/mfu", "MFU"),
    ("train/epoch", "epoch"),
)
# a headline metric that describes the evaluation data, not the model: left out of tables and plots
NOT_PLOTTED = {"duplicate_caption_fraction"}


def _fmt(key: str, value: float) -> str:
    name = key.rsplit("/", 1)[-1]
    if name == "mfu":
        return f"{value:.1%}"
    if name == "lr":
        return f"{value:.3g}"
    if name in ("epoch", "step") or name.startswith("skipped_") or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    if name == "samples_per_s":
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _pct(value) -> str:
    return "nan" if not isinstance(value, (int, float)) or value != value else f"{100 * value:.2f}%"


def _headline(task: str, metrics) -> list[str]:
    from ..eval.tasks import headline

    names = headline(task, metrics) or [m for m in metrics if "acc" in m or "recall@" in m]
    return [m for m in names if m in metrics and m not in NOT_PLOTTED]


def _recipe_facts(recipe: dict) -> list[tuple[str, str]]:
    def compact(value) -> str:
        return json.dumps(value, separators=(", ", ": ")) if isinstance(value, (dict, list)) else str(value)

    model, data, train = recipe.get("model") or {}, recipe.get("data") or {}, recipe.get("train") or {}
    vision, text, loss = model.get("vision") or {}, model.get("text") or {}, recipe.get("loss") or {}
    v = str(vision.get("name"))
    if vision.get("kwargs"):
        v += f" {compact(vision['kwargs'])}"
    if vision.get("image_size"):
        v += f", {vision['image_size']} px"
    if vision.get("weights"):
        v += f", weights {vision['weights']}"
    if text.get("path"):
        t = str(text["path"])
    else:
        cfg = text.get("config") or {}
        keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")
        t = "random init: " + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)
    l_ = str(loss.get("name"))
    if loss.get("kwargs"):
        l_ += f" {compact(loss['kwargs'])}"
    facts = [
        ("vision tower", v),
        ("text tower", t),
        ("embedding dim", str(model.get("embed_dim"))),
        ("loss", l_),
        ("data", compact(data.get("train"))),
        (
            "schedule",
            f"{train.get('steps')} steps, batch {data.get('batch_size')} per process, lr {train.get('lr')}, "
            f"warm-up {train.get('warmup_steps')}, precision {train.get('precision', 'fp32')}",
        ),
    ]
    return [(k, val) for k, val in facts if val not in ("None", "")]


def _eval_table(run: RunData) -> Table | None:
    rows = []
    if run.results:
        for r in run.results:
            metrics = r.get("metrics") or {}
            for m in _headline(str(r.get("task")), metrics):
                rows.append([str(r.get("dataset")), str(r.get("task")), m, _pct(metrics[m]), str(r.get("step", ""))])
        source = "results.json"
    else:
        for key in run.keys("eval/"):
            parts = key.split("/")
            if len(parts) < 4:
                continue
            dataset, task, metric = "/".join(parts[1:-2]), parts[-2], parts[-1]
            if metric in _headline(task, {metric: None}):
                step, value = run.last(key)
                rows.append([dataset, task, metric, _pct(value), str(step)])
        source = "metrics.jsonl"
    if not rows:
        return None
    return Table(f"Final evaluation (from {source})", ["dataset", "task", "metric", "value", "step"], rows)


def _eval_panels(run: RunData) -> dict:
    """ "dataset: task" -> {metric: (steps, values)}, metrics in the results table's order."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for key in run.series:  # in the order first logged, which is the recipe's
        parts = key.split("/")
        if key.startswith("eval/") and len(parts) >= 4:
            found.setdefault(("/".join(parts[1:-2]), parts[-2]), {})[parts[-1]] = key
    return {
        f"{dataset}: {task}": {m: run.steps_values(keys[m]) for m in _headline(task, keys)}
        for (dataset, task), keys in found.items()
        if _headline(task, keys)
    }


def _skip_table(run: RunData) -> Table | None:
    if run.summary is not None and isinstance(run.summary.get("skipped"), dict):
        skipped, source = run.summary["skipped"], "summary.json"
    else:
        skipped = {k.removeprefix("data/skipped_"): run.last(k)[1] for k in run.keys("data/skipped_")}
        source = "metrics.jsonl, last logged"
    if not skipped:
        return None
    rows = [[str(reason), f"{int(n):,}"] for reason, n in sorted(skipped.items())]
    return Table(f"Skipped training samples (from {source})", ["reason", "count"], rows)


def _training_plots(run: RunData, out: Path, page: Page, notes: list[str]) -> dict[str, Path]:
    """Loss, learning rate, logit scale, throughput and evaluation metrics over steps."""
    from . import plots as P

    written: dict[str, Path] = {}
    for key, stem, title, ylabel, smooth in TRAIN_CURVES:
        steps, values = run.steps_values(key)
        if steps:
            written[stem] = P.plot_curve(
                out / f"{stem}.png", title, ylabel, steps, values, smooth=smooth, scientific=stem == "lr"
            )
            page.plots.append(Plot(title, written[stem], f"{key} from metrics.jsonl, {len(steps)} points."))
        elif run.series:
            notes.append(f"no {key} in metrics.jsonl: {stem}.png not drawn")
    steps, values = run.steps_values("train/samples_per_s")
    if steps:
        mfu = run.series.get("train/mfu", {})
        ratios = [mfu[s] / v for s, v in zip(steps, values) if s in mfu and v > 0]
        written["throughput"] = P.plot_throughput(
            out / "throughput.png", steps, values, float(np.median(ratios)) if ratios else 0.0
        )
        page.plots.append(
            Plot("Throughput", written["throughput"], "Samples per second over each logging window (all processes).")
        )
    panels = _eval_panels(run)
    if panels:
        written["eval_metrics"] = P.plot_eval_metrics(out / "eval_metrics.png", panels)
        page.plots.append(
            Plot(
                "Evaluation metrics over steps",
                written["eval_metrics"],
                "Headline metrics from the eval/* entries of metrics.jsonl.",
            )
        )
    elif run.series:
        notes.append("no eval/* metrics in metrics.jsonl (eval.datasets empty, or the run stopped before evaluating)")
    return written


RECALL_HEADERS = ["dataset", "images", "captions"] + [f"{d} R@{k}" for d in ("i->t", "t->i") for k in (1, 5, 10)]


def _embedding_section(page: Page, out: Path, sets: list, max_images: int) -> dict[str, Path]:
    """The recall@k curve, its table and the embedding map of the first dataset."""
    from . import plots as P

    ckpt = sets[0].checkpoint
    recall = P.plot_recall_at_k(out / "recall_at_k.png", sets)
    page.plots.append(
        Plot(
            "Retrieval recall@k",
            recall,
            f"Checkpoint {ckpt}, on the first {max_images} images (at most) of each evaluation dataset with their "
            "captions. Fewer candidates than the full evaluation, so recall is higher. "
            "text -> image is CLIP_benchmark's image_retrieval_recall@k.",
        )
    )
    rows = []
    for s in sets:
        rec = [
            _pct(s.recall[d][k - 1]) if k <= len(s.recall[d]) else "-"
            for d in ("image_to_text", "text_to_image")
            for k in (1, 5, 10)
        ]
        rows.append([s.dataset, str(s.num_images), str(s.num_texts), *rec])
    page.tables.append(Table(f"Retrieval on the encoded subset ({ckpt})", RECALL_HEADERS, rows))
    emb_map, what = P.plot_embedding_map(out / "embedding_map.png", sets[0])
    page.plots.append(
        Plot(
            "Embedding map", emb_map, f"Checkpoint {ckpt}. PCA of the L2-normalised image embeddings; colour = {what}."
        )
    )
    written = {"recall_at_k": recall, "embedding_map": emb_map}
    written.update(_gallery_section(page, out, sets))
    return written


def _gallery_section(page: Page, out: Path, sets: list) -> dict[str, Path]:
    """The retrieval gallery (both directions) of the first dataset and the zero-shot confusion
    matrix of the first dataset that has one."""
    from . import plots as P

    written: dict[str, Path] = {}
    gallery, ckpt = sets[0].gallery, sets[0].checkpoint
    if gallery is not None:
        sample = f"Checkpoint {ckpt}; a fixed sample (seed {gallery.seed}) of the encoded {gallery.dataset} items"
        written["gallery_text_to_image"] = P.plot_gallery_text_to_image(out / "gallery_text_to_image.png", gallery)
        page.plots.append(
            Plot(
                "Retrieval gallery: text -> image",
                written["gallery_text_to_image"],
                f"{sample}: each caption with the images it ranks first (cosine similarity above each), "
                "the true image framed in green.",
            )
        )
        written["gallery_image_to_text"] = P.plot_gallery_image_to_text(out / "gallery_image_to_text.png", gallery)
        page.plots.append(
            Plot(
                "Retrieval gallery: image -> text",
                written["gallery_image_to_text"],
                f"{sample}: each image with the captions it ranks first, its own captions in green.",
            )
        )
    confusion = next((s.confusion for s in sets if s.confusion is not None), None)
    if confusion is not None:
        written["zeroshot_confusion"], what = P.plot_confusion(out / "zeroshot_confusion.png", confusion)
        page.plots.append(
            Plot(
                "Zero-shot confusion matrix",
                written["zeroshot_confusion"],
                f"Checkpoint {ckpt}. Zero-shot predictions (the evaluation's class names x templates) on the "
                f"{confusion.num_images} labelled encoded images of {confusion.dataset}: true class in rows, "
                f"predicted in columns, shaded by the share of the row; {what}.",
            )
        )
    return written


def write_report(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    embeddings: bool = True,
    checkpoint: str | os.PathLike | None = None,
    max_images: int = 500,
    device: str | None = None,
) -> dict:
    """Write ``report.html``, ``report.md`` and the PNG plots of a run folder.

    Args:
        run_dir: a folder written by ``mmcl train`` (``metrics.jsonl`` alone is enough).
        out_dir: where to write; default ``RUN_DIR/report``.
        embeddings: encode the recipe's evaluation data with the checkpoint for the recall@k
            curve and the embedding map.
        checkpoint: checkpoint folder to encode with (default: the run's latest).
        max_images: images per evaluation dataset to encode (the first ones).
        device: torch device for encoding (default: cuda when available, cpu when the recipe
            says ``train.cpu``).

    Returns:
        ``{"html": Path, "markdown": Path, "plots": {stem: Path}, "notes": [str]}``.

    Raises:
        ConfigError: ``run_dir`` is not a run folder.
    """
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    page = Page(f"Run report: {run.name}", facts=[("run folder", str(run.run_dir))])
    notes = list(run.notes)
    if run.recipe:
        page.facts += _recipe_facts(run.recipe)
    if run.summary:
        s = run.summary
        page.facts.append(
            ("finished", f"step {s.get('step')}, epoch {s.get('epoch')}, {int(s.get('samples_seen') or 0):,} samples")
        )
        if s.get("data"):
            page.facts.append(("training data", str(s["data"])))
    elif run.series:
        notes.append("no summary.json: the run has not finished (or was stopped)")

    # final values
    final = [[label, _fmt(key, run.last(key)[1]), str(run.last(key)[0])] for key, label in TRAIN_FINAL if run.last(key)]
    final += [[key, _fmt(key, run.last(key)[1]), str(run.last(key)[0])] for key in run.keys("negatives/")]
    if final:
        page.tables.append(Table("Final training metrics (last logged)", ["metric", "value", "step"], final))
    for table in (_eval_table(run), _skip_table(run)):
        if table is not None:
            page.tables.append(table)
    if run.summary is not None and not run.summary.get("skipped"):
        page.facts.append(("skipped samples", "none"))

    written = _training_plots(run, out, page, notes)

    # embeddings of the evaluation data
    if embeddings:
        from .embeddings import encode_eval_sets

        try:
            sets, more = encode_eval_sets(run.run_dir, checkpoint, max_images, device=device)
        except (ConfigError, OSError) as e:
            sets, more = [], [f"recall@k curve and embedding map skipped: {e}"]
        notes += more
        if sets:
            written.update(_embedding_section(page, out, sets, max_images))
    else:
        notes.append("embeddings not computed (--no-embeddings): no recall@k curve or embedding map")

    page.notes = notes
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(page))
    md_path.write_text(render_markdown(page))
    return {"html": html_path, "markdown": md_path, "plots": written, "notes": notes}
