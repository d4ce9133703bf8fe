"""PNG plots of a run: training curves, evaluation metrics, recall@k and an embedding map.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot), so nothing here touches a
display or a global figure state. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .embeddings import EvalEmbeddings, cluster_labels, pca_2d

DPI = 110
MARKER_MAX_POINTS = 40  # mark every point of shorter series, so a one-point series still shows


def _figure(width: float = 6.4, height: float = 3.6, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _style(ax, title: str, xlabel: str = "step", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if xlabel == "step" and hi - lo < 2:  # one logged step: integer ticks need some room
        mid = round((lo + hi) / 2)
        ax.set_xlim(mid - 1, mid + 1)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def _marker(n: int) -> str:
    return "o" if n <= MARKER_MAX_POINTS else ""


def moving_average(values: list[float], window: int) -> list[float]:
    """Centred moving average (shorter windows at the ends), so the smoothed curve does not lag."""
    x = np.asarray(values, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(x)])
    half = window // 2
    lo = np.clip(np.arange(len(x)) - half, 0, len(x))
    hi = np.clip(np.arange(len(x)) + half + 1, 0, len(x))
    return list((sums[hi] - sums[lo]) / (hi - lo))


def plot_curve(
    path: Path,
    title: str,
    ylabel: str,
    steps: list[int],
    values: list[float],
    smooth: bool = False,
    scientific: bool = False,
) -> Path:
    """One logged scalar over steps; with ``smooth`` (and 20 points or more) the logged values are
    drawn faintly under a centred moving average over about 1/15 of them."""
    fig, axes = _figure()
    ax = axes[0, 0]
    if smooth and len(values) >= 20:
        window = max(3, len(values) // 15) | 1
        ax.plot(steps, values, color="C0", alpha=0.3, linewidth=1, label="logged")
        ax.plot(steps, moving_average(values, window), color="C0", linewidth=1.8, label=f"mean of {window} points")
        ax.legend(fontsize=8)
    else:
        ax.plot(steps, values, color="C0", marker=_marker(len(values)), markersize=3, linewidth=1.5)
    if scientific:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _style(ax, title, ylabel=ylabel)
    return _save(fig, path)


def plot_throughput(path: Path, steps: list[int], samples_per_s: list[float], mfu_per_sample_s: float = 0.0) -> Path:
    """Samples per second over steps. MFU is proportional to it (``mfu_per_sample_s`` = MFU per
    sample/s), so it is shown as a second scale on the right rather than as a second line."""
    fig, axes = _figure()
    ax = axes[0, 0]
    ax.plot(steps, samples_per_s, color="C2", marker=_marker(len(steps)), markersize=3)
    ax.set_ylim(bottom=0)
    _style(ax, "Throughput", ylabel="samples / s (all processes)")
    if mfu_per_sample_s > 0:
        right = ax.secondary_yaxis("right", functions=(lambda x: x * mfu_per_sample_s, lambda y: y / mfu_per_sample_s))
        right.set_ylabel("model FLOP utilisation")
        right.yaxis.set_major_formatter(PercentFormatter(1.0))
    return _save(fig, path)


def plot_eval_metrics(path: Path, panels: dict[str, dict[str, tuple[list[int], list[float]]]]) -> Path:
    """Evaluation metrics over steps: one panel per dataset and task, one line per metric.

    Args:
        panels: "dataset: task" -> {metric: (steps, values in [0, 1])}.
    """
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(6.4 if ncols == 1 else 11, 3.4 * nrows, ncols, nrows)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for i, (label, (steps, values)) in enumerate(lines.items()):
            style = "-" if i < 10 else "--"
            ax.plot(steps, values, style, color=f"C{i % 10}", marker=_marker(len(steps)), markersize=4, label=label)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(-0.02, 1.02)
        _style(ax, title)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_recall_at_k(path: Path, sets: list[EvalEmbeddings]) -> Path:
    """Recall@k for k = 1..K in both directions, one panel per dataset."""
    ncols = min(2, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = _figure(6.4 if ncols == 1 else 11, 3.6 * nrows, ncols, nrows)
    for ax, s in zip(axes.flat, sets):
        for key, label, color in (("image_to_text", "image -> text", "C0"), ("text_to_image", "text -> image", "C1")):
            values = s.recall[key]
            ax.plot(range(1, len(values) + 1), values, color=color, marker="o", markersize=4, label=label)
        ax.set_xticks(range(1, len(s.recall["image_to_text"]) + 1))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(0, 1.02)
        _style(ax, f"Recall@k: {s.dataset} ({s.num_images} images, {s.num_texts} captions)", "k", "recall@k")
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(sets) :]:
        ax.set_visible(False)
    return _save(fig, path)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    colours = list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors)
    return [colours[i % len(colours)] for i in range(n)]


def plot_embedding_map(path: Path, emb: EvalEmbeddings, max_legend: int = 40) -> tuple[Path, str]:
    """Image embeddings on their first two principal components, coloured by class label where
    the data has labels, otherwise by k-means cluster.

    Returns:
        the PNG path and what the colours mean ("class" or "k-means cluster (k=...)").
    """
    coords, explained = pca_2d(emb.image_features)
    labelled = emb.labels >= 0
    by_class = int(labelled.sum()) >= 2
    groups = emb.labels if by_class else cluster_labels(emb.image_features)
    present = sorted(int(g) for g in np.unique(groups[labelled] if by_class else groups))
    legend = len(present) <= max_legend
    width = 6.4 + (2.6 if legend and len(present) > 20 else 1.6 if legend else 0)
    fig, axes = _figure(width, 5.2)
    ax = axes[0, 0]
    if by_class and not labelled.all():
        ax.scatter(*coords[~labelled].T, s=8, color="0.75", alpha=0.6, linewidths=0, label="no label")
    for colour, g in zip(_palette(len(present)), present):
        mask = (groups == g) & (labelled if by_class else True)
        if by_class and emb.classnames and g < len(emb.classnames):
            name = emb.classnames[g]
        else:
            name = f"class {g}" if by_class else f"cluster {g}"
        ax.scatter(*coords[mask].T, s=14, color=colour, alpha=0.85, linewidths=0, label=name)
    what = "class" if by_class else f"k-means cluster (k={len(present)})"
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    count = f"{emb.num_images} images" + (f", {int(labelled.sum())} labelled" if by_class else "")
    ax.set_title(f"Image embeddings: {emb.dataset} ({count}), colour = {what}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(
            fontsize=6,
            markerscale=1.2,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=2 if len(present) > 20 else 1,
            frameon=False,
        )
    return _save(fig, path), what
