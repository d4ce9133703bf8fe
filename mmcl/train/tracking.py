"""A JSONL tracker for Accelerate: one JSON object per ``accelerator.log`` call."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker


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
