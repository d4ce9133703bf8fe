"""The training loop on Accelerate: one process or many, CPU or GPU, resumable at any step.

Building the run is :mod:`.build`; the checkpoint state, :mod:`.state`; the data position,
:mod:`.position`; the records a run writes, :mod:`.records`; signals, :mod:`.signals`. What stays
here is the loop: read a step's batches, take the optimizer step, log, checkpoint, evaluate, stop.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data.synthetic import ensure_corpus
from ..errors import Interrupted, TrainingError
from ..eval.runner import markdown_table
from ..losses.base import create_loss
from ..models.run_folder import latest_checkpoint
from ..recipe import Recipe
from .batches import micro_batches
from .build import build_data, build_model, make_accelerator, prepare_model
from .checkpoint import check_writable, output_errors, remove_stale_saves
from .evaluation import evaluate_during_training
from .grad_cache import grad_cache_backward
from .position import DataPosition
from .recipes import check_recipe
from .records import global_skipped, record_samples, startup_summary, truncate_jsonl, write_summary
from .run_dir import claim_run_dir, save_run_metadata
from .signals import StopSignals, interrupted_again, stop_if_asked
from .state import restore_training_state, save_training_state
from .step import batch_loss
from .throughput import Throughput

log = logging.getLogger("mmcl")


class Trainer:
    """Builds everything a recipe describes and trains it.

    Example:
        >>> recipe = mmcl.load_recipe("recipes/quickstart.yaml", ["train.steps=100"])
        >>> results = mmcl.Trainer(recipe).fit()
    """

    def __init__(self, recipe: Recipe):
        self.recipe = check_recipe(recipe)  # the parts fit together (cheap; load_recipe did it already)
        self.run_dir, t = recipe.run_dir, recipe.train
        # A read-only, misplaced or already used output folder fails here in one line, before any compute.
        check_writable(self.run_dir)
        claim_run_dir(self.run_dir, t.resume, t.overwrite)
        self.accelerator = acc = make_accelerator(recipe)
        set_seed(t.seed)
        self.progress = t.progress and acc.is_main_process
        if recipe.data.synthetic is not None:
            with acc.main_process_first():
                ensure_corpus(recipe.data.synthetic, progress=self.progress)
        self.image_image = recipe.model.kind == "image_image"
        built = build_model(recipe)
        self.text_config, self.tokenizer, self.tokenize = built.text_config, built.tokenizer, built.tokenize
        self.data, self.eval_transform = build_data(recipe, built.model, self.tokenize, acc)
        self.dataset, self.loader = self.data.dataset, self.data.loader
        for note in self.data.notes:
            log.warning(note)
        self.loss_fn = create_loss(recipe.loss.name, **recipe.loss.kwargs)
        self.model, self.optimizer, self.scheduler, self.ema = prepare_model(recipe, built.model, acc)
        self.throughput = Throughput(self.unwrapped, acc, t)
        self.step, self.samples_seen = 0, 0
        self.position = DataPosition()
        self._signals: StopSignals | None = None
        self._saving = False  # a checkpoint is being written (for the message of a second Ctrl-C)
        self._saved_step: int | None = None  # the step of the last checkpoint this trainer saved
        self._stream = None  # the batches of fit (a generator over the data loader)
        self._bar = None

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def epoch(self) -> int:
        return self.position.epoch

    # ----------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Checkpoint the current step (main process writes; all processes wait for it)."""
        self._saving = True
        path = save_training_state(self)
        self._saving, self._saved_step = False, self.step
        return path

    def resume(self, path: str | Path) -> None:
        restore_training_state(self, path)

    def global_skipped(self):
        """Skipped samples per reason over all ranks (a collective call)."""
        return global_skipped(self.accelerator, self.position.skipped)

    def _summary(self) -> str:
        return startup_summary(self)

    def _say(self, line: str) -> None:
        """A line on the main process's output, above the progress bar if there is one."""
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line)
        else:
            self.accelerator.print(line)

    def _log(self, values: dict) -> None:
        """``accelerator.log`` at the current step; a full disk under metrics.jsonl is one line."""
        with output_errors(self.run_dir, "the metrics"):
            self.accelerator.log(values, step=self.step)

    # ----------------------------------------------------------------------------------------------
    def _batch_loss(self, batch: dict) -> torch.Tensor:
        r = self.recipe
        encode_text = None if self.image_image else self.unwrapped.encode_text
        return batch_loss(
            self.model,
            self.loss_fn,
            batch,
            self.image_image,
            r.data.negatives_grad,
            encode_text,
            self.accelerator.autocast,
            r.loss.name,
        )

    def _train_step(self, batches: list[dict]) -> float | None:
        """One optimizer step over one batch, or over ``accumulation_steps`` micro-batches with
        GradCache. Returns the loss, or None when the step was skipped (non-finite loss or
        gradient). Under bf16/fp16 the towers run in autocast; the logits and loss in fp32."""
        acc = self.accelerator
        # what the loss reads besides the features (sample ids, caption keys, crop boxes), declared by it
        wanted = [k for k in self.loss_fn.batch_inputs if k in batches[0]]
        self.loss_fn.set_batch({k: torch.cat([b[k] for b in batches]) for k in wanted})
        if len(batches) == 1:
            loss = self._batch_loss(batches[0])
            finite = torch.isfinite(loss.detach()).float()
            if acc.reduce(finite, reduction="sum").item() < acc.num_processes:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            acc.backward(loss)
        else:
            try:
                loss = grad_cache_backward(self.model, self.loss_fn, batches, acc)
            except ValueError as e:
                raise TrainingError(f"loss {self.recipe.loss.name}: {e}") from None
            if loss is None:
                self.optimizer.zero_grad(set_to_none=True)
                return None
        # Gradients are already averaged over ranks, so every rank reaches the same verdict.
        clip = self.recipe.train.grad_clip
        norm = acc.clip_grad_norm_(self.model.parameters(), clip if clip is not None else float("inf"))
        if norm is not None and not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.unwrapped.clamp_logit_scale()
        if self.image_image:
            self.unwrapped.momentum_update()  # MoCo's key encoder (no-op without one)
        if self.ema is not None:
            self.ema.update(self.unwrapped)  # no step: a plain EMA with train.ema_decay from the first step
        # Each rank holds its share of the global loss; the mean over ranks is the global loss.
        return acc.reduce(loss.detach(), reduction="mean").item()

    def run_eval(self) -> list[dict]:
        """Evaluate the recipe's ``eval.datasets`` now (the EMA when there is one); main process only."""
        return evaluate_during_training(self)

    # ----------------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train to ``train.steps`` (or ``train.stop_at_step``), checkpointing and evaluating as the
        recipe says. Returns the final evaluation records.

        SIGINT (Ctrl-C) or SIGTERM while training stops at the end of the current step, with a
        checkpoint of that step (see :class:`~mmcl.train.signals.StopSignals`).

        Raises:
            Interrupted: stopped by SIGINT or SIGTERM; the message says what was saved.
            OutputError: the run folder cannot be written (a full disk, a read-only file system).
            TrainingError: the run cannot go on (e.g. the loss stayed non-finite).
        """
        acc = self.accelerator
        with StopSignals(announce=acc.is_main_process) as signals:
            self._signals = signals
            try:
                self._start()
                self._loop()
            except KeyboardInterrupt as e:
                if isinstance(e, Interrupted):
                    raise
                raise self._interrupted_again() from None
            finally:
                # Saved (or given up): stop the data loader workers here, not in a destructor
                # later, where a late signal would print an ignored-exception traceback.
                signals.exiting = True
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None
                self._signals = None
        # Trained and saved: from here on Ctrl-C interrupts as usual.
        skipped = self.global_skipped()
        if skipped:
            acc.print("skipped samples: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
        write_summary(self, skipped)
        records = []
        if self.step >= self.recipe.train.steps:
            records = self.run_eval()
            if records:
                acc.print(markdown_table(records))
                acc.print(f"results: {self.run_dir / 'results.json'} and {self.run_dir / 'results.md'}")
        acc.end_training()
        return records

    def _start(self) -> None:
        """Start-up: unfinished saves of crashed runs, resume, the run folder, the trackers."""
        r, t, acc = self.recipe, self.recipe.train, self.accelerator
        if acc.is_main_process:  # the only writer of checkpoints: no save of this run is under way
            removed = remove_stale_saves(self.run_dir)
            if removed:
                acc.print(
                    f"removed {len(removed)} unfinished checkpoint save(s) left by a crashed run: "
                    + ", ".join(str(p) for p in removed)
                )
        if t.resume is not None:
            path = latest_checkpoint(self.run_dir) if t.resume == "latest" else Path(t.resume)
            if path is None:
                acc.print(f"train.resume=latest: no checkpoint in {self.run_dir}, starting fresh")
            else:
                self.resume(path)
            truncate_jsonl(self, "metrics.jsonl")  # the steps after the checkpoint are redone
            if t.record_samples:
                truncate_jsonl(self, "samples.jsonl")
        if acc.is_main_process:
            save_run_metadata(self.run_dir, r, self.text_config, self.tokenizer, self.unwrapped, self.tokenize)
        with output_errors(self.run_dir, "the metrics"):
            acc.init_trackers(r.name)
        acc.print(startup_summary(self))

    def _loop(self) -> None:
        """The training loop and the last checkpoint."""
        t = self.recipe.train
        first_step, stop = self.step, t.stop_at_step or t.steps
        # a bar on a terminal; in a log file, one line per log step instead of bar redraws
        on_terminal = sys.stderr.isatty()
        self._bar = tqdm(
            total=stop, initial=self.step, desc="train", disable=not (self.progress and on_terminal), dynamic_ncols=True
        )
        bad_in_row = 0
        self.model.train()
        try:
            self.position.commit()
            stream = self._stream = micro_batches(self)
            self._stop_if_asked(first_step)
            while self.step < stop:
                batches = [next(stream) for _ in range(t.accumulation_steps)]
                if not self.throughput.started:
                    self.throughput.first_batch(batches[0])
                    self._say("  throughput: " + self.throughput.describe())
                loss = self._train_step(batches)
                if loss is None:
                    # No stop here: the data position is not committed, but the RNG has moved on.
                    bad_in_row += 1
                    self._bad_step(bad_in_row)
                    continue
                bad_in_row = 0
                self._after_step(batches, loss, stop, first_step)
        finally:
            self._bar.close()
            self._bar = None
        self.save()
        # asked during the last step or its save: saved; the final evaluation is left to the resume
        self._stop_if_asked(first_step)

    def _bad_step(self, bad_in_row: int) -> None:
        t = self.recipe.train
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step, bad_in_row)
        if bad_in_row >= t.max_bad_steps:
            raise TrainingError(
                f"loss or gradient was non-finite for {bad_in_row} steps in a row at step {self.step} "
                f"(train.max_bad_steps={t.max_bad_steps}); lower train.lr, use train.grad_clip, or check the data"
            )

    def _after_step(self, batches: list[dict], loss: float, stop: int, first_step: int) -> None:
        """Count the step, then log, checkpoint, evaluate and stop as the recipe and signals say."""
        r, t, acc = self.recipe, self.recipe.train, self.accelerator
        self.step += 1
        self.position.commit()
        if t.record_samples:
            record_samples(self, batches)
        n = sum(b["size"] for b in batches) * acc.num_processes
        self.samples_seen += n
        self.throughput.add(n)
        self._bar.update(1)
        if self.step % t.log_every == 0 or self.step == stop:
            self._log_step(loss, stop)
        if self.step % t.checkpoint_every == 0 and self.step < stop:
            self.save()
        if r.eval.every and self.step % r.eval.every == 0 and self.step < t.steps:
            self.run_eval()
        if self.step < stop:
            self._stop_if_asked(first_step)

    def _log_step(self, loss: float, stop: int) -> None:
        skipped, speed = self.global_skipped(), self.throughput.report()
        shown = {"loss": f"{loss:.4f}", "samples_per_s": f"{speed['train/samples_per_s']:.0f}"}
        if "train/mfu" in speed:
            shown["mfu"] = f"{speed['train/mfu']:.1%}"
        if self._bar.disable:
            if self.progress:
                self.accelerator.print(f"step {self.step}/{stop} " + " ".join(f"{k} {v}" for k, v in shown.items()))
        else:
            self._bar.set_postfix(**shown)
        stats = self.loss_fn.stats_group
        self._log(
            {
                "train/loss": loss,
                "train/lr": self.scheduler.get_last_lr()[0],
                "train/logit_scale": self.unwrapped.logit_scale.exp().item(),
                **speed,
                "train/epoch": self.position.epoch,
                # cluster health of cluster-guided losses (e.g. image-caption agreement), DenseCL's two terms
                **{f"{stats}/{k}": v for k, v in self.loss_fn.last_stats.items()},
                **{f"data/skipped_{k}": v for k, v in skipped.items()},
            }
        )

    def _stop_if_asked(self, first_step: int) -> None:
        """At a step boundary: if a signal asked to stop, save this step and raise Interrupted."""
        stop_if_asked(self, first_step)

    def _interrupted_again(self) -> Interrupted:
        return interrupted_again(self)
