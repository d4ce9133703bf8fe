"""CLIP_benchmark-compatible result files and summary tables."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .tasks import headline, task_of_record


def make_record(task: str, dataset: str, model: str, pretrained: str, metrics: dict) -> dict:
    """One result, shaped like CLIP_benchmark's output JSON: ``task`` is CLIP_benchmark's name of the
    task where it has one (``zeroshot_classification``, ``zeroshot_retrieval``, ``linear_probe``),
    else mmcl's (``knn``, ``compositional``, ...)."""
    known = task_of_record(task)
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": known.record_name if known is not None else task,
        "metrics": metrics,
        "language": "en",
    }


def write_record(record: dict, output: str | Path) -> Path:
    """Write ``record`` to ``output`` (a file, or a folder that gets ``<dataset>_<task>.json``)."""
    out = Path(output)
    if out.suffix != ".json":
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"{record['dataset']}_{record['task']}.json"
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(out)
    return out


def load_records(paths: list[str | Path]) -> list[dict]:
    """Records from result files or folders of them (a file may hold one record or a list)."""
    records = []
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            data = json.loads(f.read_text())
            for r in data if isinstance(data, list) else [data]:
                if isinstance(r, dict) and "metrics" in r and "task" in r:
                    records.append(r)
    return records


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{100 * v:.2f}" if v <= 1 else f"{v:.2f}"
    return str(v)


def _headline(record: dict) -> list[str]:
    """The metric names a summary shows for one record: its task's headline metrics (the task's
    registered name, CLIP_benchmark's or an older spelling: in-run ``results.json`` and ``mmcl eval``
    files both read), for a task mmcl does not know every float metric."""
    metrics = record["metrics"]
    names = headline(str(record["task"]), metrics)
    return names if names is not None else [k for k, v in metrics.items() if isinstance(v, float)]


def summary_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "pretrained", "dataset", "task", "metric", "value"]
    rows = []
    for r in records:
        for name in _headline(r):
            if name in r["metrics"]:
                rows.append(
                    [
                        r.get("model", ""),
                        str(r.get("pretrained", "")),
                        r["dataset"],
                        r["task"],
                        name,
                        _fmt(r["metrics"][name]),
                    ]
                )
    return header, rows


def summarize(records: list[dict], fmt: str = "markdown") -> str:
    """A table of the headline metrics (percentages) of many results: ``markdown`` or ``csv``."""
    header, rows = summary_rows(records)
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
