"""Suites: a list of (benchmark, task) pairs run in one command, and one table of the results with
the average per group, like DataComp's.

A suite is a YAML file (two ship with mmcl: ``clip_benchmark``, CLIP_benchmark's usual benchmarks,
and ``datacomp``, DataComp's 38 tasks from their WebDataset copies)::

    name: my_suite
    data_root: "{root}/{benchmark}"   # each benchmark's folder; {root} is --data-root
    entries:
      - {benchmark: cifar10, task: zeroshot, group: classification}
      - {benchmark: mscoco_captions, task: retrieval, group: retrieval, metric: mean_recall@1}
      - {benchmark: sugar_crepe, task: compositional, group: compositional, metric: macro_acc}
      - {benchmark: wds_fairness-geode, task: zeroshot, group: fairness, skip: "needs region labels"}

An entry may set ``metric`` (the number the table shows; default: the task's first headline
metric, ``mean_recall@1`` for retrieval), ``data_root`` (its own folder template), ``options``
(keys of an ``eval.datasets`` entry: ``split``, ``recall_k``, ``language``, ...), and ``skip`` (a
reason it is listed but not scored: a metric mmcl does not compute).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError
from .tasks import get_task, task_of_record

SUITES = Path(__file__).parent / "suites"
# the number a suite table shows for a task when the entry names none
DEFAULT_METRIC = {"zeroshot": "acc1", "knn": "acc1", "linear_probe": "acc1", "retrieval": "mean_recall@1"}


@dataclass
class SuiteEntry:
    benchmark: str
    task: str
    group: str = "other"
    metric: str | None = None
    data_root: str | None = None
    options: dict = field(default_factory=dict)
    skip: str | None = None

    @property
    def main_metric(self) -> str:
        if self.metric:
            return self.metric
        return DEFAULT_METRIC.get(self.task) or (get_task(self.task).headline or ("acc",))[0]


@dataclass
class Suite:
    name: str
    entries: list[SuiteEntry]
    about: str = ""
    data_root: str = "{root}/{benchmark}"

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(e.group for e in self.entries))

    def root_of(self, entry: SuiteEntry, root: str | Path) -> Path:
        """The folder of ``entry``'s files under the suite's data root ``root``."""
        return Path((entry.data_root or self.data_root).format(root=root, benchmark=entry.benchmark)).expanduser()


def list_suites() -> list[str]:
    """The suites shipped with mmcl (``mmcl eval suite NAME``)."""
    return sorted(p.stem for p in SUITES.glob("*.yaml"))


def _entry(raw, where: str) -> SuiteEntry:
    if not isinstance(raw, dict) or "benchmark" not in raw or "task" not in raw:
        raise ConfigError(f"{where}: an entry is a mapping with benchmark and task (and group, metric, ...); got {raw}")
    known = {f.name for f in fields(SuiteEntry)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {', '.join(sorted(known))}")
    entry = SuiteEntry(**raw)
    get_task(entry.task, f"{where}.task")
    return entry


def load_suite(spec: str | Path) -> Suite:
    """A suite from a YAML file, or a shipped suite by name (:func:`list_suites`)."""
    import yaml

    path = Path(spec)
    if not path.is_file():
        if str(spec) not in list_suites():
            shipped = ", ".join(list_suites())
            raise ConfigError(f"suite {str(spec)!r}: not a file, nor a shipped suite; shipped: {shipped}")
        path = SUITES / f"{spec}.yaml"
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise ConfigError(f"{path}: a suite is a mapping with a non-empty list of entries")
    entries = [_entry(e, f"{path}: entries[{i}]") for i, e in enumerate(raw["entries"])]
    return Suite(
        name=str(raw.get("name") or path.stem),
        entries=entries,
        about=str(raw.get("about") or ""),
        data_root=str(raw.get("data_root") or "{root}/{benchmark}"),
    )


def entry_config(suite: Suite, entry: SuiteEntry, root, language: str = "en", download: bool = False,
                 max_items: int | None = None):  # fmt: skip
    """The ``eval.datasets`` entry that runs ``entry``, its files under ``root``."""
    from ..data.benchmarks import get_benchmark, normalize_language, tasks_of
    from ..recipe import EvalDatasetConfig

    bench = get_benchmark(entry.benchmark, f"suite {suite.name}: {entry.benchmark}")
    if entry.task not in tasks_of(bench):
        tasks = ", ".join(tasks_of(bench))
        raise ConfigError(f"suite {suite.name}: {bench.name} is a {bench.task} benchmark (tasks: {tasks})")
    path = suite.root_of(entry, root)
    values = {"language": normalize_language(language), "download": download, "max_items": max_items,
              "train_max_items": max_items, **entry.options}  # fmt: skip
    if entry.task in ("knn", "linear_probe"):
        values.setdefault("train_path", str(path))
    return EvalDatasetConfig(name=bench.name, path=str(path), kind=bench.name, tasks=[entry.task], **values)


def run_suite(suite: Suite, adapter, root, output, batch_size=64, num_workers=0, progress=True, language="en",
              download=False, max_items=None) -> tuple[list[dict], dict[str, str]]:  # fmt: skip
    """Run every entry of ``suite`` that is not skipped on ``adapter``, its files under ``root``;
    write each result to ``output/<benchmark>_<task>.json``. An entry that cannot run (files
    missing, say) is reported and the others go on. Returns the records and, by
    ``benchmark/task``, the one-line reason of each entry that did not run."""
    from .checks import check_eval_dataset
    from .context import EvalData
    from .results import make_record, write_record

    records, failed = [], {}
    for entry in suite.entries:
        if entry.skip:
            continue
        where = f"{entry.benchmark}/{entry.task}"
        try:
            cfg = entry_config(suite, entry, root, language, download, max_items)
            if download:
                Path(cfg.path).mkdir(parents=True, exist_ok=True)
            check_eval_dataset(cfg, f"suite {suite.name}: {where}")
            task = get_task(entry.task)
            metrics = task.run(adapter, EvalData(cfg, batch_size, num_workers, progress), cfg)
        except ConfigError as e:
            failed[where] = str(e)
            print(f"mmcl eval suite: {where} did not run: {e}", file=sys.stderr)
            continue
        record = make_record(entry.task, cfg.name, adapter.name, str(adapter.pretrained), metrics, cfg.language)
        write_record(record, output)
        records.append(record)
    return records, failed


# --- the table -----------------------------------------------------------------------------------


def main_value(metrics: dict, metric: str) -> float | None:
    """The value of ``metric`` in ``metrics``; ``mean_recall@K`` is the mean of image and text
    retrieval recall@K (DataComp's retrieval number)."""
    if metric in metrics and isinstance(metrics[metric], (int, float)):
        return float(metrics[metric])
    if metric.startswith("mean_recall@"):
        k = metric.split("@", 1)[1]
        pair = [metrics.get(f"{d}_retrieval_recall@{k}") for d in ("image", "text")]
        if all(isinstance(v, (int, float)) for v in pair):
            return sum(pair) / 2
    return None


def _model_key(record: dict) -> str:
    model, pretrained = str(record.get("model", "")), str(record.get("pretrained", ""))
    return f"{model} ({pretrained})" if pretrained and pretrained != "None" else model


def _find(records: list[dict], entry: SuiteEntry, model: str) -> dict | None:
    from ..data.benchmarks import canonical

    task = get_task(entry.task)
    name = canonical(entry.benchmark)
    for r in records:
        known = task_of_record(str(r.get("task")))
        if _model_key(r) == model and r.get("dataset") == name and known is not None and known.name == task.name:
            return r
    return None


def suite_rows(suite: Suite, records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The table: one row per entry (group, benchmark, task, metric, a value per model, in percent),
    then the average of each group and of every scored entry, per model. An average over fewer
    entries than the group has says how many it covers (``51.20 (3/4)``)."""
    models = list(dict.fromkeys(_model_key(r) for r in records)) or ["(no results)"]
    header = ["group", "benchmark", "task", "metric", *models]
    rows, values = [], {m: {} for m in models}  # model -> entry index -> value
    for i, e in enumerate(suite.entries):
        cells = []
        for m in models:
            r = _find(records, e, m)
            v = None if r is None else main_value(r["metrics"], e.main_metric)
            if v is not None and not math.isnan(v):
                values[m][i] = v
            cells.append("not scored" if e.skip else "" if v is None else f"{100 * v:.2f}")
        rows.append([e.group, e.benchmark, e.task, e.main_metric, *cells])
    for group in [*suite.groups, None]:
        members = [i for i, e in enumerate(suite.entries) if not e.skip and (group is None or e.group == group)]
        if not members or (group is not None and len(suite.groups) == 1):
            continue
        cells = []
        for m in models:
            got = [values[m][i] for i in members if i in values[m]]
            avg = "" if not got else f"{100 * sum(got) / len(got):.2f}"
            cells.append(avg if len(got) == len(members) or not got else f"{avg} ({len(got)}/{len(members)})")
        rows.append(["average" if group is None else group, "average", "", "", *cells])
    return header, rows


def suite_table(suite: Suite, records: list[dict], fmt: str = "markdown") -> str:
    """:func:`suite_rows` as ``markdown``, ``csv`` or ``html`` (a plain table, no script)."""
    from .results import render_table

    header, rows = suite_rows(suite, records)
    return render_table(header, rows, fmt, f"{suite.name} suite", emphasis=lambda r: r[1] == "average")


def write_suite_tables(suite: Suite, records: list[dict], output) -> list[Path]:
    """``summary.md``, ``summary.csv`` and ``summary.html`` in the folder ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("html", "html")):
        path = out / f"summary.{ext}"
        path.write_text(suite_table(suite, records, fmt), encoding="utf-8")
        written.append(path)
    return written
