"""CLIP_benchmark-compatible result files and summary tables."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

# The metrics shown in summary tables, per task (all metrics stay in the JSON); retrieval shows every
# recall@k computed (_headline).
HEADLINE = {
    "zeroshot_classification": ["acc1", "acc5", "mean_per_class_recall"],
    "linear_probe": ["acc1", "acc5", "mean_per_class_recall"],
    "knn": ["acc1", "acc5", "mean_per_class_recall"],
    "compositional": ["acc"],
}
# mmcl's short task names -> CLIP_benchmark's task names in result files.
TASK_NAMES = {
    "zeroshot": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
    "linear-probe": "linear_probe",
    "knn": "knn",
    "compositional": "compositional",
}


def make_record(task: str, dataset: str, model: str, pretrained: str, metrics: dict) -> dict:
    """One result, shaped like CLIP_benchmark's output JSON."""
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": TASK_NAMES.get(task, task),
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
    """The metric names a summary shows for one record: the task's HEADLINE, for retrieval every
    recall@k computed (image then text, by k), for other tasks every float metric."""
    metrics = record["metrics"]
    if record["task"] == "zeroshot_retrieval":
        ks = sorted(
            {int(k.rsplit("@", 1)[1]) for k in metrics if re.fullmatch(r"(image|text)_retrieval_recall@\d+", k)}
        )
        return [f"{side}_retrieval_recall@{k}" for side in ("image", "text") for k in ks]
    return HEADLINE.get(record["task"], [k for k, v in metrics.items() if isinstance(v, float)])


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
