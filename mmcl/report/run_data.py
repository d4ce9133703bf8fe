"""What a report reads from a run folder, without building a model.

RUN_DIR/metrics.jsonl   one ``{"step": N, key: value, ...}`` line per log call (train/*, eval/*, data/*, ...)
RUN_DIR/summary.json    final step, epoch, samples seen, skipped samples per reason, data description
RUN_DIR/results.json    the last evaluation's records (dataset, task, metrics, step)
RUN_DIR/recipe.yaml     the resolved recipe

Only one of these is needed: a folder with just ``metrics.jsonl`` (copied off a cluster, say)
still gets its training curves.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

MARKERS = ("metrics.jsonl", "recipe.yaml", "summary.json")


@dataclass
class RunData:
    """The logged history and end-of-run files of one run folder."""

    run_dir: Path
    name: str
    recipe: dict | None = None  # recipe.yaml as plain data
    summary: dict | None = None
    results: list[dict] | None = None
    # key -> {step: value}; a later line wins, since a resumed run logs again the steps it repeats
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def steps_values(self, key: str) -> tuple[list[int], list[float]]:
        points = sorted(self.series.get(key, {}).items())
        return [s for s, _ in points], [v for _, v in points]

    def last(self, key: str) -> tuple[int, float] | None:
        points = self.series.get(key)
        if not points:
            return None
        step = max(points)
        return step, points[step]

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.series if k.startswith(prefix))


def _read_json(path: Path, notes: list[str]):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} could not be read ({e.__class__.__name__}: {e}); left out")
        return None


def read_metrics(path: Path) -> tuple[dict[str, dict[int, float]], int]:
    """Numeric series of ``metrics.jsonl`` and the number of lines that were not JSON objects
    with a step (a run killed mid-write leaves a truncated last line)."""
    series: dict[str, dict[int, float]] = {}
    bad = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            for key, value in row.items():
                if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue  # None marks a non-finite value; strings and dicts are not plottable
                if math.isfinite(value):
                    series.setdefault(key, {})[step] = float(value)
    return series, bad


def read_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run folder written by ``mmcl train``.

    Raises:
        ConfigError: the folder does not exist or holds none of metrics.jsonl, recipe.yaml, summary.json.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} does not exist")
    if not any((run_dir / m).is_file() for m in MARKERS):
        raise ConfigError(
            f"{run_dir} is not an mmcl run folder (it has none of {', '.join(MARKERS)}); "
            "pass the folder a training run wrote (train.output_dir, e.g. runs/quickstart)"
        )
    notes: list[str] = []
    recipe = None
    if (run_dir / "recipe.yaml").is_file():
        try:
            recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        except (OSError, yaml.YAMLError) as e:
            notes.append(f"recipe.yaml could not be read ({e.__class__.__name__}); recipe summary left out")
        if not isinstance(recipe, dict):
            recipe = None
    series: dict[str, dict[int, float]] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        series, bad = read_metrics(metrics)
        if bad:
            notes.append(f"metrics.jsonl: {bad} line(s) were not readable JSON with a step and were ignored")
        if not series:
            notes.append("metrics.jsonl holds no numeric values yet")
    else:
        notes.append("no metrics.jsonl (trackers without jsonl?): no training curves")
    summary = _read_json(run_dir / "summary.json", notes)
    results = _read_json(run_dir / "results.json", notes)
    if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) for r in results)):
        notes.append("results.json is not a list of result records; left out")
        results = None
    name = (recipe or {}).get("name") or run_dir.resolve().name
    return RunData(run_dir, str(name), recipe, summary if isinstance(summary, dict) else None, results, series, notes)
