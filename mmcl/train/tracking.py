"""Where a run's metrics go: mmcl's own JSONL writer and every tracker Accelerate supports by name.

``train.trackers`` lists names: ``jsonl`` (``RUN_DIR/metrics.jsonl``, always available) and the
names of Accelerate's trackers (``tensorboard``, ``wandb``, ``mlflow``, ``aim``, ``comet_ml``,
``clearml``, ``dvclive``, ...). A tracker's package is imported only when the run names it, and only
by Accelerate when the run starts; :func:`check_trackers` says which package to install when one is
missing (Accelerate itself would drop the tracker without a word).

Files stay in the run folder where the tracker allows it: TensorBoard and Aim write under
``RUN_DIR``, wandb's offline or local files go to ``RUN_DIR/wandb`` (unless ``WANDB_DIR`` is set).
MLflow writes where ``MLFLOW_TRACKING_URI`` points (its default: ``mlflow.db`` in the working folder),
with ``@`` in metric names spelled ``_at_`` (MLflow refuses ``@``).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, get_available_trackers

from ..errors import ConfigError

# what `pip install` needs for a tracker whose package is missing (default: the tracker's name)
PIP_NAMES = {"aim": "'aim<4'"}


def tracker_names() -> list[str]:
    """Every name ``train.trackers`` accepts: ``jsonl`` and the trackers of the installed Accelerate."""
    return ["jsonl", *sorted(LOGGER_TYPE_TO_CLASS)]


def check_trackers(names: list[str], key: str = "train.trackers") -> None:
    """A :class:`ConfigError` for an unknown name (with the valid ones) or a tracker whose package
    is not installed (with the ``pip install`` line). Imports no tracker package."""
    valid = tracker_names()
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in valid:
            raise ConfigError(f"{key}: {name!r} is not valid; valid choices: {', '.join(valid)}")
        if name != "jsonl" and name not in available:
            raise ConfigError(
                f"{key}: the {name} tracker needs its package, which is not installed: "
                f"pip install {PIP_NAMES.get(name, name)}"
            )


def make_trackers(names: list[str], run_dir: str | os.PathLike, project: str, config: dict | None = None) -> list:
    """What ``Accelerator(log_with=...)`` takes for ``names``: :class:`JSONLTracker` for ``jsonl``,
    configured trackers for wandb (files in ``RUN_DIR/wandb``, run named after the run folder, the
    recipe as its config) and MLflow (experiment ``project``, run named after the run folder), and
    the plain name for the others (Accelerate builds them at ``init_trackers``)."""
    run_dir = Path(run_dir)
    out = []
    for name in dict.fromkeys(names):
        if name == "jsonl":
            out.append(JSONLTracker(run_dir))
        elif name == "wandb":
            kwargs = {"name": run_dir.name, "config": config or {}}
            if "WANDB_DIR" not in os.environ:
                run_dir.mkdir(parents=True, exist_ok=True)
                kwargs["dir"] = str(run_dir)
            out.append(LOGGER_TYPE_TO_CLASS["wandb"](project, **kwargs))
        elif name == "mlflow":
            out.append(MLflowNames(experiment_name=project, run_name=run_dir.name))
        else:
            out.append(name)
    return out


def mlflow_name(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_-. :/``): ``@`` reads ``_at_``
    (``image_retrieval_recall@1`` -> ``image_retrieval_recall_at_1``), anything else becomes ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


class MLflowNames(LOGGER_TYPE_TO_CLASS["mlflow"]):
    """Accelerate's MLflow tracker, with metric names MLflow accepts (:func:`mlflow_name`)."""

    def log(self, values: dict, step: int | None = None, **kwargs):
        super().log({mlflow_name(k): v for k, v in values.items()}, step=step, **kwargs)


class JSONLTracker(GeneralTracker):
    """Appends ``{"step": ..., **values}`` lines to ``RUN_DIR/metrics.jsonl`` (main process only)."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None

    def start(self):
        self._file = open(self.path, "a", buffering=1)

    @property
    def tracker(self):
        return self._file

    def store_init_configuration(self, values: dict):
        pass  # the recipe is saved as recipe.yaml in the run folder

    def log(self, values: dict, step: int | None = None, **kwargs):
        if self._file is None:
            self.start()
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")

    def finish(self):
        if self._file is not None:
            self._file.close()
            self._file = None
