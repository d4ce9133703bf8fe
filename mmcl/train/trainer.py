"""The training loop on Accelerate: one process or many, CPU or GPU, resumable at any step."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, gather_object, set_seed
from tqdm.auto import tqdm

from ..data import Tokenize, image_transforms, load_tokenizer
from ..data.sources import build_train_data
from ..data.stream import merge_positions
from ..data.synthetic import ensure_corpus
from ..data.transforms import MultiView
from ..errors import ConfigError, Interrupted, TrainingError
from ..eval.adapters import MmclAdapter
from ..eval.runner import evaluate, markdown_table, write_results
from ..losses.base import call_cross_modal, create_loss
from ..models import create_model, text_model_config
from ..models.factory import weights_summary
from ..models.run_folder import latest_checkpoint, load_state, load_weights
from ..recipe import Recipe
from .checkpoint import (
    check_writable,
    checkpoint_path,
    output_errors,
    remove_stale_saves,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from .grad_cache import full_batch_loss, grad_cache_backward, loss_inputs
from .optim import create_optimizer, create_scheduler
from .recipes import check_recipe
from .run_dir import save_run_metadata
from .throughput import Throughput
from .tracking import JSONLTracker

log = logging.getLogger("mmcl")


class _FullWeights(torch.nn.Module):
    """A gathered state dict, saved like a module (``save_model`` needs one)."""

    def __init__(self, state_dict: dict):
        super().__init__()
        self._weights = state_dict or {}

    def state_dict(self, *args, **kwargs):
        return self._weights


_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
RESUME_HINT = "continue with: mmcl train RECIPE train.resume=latest (the same recipe and overrides)"


class _StopSignals:
    """While training, SIGINT (Ctrl-C) and SIGTERM (what schedulers send before they kill) only ask
    to stop: the loop finishes its step and saves a checkpoint at that boundary, never one of a half
    applied optimizer step. A second Ctrl-C raises KeyboardInterrupt at once (the save under way, if
    any, is abandoned and the previous checkpoint stays); a repeated SIGTERM changes nothing.

    Under torchrun a Ctrl-C in the terminal reaches each worker twice: from the terminal (the whole
    process group gets it) and forwarded by torchrun a moment later. So there, a SIGINT within
    ``FORWARD_WINDOW`` seconds of the first counts as the same one.

    Once ``exiting`` is set (training saved or given up, the data loader shutting down), signals are
    ignored until the previous handlers are back; that shutdown is bounded by torch's timeouts.

    Handlers are installed on entry and the previous ones restored on exit, from the main thread
    only (Python delivers signals there; elsewhere this does nothing)."""

    FORWARD_WINDOW = 1.0

    def __init__(self, announce: bool):
        self.signum: int | None = None
        self.announce = announce
        self._pid = os.getpid()
        self._previous: dict = {}
        self._first_at = 0.0
        self.exiting = False
        self._forwarded = "TORCHELASTIC_RUN_ID" in os.environ  # started by torchrun (or accelerate launch)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNAL_NAMES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default is closest
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked data loader worker (it inherits the handler): its parent stops it
        if self.exiting:
            return
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            if self.announce:
                # os.write, not print: a handler that prints while the main thread is inside a print
                # to the same stream fails with "reentrant call"
                os.write(
                    2,
                    f"\nmmcl: {_SIGNAL_NAMES[signum]}: stopping after the current step and saving a checkpoint "
                    "(Ctrl-C again to stop at once without saving)\n".encode(),
                )
            return
        if signum == signal.SIGINT:
            if self._forwarded and time.monotonic() - self._first_at < self.FORWARD_WINDOW:
                return
            raise KeyboardInterrupt


class _WorkerSignals:
    """``worker_init_fn`` of the training data loader (wrapping any other): its workers leave SIGINT
    and SIGTERM to the training process, which stops them after its boundary save. A terminal's
    Ctrl-C and a scheduler's SIGTERM reach every process of the group; a worker they killed would
    end the run mid-step. A worker whose parent died still exits on SIGTERM (torch's own shutdown
    does not need it: it sends the workers a sentinel and waits)."""

    def __init__(self, inner=None):
        self.inner = inner
        self.parent = os.getpid()

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._terminate)
        if self.inner is not None:
            self.inner(worker_id)

    def _terminate(self, signum, frame) -> None:
        if os.getppid() != self.parent:
            os._exit(0)


def image_text_forward(model, batch: dict, negatives_grad: bool = True, encode_text=None):
    """The towers on an image-text batch: ``(output, caption embeddings, negative embeddings or
    None)``. Hard-negative captions (``neg_input_ids``) share the captions' text pass, or, with
    ``negatives_grad`` false, get a second pass of ``encode_text`` (the unwrapped model's) without
    gradient, in the same train mode. A step may carry no negatives at all."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if "neg_input_ids" not in batch:
        out = model(batch["images"], ids, mask)
        return out, out.text_embeds, None
    neg_ids, neg_mask = batch["neg_input_ids"], batch["neg_attention_mask"]
    if negatives_grad:
        out = model(batch["images"], torch.cat([ids, neg_ids]), torch.cat([mask, neg_mask]))
        n = ids.shape[0]
        return out, out.text_embeds[:n], out.text_embeds[n:]
    out = model(batch["images"], ids, mask)
    if neg_ids.shape[0] == 0:
        return out, out.text_embeds, out.text_embeds.new_zeros(0, out.text_embeds.shape[1])
    with torch.no_grad():
        return out, out.text_embeds, (encode_text or model.encode_text)(neg_ids, neg_mask)


class Trainer:
    """Builds everything a recipe describes and trains it.

    Example:
        >>> recipe = mmcl.load_recipe("recipes/quickstart.yaml", ["train.steps=100"])
        >>> results = mmcl.Trainer(recipe).fit()
    """

    def __init__(self, recipe: Recipe):
        self.recipe = check_recipe(recipe)  # the parts fit together (cheap; load_recipe did it already)
        self.run_dir = recipe.run_dir
        t = recipe.train
        if t.precision == "fp16" and (t.cpu or not torch.cuda.is_available()):
            raise ConfigError(
                "train.precision=fp16 needs a GPU; use fp32 on CPU (bf16 runs on CPU but is slow without AVX512-BF16)"
            )
        # A read-only or misplaced output folder fails here in one line, before any compute.
        check_writable(self.run_dir)
        trackers = [JSONLTracker(self.run_dir) if name == "jsonl" else name for name in t.trackers]
        # Accelerate keeps one global state per process; a second Trainer in the same process (a
        # notebook, a sweep) may use another precision. The distributed set-up itself is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[t.precision],
            # Accelerate only sets up multi-process CPU training (gloo) when told it runs on CPU.
            cpu=t.cpu or not torch.cuda.is_available(),
            log_with=trackers or None,
            project_dir=str(self.run_dir),
        )
        set_seed(t.seed)
        self.progress = t.progress and self.accelerator.is_main_process

        data = recipe.data
        if data.synthetic is not None:
            with self.accelerator.main_process_first():
                ensure_corpus(data.synthetic, progress=self.progress)

        self.image_image = recipe.model.kind == "image_image"
        if self.image_image:  # vision towers only: no tokenizer, no captions
            self.text_config = self.tokenizer = self.tokenize = None
            self.model = create_model(recipe.model)
        else:
            self.text_config = text_model_config(recipe.model.text)
            self.tokenizer = load_tokenizer(recipe.model.text)
            self.model = create_model(recipe.model, text_config=None if recipe.model.text.path else self.text_config)
            self.tokenize = Tokenize(self.tokenizer, recipe.model.text.max_length)
        # densecl's match: geometry pairs cells by where each view was cropped: views that say so
        located = self.image_image and recipe.loss.kwargs.get("match") == "geometry"
        train_tf, self.eval_transform = image_transforms(self.model.vision.data_config(), data.augment, located)
        if self.image_image and data.image2_key is None:
            train_tf = MultiView(train_tf, train_tf)  # two augmented views of each image

        acc = self.accelerator
        self.data = build_train_data(
            data,
            train_tf,
            self.tokenize,
            acc.process_index,
            acc.num_processes,
            seed=t.seed,
            need_caption=not self.image_image,
        )
        self.dataset, self.loader = self.data.dataset, self.data.loader
        if isinstance(self.loader, torch.utils.data.DataLoader) and self.loader.num_workers > 0:
            self.loader.worker_init_fn = _WorkerSignals(self.loader.worker_init_fn)
        for note in self.data.notes:
            log.warning(note)
        self.loss_fn = create_loss(recipe.loss.name, **recipe.loss.kwargs)
        if t.channels_last:  # every 4-D weight: both towers and a MoCo key encoder's copy
            self.model.to(memory_format=torch.channels_last)
        if t.sync_bn and acc.num_processes > 1:
            if acc.device.type == "cpu":
                raise ConfigError(
                    "train.sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU processes use false "
                    "(or a tower and head without BatchNorm, e.g. model.head: mlp)"
                )
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        optimizer = create_optimizer(self.model, t, acc.device)
        self.scheduler = create_scheduler(optimizer, t)
        if t.compile:
            self.model.compile()  # in place: parameter names and checkpoints are unchanged
        # The scheduler is stepped by hand once per optimizer step (Accelerate's wrapper would
        # step it once per process).
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.ema = None
        if t.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.unwrapped, decay=t.ema_decay)
        self.throughput = Throughput(self.unwrapped, acc, t)

        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.sample_offset = 0  # map-style: samples of the epoch before batch 0 (after a resize)
        self.stream_progress: dict = {}  # streams: read position of this epoch (see mmcl.data.stream)
        self.skipped: Counter = Counter()
        self.samples_seen = 0
        self._signals: _StopSignals | None = None
        self._saving = False  # a checkpoint is being written (for the message of a second Ctrl-C)
        self._saved_step: int | None = None  # the step of the last checkpoint this trainer saved
        self._stream = None  # the batches of fit (a generator over the data loader)
        self._commit_position()

    # ----------------------------------------------------------------------------------------------
    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def _commit_position(self) -> None:
        """Record the data position of the last completed step: an interruption while the next
        micro-batches are being read must not skip them on resume."""
        self._position = (
            self.epoch,
            self.batch_in_epoch,
            dict(self.skipped),
            dict(self.stream_progress),
            self.sample_offset,
        )

    def _state(self) -> dict:
        epoch, batch_in_epoch, skipped, progress, offset = self._position
        global_batch = self.accelerator.num_processes * self.recipe.data.batch_size
        return {
            "step": self.step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "epoch_samples": offset + batch_in_epoch * global_batch,
            "samples_seen": self.samples_seen,
            "skipped": skipped,
            "stream_progress": progress,
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss_fn.state_dict(),  # e.g. a MoCo key queue
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            # the data layout the position was counted in (resume may use another world size)
            "world_size": self.accelerator.num_processes,
            "batch_size": self.recipe.data.batch_size,
            # a cluster-aware sampler's per-epoch snapshot of the sample clusters
            "sampler": self.data.sampler.state_dict() if self.data.sampler is not None else None,
        }

    def save(self) -> Path | None:
        """Checkpoint the current step (main process writes; all processes wait for it)."""
        path = None
        self.accelerator.wait_for_everyone()
        state = self._state()
        if self.accelerator.num_processes > 1:
            state["rng_ranks"] = gather_object([state["rng"]])
            # Each rank knows its own readers' positions and skip counts; the checkpoint keeps all.
            ranks = gather_object([(state["stream_progress"], state["skipped"])])
            state["stream_progress"], skipped = {}, Counter()
            for progress, counts in ranks:
                for key, value in progress.items():
                    merge_positions(state["stream_progress"], {key: value})
                skipped.update(counts)
            state["skipped"] = dict(skipped)
        model = self.unwrapped
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            # sharded parameters: gather the full weights (every rank takes part) into a CPU copy
            model = _FullWeights(self.accelerator.get_state_dict(self.model))
        self._saving = True
        if self.accelerator.is_main_process:
            extra = {"ema": self.ema.module} if self.ema is not None else None
            path = save_checkpoint(self.run_dir, self.step, model, state, self.recipe.train.keep_checkpoints, extra)
        self.accelerator.wait_for_everyone()
        self._saving = False
        self._saved_step = self.step
        return path

    def resume(self, path: str | Path) -> None:
        path = Path(path)
        load_weights(path, self.unwrapped)
        state = load_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state.get("loss", {}))
        if state.get("sampler") is not None and self.data.sampler is not None:
            self.data.sampler.load_state_dict(state["sampler"])
        acc = self.accelerator
        ranks = state.get("rng_ranks")
        same_layout = state.get("world_size", 1) == acc.num_processes
        set_rng_state(ranks[acc.process_index] if ranks and same_layout else state["rng"])
        if self.ema is not None:
            if (path / "ema.safetensors").is_file():
                load_weights(path, self.ema.module, "ema.safetensors")
            else:
                acc.print(f"{path} has no ema.safetensors: the EMA starts from the loaded weights")
                self.ema.module.load_state_dict(self.unwrapped.state_dict())
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        # The data position in samples of the epoch's permutation; with another world size or
        # batch size the run continues at the same sample.
        saved_global = state.get("world_size", 1) * state.get("batch_size", self.recipe.data.batch_size)
        epoch_samples = state.get("epoch_samples", self.batch_in_epoch * saved_global)
        global_batch = acc.num_processes * self.recipe.data.batch_size
        if self.data.sampler is not None and saved_global != global_batch:
            self.sample_offset, self.batch_in_epoch = epoch_samples, 0
            acc.print(
                f"resuming with {acc.num_processes} processes x {self.recipe.data.batch_size} per process "
                f"(checkpoint: {saved_global} per step): continuing at sample {epoch_samples} of epoch {self.epoch}"
            )
        elif self.data.sampler is not None:
            self.sample_offset, self.batch_in_epoch = epoch_samples % global_batch, epoch_samples // global_batch
        self.samples_seen = state["samples_seen"]
        self.stream_progress = dict(state.get("stream_progress", {}))
        # Skip counts are checkpointed summed over ranks; rank 0 carries them on.
        self.skipped = Counter(state["skipped"]) if self.accelerator.is_main_process else Counter()
        self.accelerator.print(
            f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
        )

    def _record_samples(self, batches: list[dict]) -> None:
        """Append this step's sample ids, over all ranks, to RUN_DIR/samples.jsonl."""
        ids = [i for b in batches for i in b["index"].tolist()]
        if self.accelerator.num_processes > 1:
            ids = [i for part in gather_object([ids]) for i in part]
        if self.accelerator.is_main_process:
            with output_errors(self.run_dir, "samples.jsonl"), open(self.run_dir / "samples.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "epoch": self._position[0], "index": ids}) + "\n")

    def _truncate_sample_record(self) -> None:
        """After a resume, forget the steps recorded after the checkpoint (they are redone)."""
        path = self.run_dir / "samples.jsonl"
        if self.accelerator.is_main_process and path.is_file():
            keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= self.step]
            with output_errors(self.run_dir, "samples.jsonl"):
                write_atomic(path, "".join(line + "\n" for line in keep))

    def _log(self, values: dict) -> None:
        """``accelerator.log`` at the current step; a full disk under metrics.jsonl is one line."""
        with output_errors(self.run_dir, "the metrics"):
            self.accelerator.log(values, step=self.step)

    def global_skipped(self) -> Counter:
        """Skipped samples per reason over all ranks (a collective call: every rank must make it)."""
        if self.accelerator.num_processes == 1:
            return Counter(self.skipped)
        total = Counter()
        for counts in gather_object([dict(self.skipped)]):
            total.update(counts)
        return total

    def _model_line(self) -> str:
        m = self.recipe.model
        if not self.image_image:
            text = f"{self.text_config.model_type} ({self.text_config.num_hidden_layers} layers)"
            return f"vision {m.vision.name} + text {text}"
        towers = f"vision {m.vision.name}" + (f" + vision2 {m.vision2.name}" if m.vision2 else " (shared)")
        second = "paired images" if self.recipe.data.image2_key else "two augmented views"
        momentum = f", momentum key encoder m={m.momentum}" if m.momentum is not None else ""
        dense = " + dense head" if m.dense else ""
        return f"image-image on {second}: {towers}, head {m.head}{dense}{momentum}"

    def _summary(self) -> str:
        r, acc = self.recipe, self.accelerator
        n_params = sum(p.numel() for p in self.unwrapped.parameters())
        n_train = sum(p.numel() for p in self.unwrapped.parameters() if p.requires_grad)
        per_step = r.data.batch_size * acc.num_processes * r.train.accumulation_steps
        return "\n".join(
            [
                f"mmcl run {r.name!r} -> {self.run_dir}",
                f"  model: {self._model_line()}, embed_dim {r.model.embed_dim}",
                f"  parameters: {n_params / 1e6:.2f}M ({n_train / 1e6:.2f}M trainable)",
                f"  weights: {weights_summary(self.unwrapped)}",
                f"  data: {self.data.description}",
                f"  batch: {r.data.batch_size} per process x {acc.num_processes} processes "
                f"x {r.train.accumulation_steps} accumulated (GradCache) = {per_step} samples per step",
                f"  steps: {r.train.steps}"
                + (
                    f" (~{r.train.steps * per_step / self.data.num_samples:.1f} epochs)"
                    if self.data.num_samples
                    else ""
                )
                + f", loss {r.loss.name}",
                f"  device: {acc.device} ({acc.distributed_type.value}), precision {r.train.precision}",
            ]
        )

    # ----------------------------------------------------------------------------------------------
    def _batch_loss(self, batch: dict) -> torch.Tensor:
        """The loss of one batch: image-text (with any hard-negative captions in the same text pass)
        or image-image (two views, or two image modalities). Towers in autocast, loss in fp32."""
        with self.accelerator.autocast():
            if self.image_image:
                out = self.model(batch["images"], batch["images2"])
            else:
                out, text, negatives = image_text_forward(
                    self.model, batch, self.recipe.data.negatives_grad, self.unwrapped.encode_text
                )
        bias = out.logit_bias.float() if out.logit_bias is not None else None
        if self.image_image:
            inputs = {n: t.float() for n, t in loss_inputs(out).items()}
            try:
                return full_batch_loss(self.loss_fn, inputs, out.logit_scale.float(), bias, [batch])
            except ValueError as e:
                raise TrainingError(f"loss {self.recipe.loss.name}: {e}") from None
        extra = {} if negatives is None else {"text_negatives": negatives.float()}
        return call_cross_modal(
            self.loss_fn, out.image_embeds.float(), text.float(), out.logit_scale.float(), bias, **extra
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

    def _micro_batches(self):
        """Batches across epoch boundaries, from the saved data position onwards.

        Ranks stay in step: a batch is used only if every rank has one with >= 2 usable samples
        (the skipped samples of a dropped batch are still counted), and a stream's epoch ends on
        every rank as soon as one rank runs out (or after ``epoch_batches`` in resampled mode)."""
        acc, data = self.accelerator, self.data
        while True:
            fresh_epoch = self.batch_in_epoch == 0 and not self.stream_progress and not self.sample_offset
            if fresh_epoch and data.sampler is not None and data.sampler.needs_loss_clusters:
                # the epoch's order groups the clusters the loss last saw each sample in
                data.sampler.set_clusters(*self.loss_fn.sample_table())
            data.start_epoch(self.epoch, self.batch_in_epoch, self.stream_progress, self.sample_offset)
            batches, used = iter(self.loader), 0
            while True:
                if data.epoch_batches is not None and self.batch_in_epoch >= data.epoch_batches:
                    break
                batch = next(batches, None)
                flags = torch.tensor([batch is None, batch is not None and batch["size"] < 2], device=acc.device)
                if acc.num_processes > 1:
                    flags = acc.reduce(flags.float(), reduction="sum")
                if flags[0] > 0:
                    break
                self.batch_in_epoch += 1
                self.skipped.update(batch["skipped"])
                if "position" in batch:
                    merge_positions(self.stream_progress, batch["position"])
                if flags[1] == 0:
                    used += 1
                    batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    if self.recipe.train.channels_last:
                        for key in ("images", "images2"):
                            if key in batch:
                                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
                    yield batch
                elif batch["size"]:
                    # some rank's batch had < 2 usable samples: every rank drops its batch together
                    self.skipped["small_batch"] += batch["size"]
            if used == 0 and fresh_epoch:
                skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
                raise TrainingError(
                    f"epoch {self.epoch} gave no batch with 2 or more usable samples (skipped so far: {skipped}); "
                    "check data.train and its keys, or lower data.batch_size"
                )
            self.epoch, self.batch_in_epoch, self.stream_progress, self.sample_offset = self.epoch + 1, 0, {}, 0

    def run_eval(self) -> list[dict]:
        r = self.recipe
        if not r.eval.datasets:
            return []
        records = []
        if self.accelerator.is_main_process:
            # with an EMA of the weights, the EMA is what gets evaluated
            model = self.ema.module if self.ema is not None else self.unwrapped
            was_training = model.training
            model.eval()
            adapter = MmclAdapter(model, self.tokenize, self.eval_transform, self.accelerator.device)
            with self.accelerator.autocast() if r.train.precision != "fp32" else nullcontext():
                records = evaluate(adapter, r.eval, progress=self.progress)
            model.train(was_training)
            with output_errors(self.run_dir, "the evaluation results"):
                write_results(records, self.run_dir, self.step, r.name)
            flat = {
                f"eval/{rec['dataset']}/{rec['task']}/{k}": v
                for rec in records
                for k, v in rec["metrics"].items()
                if isinstance(v, (int, float))
            }
            self._log(flat)
        self.accelerator.wait_for_everyone()
        return records

    def fit(self) -> list[dict]:
        """Train to ``train.steps`` (or ``train.stop_at_step``), checkpointing and evaluating as the
        recipe says. Returns the final evaluation records.

        SIGINT (Ctrl-C) or SIGTERM while training stops at the end of the current step, with a
        checkpoint of that step (see :class:`_StopSignals`).

        Raises:
            Interrupted: stopped by SIGINT or SIGTERM; the message says what was saved.
            OutputError: the run folder cannot be written (a full disk, a read-only file system).
            TrainingError: the run cannot go on (e.g. the loss stayed non-finite).
        """
        t, acc = self.recipe.train, self.accelerator
        with _StopSignals(announce=acc.is_main_process) as signals:
            self._signals = signals
            try:
                self._train()
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
        if acc.is_main_process:
            with output_errors(self.run_dir, "summary.json"):
                write_atomic(
                    self.run_dir / "summary.json",
                    json.dumps(
                        {
                            "step": self.step,
                            "epoch": self.epoch,
                            "samples_seen": self.samples_seen,
                            "skipped": dict(sorted(skipped.items())),
                            "data": self.data.description,
                        },
                        indent=2,
                    )
                    + "\n",
                )
        records = []
        if self.step >= t.steps:
            records = self.run_eval()
            if records:
                acc.print(markdown_table(records))
                acc.print(f"results: {self.run_dir / 'results.json'} and {self.run_dir / 'results.md'}")
        acc.end_training()
        return records

    def _train(self) -> None:
        """Start-up (resume, run folder), the training loop, and the last checkpoint."""
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
        if t.record_samples:
            self._truncate_sample_record()
        if acc.is_main_process:
            save_run_metadata(self.run_dir, r, self.text_config, self.tokenizer)
        with output_errors(self.run_dir, "the metrics"):
            acc.init_trackers(r.name)
        acc.print(self._summary())

        first_step, stop = self.step, t.stop_at_step or t.steps
        bar = tqdm(total=stop, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        bad_in_row = 0
        self.model.train()
        try:
            self._commit_position()
            stream = self._stream = self._micro_batches()
            self._stop_if_asked(first_step)
            while self.step < stop:
                batches = [next(stream) for _ in range(t.accumulation_steps)]
                if not self.throughput.started:
                    self.throughput.first_batch(batches[0])
                    acc.print("  throughput: " + self.throughput.describe())
                loss = self._train_step(batches)
                if loss is None:
                    # No stop here: the data position is not committed, but the RNG has moved on.
                    bad_in_row += 1
                    log.warning(
                        "step %d: non-finite loss or gradient, step skipped (%d in a row)", self.step, bad_in_row
                    )
                    if bad_in_row >= t.max_bad_steps:
                        raise TrainingError(
                            f"loss or gradient was non-finite for {bad_in_row} steps in a row at step "
                            f"{self.step} (train.max_bad_steps={t.max_bad_steps}); lower train.lr, use "
                            "train.grad_clip, or check the data"
                        )
                    continue
                bad_in_row = 0
                self.step += 1
                self._commit_position()
                if t.record_samples:
                    self._record_samples(batches)
                n = sum(b["size"] for b in batches) * acc.num_processes
                self.samples_seen += n
                self.throughput.add(n)
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == stop:
                    skipped = self.global_skipped()
                    speed = self.throughput.report()
                    postfix = {"loss": f"{loss:.4f}", "samples_per_s": f"{speed['train/samples_per_s']:.0f}"}
                    if "train/mfu" in speed:
                        postfix["mfu"] = f"{speed['train/mfu']:.1%}"
                    bar.set_postfix(**postfix)
                    stats = self.loss_fn.stats_group
                    self._log(
                        {
                            "train/loss": loss,
                            "train/lr": self.scheduler.get_last_lr()[0],
                            "train/logit_scale": self.unwrapped.logit_scale.exp().item(),
                            **speed,
                            "train/epoch": self.epoch,
                            # cluster health of cluster-guided losses (e.g. image-caption agreement),
                            # DenseCL's two terms
                            **{f"{stats}/{k}": v for k, v in self.loss_fn.last_stats.items()},
                            **{f"data/skipped_{k}": v for k, v in skipped.items()},
                        },
                    )
                if self.step % t.checkpoint_every == 0 and self.step < stop:
                    self.save()
                if r.eval.every and self.step % r.eval.every == 0 and self.step < t.steps:
                    self.run_eval()
                if self.step < stop:
                    self._stop_if_asked(first_step)
        finally:
            bar.close()
        self.save()
        # asked during the last step or its save: saved; the final evaluation is left to the resume
        self._stop_if_asked(first_step)

    def _stop_signal(self) -> int | None:
        """The signal that asked to stop, on any rank, or None; every rank gets the same answer (a
        collective call: every rank makes it at the same step)."""
        signum = self._signals.signum if self._signals is not None else None
        acc = self.accelerator
        if acc.num_processes > 1:
            # one small all-gather per step; the largest number wins, so every rank agrees
            asked = acc.gather(torch.tensor([signum or 0], device=acc.device))
            signum = int(asked.max().item()) or None
        return signum

    def _stop_if_asked(self, first_step: int) -> None:
        """At a step boundary: if a signal asked to stop, save this step (all ranks together) and
        raise :class:`Interrupted`."""
        signum = self._stop_signal()
        if signum is None:
            return
        how = _SIGNAL_NAMES.get(signum, f"signal {signum}")
        if self._saved_step != self.step and self.step == first_step:
            # not one step done since the start: the checkpoint (if any) already holds this state
            latest = latest_checkpoint(self.run_dir)
            where = f"the latest checkpoint is {latest}" if latest is not None else "no checkpoint was saved"
            raise Interrupted(f"stopped by {how} before the first step: {where}; {RESUME_HINT}", signum)
        if self._saved_step != self.step:
            self.save()
        raise Interrupted(
            f"stopped by {how} after step {self.step}: saved {checkpoint_path(self.run_dir, self.step)}; "
            + RESUME_HINT,
            signum,
        )

    def _interrupted_again(self) -> Interrupted:
        """The error for a KeyboardInterrupt inside the loop (a second Ctrl-C): nothing was saved of
        the step under way; say which checkpoint the run continues from."""
        latest = latest_checkpoint(self.run_dir)
        if self._saving and latest is not None and latest == checkpoint_path(self.run_dir, self.step):
            # the interrupt came after the new checkpoint was complete
            return Interrupted(f"interrupted again after the save was complete: saved {latest}", signal.SIGINT)
        again = "interrupted again" if self._signals is not None and self._signals.signum else "interrupted"
        when = "during the save" if self._saving else f"during step {self.step + 1}"
        if latest is None:
            return Interrupted(f"{again} {when}: no checkpoint was saved; the run starts over", signal.SIGINT)
        return Interrupted(f"{again} {when}: the previous checkpoint {latest} is intact; {RESUME_HINT}", signal.SIGINT)
