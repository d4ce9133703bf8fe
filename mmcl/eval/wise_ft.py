"""The WiSE-FT sweep (Wortsman et al. 2022): evaluate the weight-space ensembles of a run and the
weights it started from at several mixing coefficients, pick the best, plot the curve.

The interpolation itself is :mod:`mmcl.models.wise_ft`; here each ``alpha`` is evaluated with the
same evaluators as ``mmcl eval`` (the run's ``eval.datasets`` or any other eval section).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import ConfigError
from ..models.adapters import merge_adapters
from ..models.wise_ft import check_same_architecture, interpolated_model, start_model
from ..recipe import EvalConfig
from .adapters import MmclAdapter
from .runner import evaluate
from .tasks import headline

RESULTS_NAME = "wise_ft.json"
PLOT_NAME = "wise_ft.png"


def _flat(records: list[dict]) -> dict[str, float]:
    """``{"dataset/task/metric": value}`` of the headline metrics of each record."""
    out = {}
    for r in records:
        for name in headline(r["task"], r["metrics"]) or [k for k, v in r["metrics"].items() if _number(v)]:
            out[f"{r['dataset']}/{r['task']}/{name}"] = float(r["metrics"][name])
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def select_key(keys: list[str], select: str | None) -> list[str]:
    """The metric keys the best alpha is chosen by: every dataset's first headline metric (their
    mean), or those starting with ``select`` (``DATASET`` or ``DATASET/TASK/METRIC``)."""
    if select is None:
        firsts: dict[str, str] = {}
        for key in keys:
            firsts.setdefault(key.split("/")[0], key)
        return list(firsts.values())
    chosen = [k for k in keys if k == select or k.startswith(select.rstrip("/") + "/")]
    if not chosen:
        raise ConfigError(f"--select {select!r} names no metric; valid choices: {', '.join(keys)}")
    return chosen[:1]


def wise_ft_sweep(
    run_dir: str | Path,
    alphas: list[float],
    *,
    start: str | Path | None = None,
    eval_cfg: EvalConfig | None = None,
    checkpoint: str | Path | None = None,
    select: str | None = None,
    device=None,
    progress: bool = False,
) -> dict:
    """Evaluate ``theta(alpha)`` for each alpha; returns the JSON-ready result (see the docs).

    Args:
        run_dir: a run folder (its latest checkpoint, or ``checkpoint``).
        alphas: mixing coefficients in [0, 1]; 0 is the start, 1 the fine-tuned model.
        start: the weights to interpolate with (default: what the run started from,
            :func:`mmcl.models.wise_ft.start_model`).
        eval_cfg: the evaluation (default: the run's ``eval`` section).
        select: the metric the best alpha maximises (default: the mean of every dataset's first
            headline metric).
    """
    bad = [a for a in alphas if not 0 <= a <= 1]
    if bad or not alphas:
        raise ConfigError(f"--alphas: each in [0, 1], e.g. 0,0.25,0.5,0.75,1; got {alphas}")
    adapter = MmclAdapter.from_run(run_dir, checkpoint, device)
    eval_cfg = eval_cfg or adapter.recipe.eval
    if not eval_cfg.datasets:
        raise ConfigError("wise-ft: the run's recipe declares no eval.datasets; give some (eval.datasets=...)")
    finetuned = merge_adapters(adapter.model).cpu()
    first, source = start_model(run_dir, start)
    check_same_architecture(first.state_dict(), finetuned.state_dict())
    rows = []
    for alpha in sorted(set(alphas)):
        adapter.model = interpolated_model(first, finetuned, alpha).to(adapter.device).eval()
        rows.append({"alpha": alpha, "metrics": _flat(evaluate(adapter, eval_cfg, progress=progress))})
    keys = select_key(list(rows[0]["metrics"]), select)
    for row in rows:
        row["score"] = sum(row["metrics"][k] for k in keys) / len(keys)
    best = max(rows, key=lambda r: (r["score"], -abs(r["alpha"] - 0.5)))
    return {
        "run": str(run_dir),
        "checkpoint": str(adapter.checkpoint),
        "start": source,
        "selected_by": keys,
        "alphas": rows,
        "best_alpha": best["alpha"],
        "best_score": best["score"],
        "_models": (first, finetuned, adapter),
    }


def write_sweep(result: dict, out_dir: str | Path) -> tuple[Path, Path | None]:
    """``wise_ft.json`` and the plot ``wise_ft.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_NAME
    path.write_text(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2) + "\n")
    return path, plot_sweep(result, out / PLOT_NAME)


def plot_sweep(result: dict, path: Path) -> Path | None:
    """Two datasets: the paper's figure, accuracy on the first (the fine-tuning distribution) against
    the second (a shifted one), one point per alpha. Otherwise each selected metric against alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, keys = result["alphas"], result["selected_by"]
    fig, ax = plt.subplots(figsize=(5, 4))
    if len(keys) >= 2:
        x, y = ([r["metrics"][k] * 100 for r in rows] for k in keys[:2])
        ax.plot(x, y, "o-")
        for r, xi, yi in zip(rows, x, y, strict=True):
            ax.annotate(f"{r['alpha']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(f"{keys[0]} (%)")
        ax.set_ylabel(f"{keys[1]} (%)")
    else:
        for k in keys:
            ax.plot([r["alpha"] for r in rows], [r["metrics"][k] * 100 for r in rows], "o-", label=k)
        ax.set_xlabel("alpha (0: start, 1: fine-tuned)")
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
    ax.set_title(f"WiSE-FT (best alpha {result['best_alpha']:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_alpha(result: dict, alpha: float, out: str | Path) -> Path:
    """Save ``theta(alpha)`` of a sweep as a pretrained folder (``mmcl.load_pretrained(out)``)."""
    if math.isnan(alpha) or not 0 <= alpha <= 1:
        raise ConfigError(f"--save-alpha: alpha must be in [0, 1], got {alpha}")
    first, finetuned, adapter = result["_models"]
    with torch.no_grad():
        model = interpolated_model(first, finetuned, alpha)
    return model.save_pretrained(out, tokenizer=adapter.tokenize)
