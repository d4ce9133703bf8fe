"""Suites: the shipped ones load, the grouped table averages by hand-checkable rules, results of
several models line up in one table (markdown, CSV, HTML), and bad suite files are one line."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mmcl.cli import main
from mmcl.data.benchmarks import get_benchmark, tasks_of
from mmcl.errors import ConfigError
from mmcl.eval.suite import list_suites, load_suite, main_value, suite_rows, suite_table


def test_shipped_suites_name_registered_benchmarks_and_tasks():
    assert list_suites() == ["clip_benchmark", "datacomp"]
    cb = load_suite("clip_benchmark")
    assert len(cb.entries) >= 30 and {"retrieval", "compositional"} <= set(cb.groups)
    datacomp = load_suite("datacomp")
    assert len(datacomp.entries) == 38 and sum(not e.skip for e in datacomp.entries) == 33
    assert datacomp.groups == ["ImageNet", "ImageNet dist. shifts", "VTAB", "retrieval", "other"]
    for suite in (cb, datacomp):
        for e in suite.entries:
            assert e.task in tasks_of(get_benchmark(e.benchmark)), e


def _record(model, dataset, task, **metrics):
    return {"model": model, "pretrained": "p", "dataset": dataset, "task": task, "metrics": metrics}


SUITE = """
name: tiny
entries:
  - {benchmark: cifar10, task: zeroshot, group: classification}
  - {benchmark: mnist, task: zeroshot, group: classification, metric: mean_per_class_recall}
  - {benchmark: flickr8k, task: retrieval, group: retrieval}
  - {benchmark: winoground, task: compositional, group: compositional, metric: group_score}
  - {benchmark: wds_fairness-geode, task: zeroshot, group: compositional, skip: "worst-group accuracy"}
"""


def test_grouped_table_by_hand(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SUITE)
    suite = load_suite(tmp_path / "tiny.yaml")
    records = [
        _record("A", "cifar10", "zeroshot_classification", acc1=0.5, mean_per_class_recall=0.1),
        _record("A", "mnist", "zeroshot_classification", acc1=0.9, mean_per_class_recall=0.7),
        _record(
            "A", "flickr8k", "zeroshot_retrieval", **{"image_retrieval_recall@1": 0.2, "text_retrieval_recall@1": 0.4}
        ),
        _record("A", "winoground", "compositional", group_score=0.25, text_score=0.5),
        _record("B", "cifar10", "zeroshot", acc1=0.75),  # an in-run results.json spelling
    ]
    header, rows = suite_rows(suite, records)
    assert header == ["group", "benchmark", "task", "metric", "A (p)", "B (p)"]
    table = {(r[0], r[1]): r[4:] for r in rows}
    assert table[("classification", "cifar10")] == ["50.00", "75.00"]
    assert table[("classification", "mnist")] == ["70.00", ""]  # the entry's own metric
    assert table[("retrieval", "flickr8k")] == ["30.00", ""]  # mean of image and text recall@1
    assert table[("compositional", "wds_fairness-geode")] == ["not scored", "not scored"]
    assert table[("classification", "average")] == ["60.00", "75.00 (1/2)"]
    assert table[("compositional", "average")] == ["25.00", ""]  # the skipped entry is not averaged
    assert table[("average", "average")] == [f"{100 * (0.5 + 0.7 + 0.3 + 0.25) / 4:.2f}", "75.00 (1/4)"]
    rows_csv = list(csv.reader(io.StringIO(suite_table(suite, records, "csv"))))
    assert rows_csv[0] == header and len(rows_csv) == len(rows) + 1
    page = suite_table(suite, records, "html")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and '<tr class="average">' in page
    assert main_value({"image_retrieval_recall@5": 0.5, "text_retrieval_recall@5": 1.0}, "mean_recall@5") == 0.75


def test_summarize_joins_models_into_one_suite_table(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(SUITE)
    for model, acc in (("A", 0.5), ("B", 0.25)):
        (tmp_path / model).mkdir()
        rec = _record(model, "cifar10", "zeroshot_classification", acc1=acc, acc5=1.0, mean_per_class_recall=acc)
        (tmp_path / model / "cifar10_zeroshot_classification.json").write_text(json.dumps({**rec, "language": "en"}))
    args = ["eval", "summarize", str(tmp_path / "A"), str(tmp_path / "B"), "--suite", str(tmp_path / "tiny.yaml")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| classification | cifar10 | zeroshot | acc1 | 50.00 | 25.00 |" in out
    assert main([*args, "--format", "html", "--output", str(tmp_path / "t.html")]) == 0
    assert "<td>25.00</td>" in (tmp_path / "t.html").read_text()
    assert main(["eval", "summarize", str(tmp_path / "A"), "--format", "html"]) == 0  # the plain table too
    assert "<th>metric</th>" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        ("entries: []", "a non-empty list of entries"),
        ("entries: [{benchmark: cifar10}]", "an entry is a mapping with benchmark and task"),
        ("entries: [{benchmark: cifar10, task: zeroshot, grup: x}]", r"unknown keys \['grup'\]"),
        ("entries: [{benchmark: cifar10, task: zero}]", "'zero' is not an evaluation task"),
    ],
)
def test_bad_suite_files_are_one_line(tmp_path, text, message):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_suite(tmp_path / "s.yaml")


def test_unknown_suite_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="shipped: clip_benchmark, datacomp"):
        load_suite("vtab")


def test_an_entry_whose_task_does_not_fit_its_benchmark(tmp_path):
    from mmcl.eval.suite import entry_config

    (tmp_path / "s.yaml").write_text("entries: [{benchmark: sugar_crepe, task: zeroshot}]")
    suite = load_suite(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match=r"sugar_crepe is a compositional benchmark \(tasks: compositional\)"):
        entry_config(suite, suite.entries[0], tmp_path)
