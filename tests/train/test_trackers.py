"""train.trackers: any tracker Accelerate supports, by name; wandb (offline) and MLflow (a local file
store) log what metrics.jsonl holds."""

from __future__ import annotations

import json
import struct
import sys

import pytest

import mmcl
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict
from mmcl.train.tracking import check_trackers, make_trackers, mlflow_name, tracker_names

from ..conftest import tiny_recipe_dict


def test_every_accelerate_tracker_is_a_valid_name():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    assert set(tracker_names()) == {"jsonl", *LOGGER_TYPE_TO_CLASS}
    assert {"tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive"} <= set(tracker_names())
    with pytest.raises(ConfigError, match=r"train.trackers: 'wandbb' is not valid; valid choices: jsonl, aim, "):
        check_trackers(["jsonl", "wandbb"])


def test_a_missing_package_is_one_line_naming_it(monkeypatch, tiny_corpus, tmp_path):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [])
    recipe = tiny_recipe_dict(tiny_corpus, tmp_path / "run", trackers=["jsonl", "comet_ml"])
    with pytest.raises(ConfigError) as e:
        mmcl.check_recipe(recipe_from_dict(recipe))
    assert str(e.value) == (
        "train.trackers: the comet_ml tracker needs its package, which is not installed: pip install comet_ml"
    )
    check_trackers(["jsonl"])  # mmcl's own: always there


def test_checking_and_building_trackers_imports_none_of_their_packages(tmp_path, monkeypatch):
    """A tracker's package loads when the run starts it, not before (timm, not mmcl, imports wandb
    where it is installed)."""
    for package in ("mlflow", "tensorboard", "torch.utils.tensorboard", "tensorboardX", "aim", "comet_ml"):
        monkeypatch.setitem(sys.modules, package, None)  # importing it now raises ImportError
    names = ["jsonl", "tensorboard", "mlflow"]
    check_trackers(names)
    built = make_trackers(names, tmp_path, "x")
    assert [getattr(t, "name", t) for t in built] == ["jsonl", "tensorboard", "mlflow"]


def _wandb_history(run_dir) -> list[dict]:
    """The history records of wandb's offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    data, block, pos, records, chunk = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(chunk)
            chunk = b""
    history = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return history


def test_wandb_offline_and_mlflow_file_store_log_what_jsonl_logs(tiny_corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind a switch
    monkeypatch.delenv("WANDB_DIR", raising=False)
    run = tmp_path / "run"
    recipe = tiny_recipe_dict(tiny_corpus, run, cpu=True, trackers=["jsonl", "wandb", "mlflow"])
    recipe["eval"]["every"] = 2
    mmcl.Trainer(recipe_from_dict(recipe)).fit()

    expected: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, {})[row["step"]] = value
    assert {"train/loss", "train/lr", "eval/test/retrieval/image_retrieval_recall@1"} <= set(expected)

    # wandb: its offline run in RUN_DIR/wandb, named after the run folder
    logged: dict[str, dict[int, float]] = {}
    for row in _wandb_history(run):
        for key, value in row.items():
            if not key.startswith("_"):
                logged.setdefault(key, {})[row["_step"]] = value
    assert logged.keys() == expected.keys()
    for key, series in expected.items():
        assert logged[key] == pytest.approx(series), key

    # MLflow: an experiment named after the recipe, a run named after the run folder
    client = mlflow.tracking.MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert mlflow_name("eval/test/zeroshot/recall@10") == "eval/test/zeroshot/recall_at_10"
    for key, series in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, mlflow_name(key))}
        assert history == pytest.approx(series), key
    assert set(found.data.metrics) == {mlflow_name(k) for k in expected}
