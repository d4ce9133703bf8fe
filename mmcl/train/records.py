"""What a run writes besides checkpoints and metrics: the per-step sample record
(``samples.jsonl``), the start-up summary, and ``summary.json`` at the end."""

from __future__ import annotations

import json
from collections import Counter

from accelerate.utils import gather_object

from ..models.backends import get_backend
from ..models.factory import weights_summary
from .checkpoint import output_errors, write_atomic
from .sharding import is_sharded


def global_skipped(acc, skipped: Counter) -> Counter:
    """Skipped samples per reason over all ranks (a collective call: every rank must make it)."""
    if acc.num_processes == 1:
        return Counter(skipped)
    total = Counter()
    for counts in gather_object([dict(skipped)]):
        total.update(counts)
    return total


def record_samples(trainer, batches: list[dict]) -> None:
    """Append this step's sample ids, over all ranks, to RUN_DIR/samples.jsonl."""
    acc = trainer.accelerator
    ids = [i for b in batches for i in b["index"].tolist()]
    if acc.num_processes > 1:
        ids = [i for part in gather_object([ids]) for i in part]
    if acc.is_main_process:
        path = trainer.run_dir / "samples.jsonl"
        with output_errors(trainer.run_dir, "samples.jsonl"), open(path, "a") as f:
            f.write(json.dumps({"step": trainer.step, "epoch": trainer.position.committed[0], "index": ids}) + "\n")


def truncate_jsonl(trainer, name: str) -> None:
    """After a resume, forget the lines of steps after the checkpoint in RUN_DIR/``name`` (they are
    redone), so a resumed run's record reads as an uninterrupted one's."""
    path = trainer.run_dir / name
    if trainer.accelerator.is_main_process and path.is_file():
        lines = path.read_text().splitlines()
        keep = [line for line in lines if line.strip() and (json.loads(line).get("step") or 0) <= trainer.step]
        with output_errors(trainer.run_dir, name):
            write_atomic(path, "".join(line + "\n" for line in keep))


def write_summary(trainer, skipped: Counter) -> None:
    """RUN_DIR/summary.json: where the run ended and what it skipped."""
    if not trainer.accelerator.is_main_process:
        return
    summary = {
        "step": trainer.step,
        "epoch": trainer.position.epoch,
        "samples_seen": trainer.samples_seen,
        "skipped": dict(sorted(skipped.items())),
        "data": trainer.data.description,
    }
    with output_errors(trainer.run_dir, "summary.json"):
        write_atomic(trainer.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _model_line(trainer) -> str:
    r = trainer.recipe
    m = r.model
    backend = get_backend(m)
    if backend.wraps_library:
        return backend.describe(trainer.unwrapped)
    if not trainer.image_image:
        text = f"{trainer.text_config.model_type} ({trainer.text_config.num_hidden_layers} layers)"
        return f"vision {m.vision.name} + text {text}"
    towers = f"vision {m.vision.name}" + (f" + vision2 {m.vision2.name}" if m.vision2 else " (shared)")
    second = "paired images" if r.data.image2_key else "two augmented views"
    momentum = f", momentum key encoder m={m.momentum}" if m.momentum is not None else ""
    dense = " + dense head" if m.dense else ""
    return f"image-image on {second}: {towers}, head {m.head}{dense}{momentum}"


def startup_summary(trainer) -> str:
    """The lines printed before training: model, parameters, weights, data, batch, steps, device."""
    r, acc, model = trainer.recipe, trainer.accelerator, trainer.unwrapped
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_step = r.data.batch_size * acc.num_processes * r.train.accumulation_steps
    epochs = f" (~{r.train.steps * per_step / trainer.data.num_samples:.1f} epochs)" if trainer.data.num_samples else ""
    # a library's model (open_clip, Hugging Face) has its own embedding size; model.embed_dim is not used
    dim = "" if get_backend(r.model).wraps_library else f", embed_dim {r.model.embed_dim}"
    return "\n".join(
        [
            f"mmcl run {r.name!r} -> {trainer.run_dir}",
            f"  model: {_model_line(trainer)}{dim}",
            f"  parameters: {n_params / 1e6:.2f}M ({n_train / 1e6:.2f}M trainable)",
            f"  weights: {weights_summary(model)}",
            f"  data: {trainer.data.description}",
            f"  batch: {r.data.batch_size} per process x {acc.num_processes} processes "
            f"x {r.train.accumulation_steps} accumulated (GradCache) = {per_step} samples per step",
            f"  steps: {r.train.steps}{epochs}, loss {r.loss.name}",
            f"  device: {acc.device} ({acc.distributed_type.value}"
            f"{', sharded with FSDP2' if is_sharded(trainer.model) else ''}), precision {r.train.precision}",
        ]
    )
