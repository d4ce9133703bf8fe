"""Evaluation datasets: moved to :mod:`mmcl.data.evalsets` (training and evaluation read data
through one package); class names and templates to :mod:`mmcl.eval.classnames`. Kept so imports
of this module keep working."""

from ..data.evalsets import *  # noqa: F403
from ..data.evalsets import EvalDataset, detect_kind, open_dataset  # noqa: F401
from .classnames import resolve_list  # noqa: F401
