"""CLIP_benchmark-compatible result files and summary tables."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

from .tasks import headline, task_of_record


def make_record(task: str, dataset: str, model: str, pretrained: str, metrics: dict, language: str = "en") -> dict:
    """One result, shaped like CLIP_benchmark's output JSON: ``task`` is CLIP_benchmark's name of the
    task where it has one (``zeroshot_classification``, ``zeroshot_retrieval``, ``linear_probe``),
    else mmcl's (``knn``, ``compositional``, ...); ``language`` the language of the captions and
    prompts (ISO 639-1)."""
    known = task_of_record(task)
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": known.record_name if known is not None else task,
        "metrics": metrics,
        "language": language,
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
    """One row per headline metric of each record; a ``language`` column when any record is in a
    language other than English."""
    languages = any(r.get("language", "en") != "en" for r in records)
    header = ["model", "pretrained", "dataset", "task", "metric", "value"] + (["language"] if languages else [])
    rows = []
    for r in records:
        for name in _headline(r):
            if name in r["metrics"]:
                row = [
                    r.get("model", ""),
                    str(r.get("pretrained", "")),
                    r["dataset"],
                    r["task"],
                    name,
                    _fmt(r["metrics"][name]),
                ]
                rows.append(row + ([str(r.get("language", "en"))] if languages else []))
    return header, rows


HTML_STYLE = (
    "table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 8px}"
    "tr.average{font-weight:bold;background:#f3f3f3}"
)


def render_table(header: list[str], rows: list[list[str]], fmt: str = "markdown", title: str = "results",
                 emphasis=None) -> str:  # fmt: skip
    """``rows`` under ``header`` as ``markdown``, ``csv`` or ``html`` (one page, a plain table, no
    script; rows for which ``emphasis(row)`` holds are set in bold)."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    if fmt == "html":
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join(
            ('<tr class="average">' if emphasis is not None and emphasis(r) else "<tr>")
            + "".join(f"<td>{esc(c)}</td>" for c in r)
            + "</tr>"
            for r in rows
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{HTML_STYLE}</style></head><body><h1>{esc(title)}</h1>"
            f"<table><tr>{head}</tr>{body}</table></body></html>\n"
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summarize(records: list[dict], fmt: str = "markdown") -> str:
    """A table of the headline metrics (percentages) of many results: ``markdown``, ``csv`` or ``html``."""
    header, rows = summary_rows(records)
    return render_table(header, rows, fmt, "mmcl evaluation results")
