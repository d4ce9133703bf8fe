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
    """``n`` distinct colours: tab10's for up to 10 classes, then tab20, tab20b and tab20c (60), then
    hues spaced by the golden angle at three lightness levels."""
    import colorsys

    from matplotlib import colormaps

    if n <= 10:
        return list(colormaps["tab10"].colors)[:n]
    colours = list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors)
    for i in range(len(colours), n):
        colours.append(colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, (0.35, 0.5, 0.65)[i % 3], 0.75))
    return colours[:n]


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
    # a legend entry per class, or for the max_legend largest ones
    sizes = {g: int(((groups == g) & (labelled if by_class else True)).sum()) for g in present}
    named = set(sorted(present, key=lambda g: (-sizes[g], g))[:max_legend])
    width = 6.4 + (2.6 if len(named) > 20 else 1.6)
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
        label = f"{name} ({sizes[g]})" if g in named else "_nolegend_"
        ax.scatter(*coords[mask].T, s=14, color=colour, alpha=0.85, linewidths=0, label=label)
    what = "class" if by_class else f"k-means cluster (k={len(present)})"
    if len(named) < len(present):
        what += f"; legend: the {len(named)} largest of {len(present)}"
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    count = f"{emb.num_images} images" + (f", {int(labelled.sum())} labelled" if by_class else "")
    ax.set_title(f"Image embeddings: {emb.dataset} ({count}), colour = {what}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(
        fontsize=6,
        markerscale=1.2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncol=2 if len(named) > 20 else 1,
        frameon=False,
    )
    return _save(fig, path), what


TRUE_COLOUR, OTHER_COLOUR = "#1a9641", "#bbbbbb"  # the true item framed in green; the others in grey


def _frame(ax, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _thumb(ax, gallery, index: int, true: bool) -> None:
    image = gallery.thumbnails.get(index)
    if image is not None:
        ax.imshow(image)
    else:
        ax.text(0.5, 0.5, "(not read)", ha="center", va="center", fontsize=7, color="0.5")
    _frame(ax, TRUE_COLOUR if true else OTHER_COLOUR, 4 if true else 1)


def plot_gallery_text_to_image(path: Path, gallery) -> Path:
    """For each sampled caption, its top-k images left to right, the true image framed in green."""
    import textwrap

    rows = gallery.text_to_image
    k = max(len(top) for _, _, top in rows)
    missed = any(rank > len(top) for (_, _, top), rank in zip(rows, gallery.true_rank_t2i))
    cols = k + 1 + missed  # the caption, its top k, and the true image where it ranks lower
    fig, axes = _figure(2.6 + 1.45 * (cols - 1), 1.55 * len(rows) + 0.5, cols, len(rows))
    fig.suptitle(f"Text -> image: the top {k} images of {len(rows)} captions ({gallery.dataset})", fontsize=10)
    for r, ((caption, true, top), rank) in enumerate(zip(rows, gallery.true_rank_t2i)):
        text_ax = axes[r, 0]
        text_ax.axis("off")
        text_ax.text(0, 0.5, textwrap.fill(caption, 30) + f"\n\ntrue image: rank {rank}", fontsize=7.5, va="center")
        for c, (index, score) in enumerate(top, start=1):
            _thumb(axes[r, c], gallery, index, index == true)
            axes[r, c].set_title(f"{c}. {score:.2f}" + (" (true)" if index == true else ""), fontsize=7)
        if missed and rank > len(top):
            _thumb(axes[r, -1], gallery, true, True)
            axes[r, -1].set_title(f"true image, rank {rank}", fontsize=7)
        elif missed:
            axes[r, -1].axis("off")
    return _save(fig, path)


def plot_gallery_image_to_text(path: Path, gallery) -> Path:
    """For each sampled image, its top-k captions, the image's own captions marked in green."""
    import textwrap

    rows = gallery.image_to_text
    fig = Figure(figsize=(10, 1.65 * len(rows) + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 5.5]})
    k = max(len(top) for _, top in rows)
    fig.suptitle(f"Image -> text: the top {k} captions of {len(rows)} images ({gallery.dataset})", fontsize=10)
    for r, ((index, top), rank) in enumerate(zip(rows, gallery.true_rank_i2t)):
        _thumb(axes[r, 0], gallery, index, False)
        axes[r, 0].set_title(f"own caption: rank {rank}" if rank else "own caption: not in the list", fontsize=7)
        text_ax = axes[r, 1]
        text_ax.axis("off")
        for c, (caption, score) in enumerate(top):
            own = gallery.caption_image[caption] == index
            line = textwrap.shorten(gallery.captions[caption], 95, placeholder="...")
            text_ax.text(
                0,
                1 - (c + 0.5) / len(top),
                f"{c + 1}. {score:.2f}  " + ("[true] " if own else "") + line,
                fontsize=7.5,
                va="center",
                color=TRUE_COLOUR if own else "0.15",
                fontweight="bold" if own else "normal",
            )
    return _save(fig, path)


def plot_confusion(path: Path, confusion, limit: int = 20) -> tuple[Path, str]:
    """The zero-shot confusion matrix: true class in rows, predicted class in columns, coloured by
    the share of the row; counts written in the cells. Returns the path and what it shows."""
    from .gallery import confused_classes

    shown = confused_classes(confusion.counts, limit)
    counts = confusion.counts[np.ix_(shown, shown)]
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    names = [confusion.classnames[c] for c in shown]
    side = max(4.5, 2.5 + 0.38 * len(shown))
    fig, axes = _figure(side + 1.4, side + 0.3)
    ax = axes[0, 0]
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, format=PercentFormatter(1.0), label="share of the true class")
    ax.set_xticks(range(len(shown)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(shown)), names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for t in range(len(shown)):
        for p in range(len(shown)):
            if counts[t, p]:
                colour = "white" if share[t, p] > 0.55 else "black"
                ax.text(p, t, str(int(counts[t, p])), ha="center", va="center", fontsize=6.5, color=colour)
    total = int((confusion.counts.sum(0) + confusion.counts.sum(1) > 0).sum())
    what = f"all {len(shown)} classes with an image or a prediction"
    if total > len(shown):
        what = f"the {len(shown)} of {total} classes in the most confusions"
    ax.set_title(
        f"Zero-shot confusion: {confusion.dataset} ({confusion.num_images} images, acc1 {confusion.acc1:.1%})\n{what}",
        fontsize=9,
    )
    return _save(fig, path), what
