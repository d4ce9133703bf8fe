"""Run the evaluation tasks a recipe declares (``eval.datasets``) on a model adapter; write JSON and
markdown results. Each task runs through the task registry (:mod:`mmcl.eval.tasks`), the same code
``mmcl eval TASK`` runs, on data opened through the data-source registry."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..recipe import EvalConfig
from .context import EvalData
from .image_tasks import finetune_task, paired_image_retrieval, segmentation_probe, segmentation_splits
from .tasks import get_task, headline


def evaluate(adapter, cfg: EvalConfig, progress: bool = True) -> list[dict]:
    """Evaluate on every dataset in ``cfg``; one record per (dataset, task), CLIP_benchmark-shaped,
    with the task's registered name (``zeroshot``, ``retrieval``, ...). Each dataset is encoded
    once for all its tasks (:class:`~mmcl.eval.context.EvalData`)."""
    records = []
    for ds_cfg in cfg.datasets:
        data = EvalData(ds_cfg, cfg.batch_size, progress=progress)
        for name in ds_cfg.tasks:
            metrics = get_task(name).run(adapter, data, ds_cfg)
            records.append({"dataset": ds_cfg.name, "task": name, "metrics": metrics, "language": ds_cfg.language})
    return records


def _percent(v) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{100 * v:.2f}%"


def markdown_table(records: list[dict]) -> str:
    """The headline metrics of ``records`` (each task's declared ones), in percent."""
    lines = ["| dataset | task | metric | value |", "|---|---|---|---|"]
    for r in records:
        for name in headline(r["task"], r["metrics"]) or []:
            lines.append(f"| {r['dataset']} | {r['task']} | {name} | {_percent(r['metrics'][name])} |")
    return "\n".join(lines) + "\n"


def write_results(records: list[dict], out_dir: str | Path, step: int, model_name: str) -> tuple[Path, Path]:
    """``eval/step-N.json`` (+ ``results.json``/``results.md`` for the newest) in ``out_dir``."""
    out = Path(out_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    full = [{**r, "model": model_name, "pretrained": f"step-{step}", "step": step} for r in records]
    text = json.dumps(full, indent=2)
    (out / f"step-{step:07d}.json").write_text(text)
    json_path, md_path = Path(out_dir) / "results.json", Path(out_dir) / "results.md"
    json_path.write_text(text)
    md_path.write_text(f"# Evaluation of {model_name} at step {step}\n\n" + markdown_table(records))
    return json_path, md_path


__all__ = [
    "evaluate",
    "finetune_task",
    "markdown_table",
    "paired_image_retrieval",
    "segmentation_probe",
    "segmentation_splits",
    "write_results",
]
