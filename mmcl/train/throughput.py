"""Throughput and model FLOP utilisation (MFU) for the training log.

MFU = achieved model FLOP/s per device / the device's peak FLOP/s. Model FLOPs are counted once,
with ``torch.utils.flop_counter``, for a forward and backward pass of the trainable model on a
small batch (in eval mode, so no RNG is drawn and no statistics move), then scaled per sample.
The peak is ``train.peak_flops`` when set; on CPU a GEMM measured at start-up; on a known GPU its
dense spec value for the run's precision.
"""

from __future__ import annotations

import logging
import time

import torch

from .sharding import is_sharded

log = logging.getLogger("mmcl")

# Dense (no sparsity) peak FLOP/s from the vendors' data sheets: (bf16/fp16 tensor, tf32 tensor, fp32).
GPU_PEAKS = {
    "H200": (989e12, 494e12, 67e12),
    "H100": (989e12, 494e12, 67e12),  # SXM; PCIe is lower (756e12 bf16)
    "A100": (312e12, 156e12, 19.5e12),
}


def measure_cpu_peak(n: int = 2048, repeats: int = 3) -> float:
    """fp32 GEMM FLOP/s of this process's threads (best of ``repeats``)."""
    g = torch.Generator().manual_seed(0)  # its own generator: training's RNG streams stay untouched
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s per device, where the number comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, tf32, fp32) in GPU_PEAKS.items():
            if key in name:
                if precision in ("bf16", "fp16"):
                    return half, f"{key} {precision} spec"
                if torch.backends.cuda.matmul.allow_tf32:
                    return tf32, f"{key} tf32 spec"
                return fp32, f"{key} fp32 spec"
        return None, f"unknown GPU {name!r} (set train.peak_flops)"
    return measure_cpu_peak(), "measured fp32 GEMM"


def count_flops_per_sample(model, batch: dict, n: int = 2) -> float | None:
    """Forward + backward FLOPs of ``model`` per sample, from the first ``n`` samples of ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    # .forward, not __call__: a model compiled in place is counted eagerly; a sharded model gathers
    # its weights in hooks of __call__ (on every process) and gets gradients through backward only
    sharded = is_sharded(model)
    forward = model if sharded else model.forward
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            if "input_ids" in batch:
                out = forward(batch["images"][:n], batch["input_ids"][:n], batch["attention_mask"][:n])
                total = out.image_embeds.float().sum() + out.text_embeds.float().sum()
            else:  # image-image: two views or two image modalities
                out = forward(batch["images"][:n], batch["images2"][:n])
                total = out.embeds.float().sum() + out.embeds2.float().sum()
            if sharded:
                total.backward()
                model.zero_grad(set_to_none=True)
            else:
                torch.autograd.grad(total, params, allow_unused=True)
        return counter.get_total_flops() / n
    except Exception as e:  # counting is a report, never a reason to stop training
        log.warning("could not count model FLOPs (%s); MFU will not be logged", e)
        return None
    finally:
        model.train(was_training)


class Throughput:
    """Samples/s and MFU over the window since the last report."""

    def __init__(self, model, accelerator, train_cfg):
        self.model, self.acc, self.cfg = model, accelerator, train_cfg
        self.flops_per_sample: float | None = None
        self.peak: float | None = None
        self.peak_source = ""
        self.samples, self.start = 0, time.perf_counter()
        self.started = False

    def first_batch(self, batch: dict) -> None:
        """Count FLOPs and find the peak (main process), then start the clock."""
        self.started = True
        if self.acc.is_main_process or is_sharded(self.model):  # a sharded forward takes every process
            self.flops_per_sample = count_flops_per_sample(self.model, batch)
        if self.acc.is_main_process:
            if self.cfg.peak_flops:
                self.peak, self.peak_source = self.cfg.peak_flops, "train.peak_flops"
            else:
                self.peak, self.peak_source = device_peak(self.acc.device, self.cfg.precision)
        self.samples, self.start = 0, time.perf_counter()

    def add(self, samples: int) -> None:
        self.samples += samples

    def report(self) -> dict:
        """{"train/samples_per_s", "train/tflops_per_device", "train/mfu"} for the window; resets it."""
        elapsed = max(1e-9, time.perf_counter() - self.start)
        rate = self.samples / elapsed
        out = {"train/samples_per_s": rate}
        if self.flops_per_sample:
            per_device = self.flops_per_sample * rate / self.acc.num_processes
            out["train/tflops_per_device"] = per_device / 1e12
            if self.peak:
                out["train/mfu"] = per_device / self.peak
        self.samples, self.start = 0, time.perf_counter()
        return out

    def describe(self) -> str:
        if not self.flops_per_sample:
            return "model FLOPs not counted"
        peak = f"{self.peak / 1e12:.3g} TFLOP/s ({self.peak_source})" if self.peak else self.peak_source
        return f"{self.flops_per_sample / 1e9:.3g} GFLOP per sample (forward + backward); peak {peak}"
