"""Evaluation during and at the end of training, through the same evaluators as ``mmcl eval``."""

from __future__ import annotations

import sys
from contextlib import nullcontext

from ..eval.adapters import MmclAdapter
from ..eval.runner import evaluate, write_results
from .checkpoint import output_errors
from .sharding import whole_copy


def evaluate_during_training(trainer) -> list[dict]:
    """Evaluate the recipe's ``eval.datasets`` with the trainer's model (the EMA when there is one),
    write ``results.json`` / ``results.md`` and log the metrics; main process only, others wait."""
    r = trainer.recipe
    if not r.eval.datasets:
        return []
    records = []
    whole = whole_copy(trainer)  # a sharded model, gathered whole on the main process (every rank takes part)
    if trainer.accelerator.is_main_process:
        # with an EMA of the weights, the EMA is what gets evaluated
        model = trainer.ema.module if trainer.ema is not None else whole if whole is not None else trainer.unwrapped
        was_training = model.training
        model.eval()
        adapter = MmclAdapter(model, trainer.tokenize, trainer.eval_transform, trainer.accelerator.device)
        with trainer.accelerator.autocast() if r.train.precision != "fp32" else nullcontext():
            records = evaluate(adapter, r.eval, progress=trainer.progress and sys.stderr.isatty())
        model.train(was_training)
        with output_errors(trainer.run_dir, "the evaluation results"):
            write_results(records, trainer.run_dir, trainer.step, r.name)
        trainer._log(
            {
                f"eval/{rec['dataset']}/{rec['task']}/{k}": v
                for rec in records
                for k, v in rec["metrics"].items()
                if isinstance(v, (int, float))
            }
        )
    trainer.accelerator.wait_for_everyone()
    return records
