"""Signals while training: SIGINT (Ctrl-C) and SIGTERM stop the loop at a step boundary, and data
loader workers leave them to the training process (:class:`StopSignals`, :class:`WorkerSignals`)."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

from ..errors import Interrupted
from ..models.run_folder import latest_checkpoint
from .checkpoint import checkpoint_path

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
RESUME_HINT = "continue with: mmcl train RECIPE train.resume=latest (the same recipe and overrides)"


class StopSignals:
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

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
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
                    f"\nmmcl: {SIGNAL_NAMES[signum]}: stopping after the current step and saving a checkpoint "
                    "(Ctrl-C again to stop at once without saving)\n".encode(),
                )
            return
        if signum == signal.SIGINT:
            if self._forwarded and time.monotonic() - self._first_at < self.FORWARD_WINDOW:
                return
            raise KeyboardInterrupt


class WorkerSignals:
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


def _stop_signal(trainer) -> int | None:
    """The signal that asked to stop, on any rank, or None; every rank gets the same answer (a
    collective call: every rank makes it at the same step)."""
    signum = trainer._signals.signum if trainer._signals is not None else None
    acc = trainer.accelerator
    if acc.num_processes > 1:
        # one small all-gather per step; the largest number wins, so every rank agrees
        asked = acc.gather(torch.tensor([signum or 0], device=acc.device))
        signum = int(asked.max().item()) or None
    return signum


def stop_if_asked(trainer, first_step: int) -> None:
    """At a step boundary: if a signal asked to stop, save this step (all ranks together) and
    raise :class:`Interrupted`."""
    signum = _stop_signal(trainer)
    if signum is None:
        return
    how = SIGNAL_NAMES.get(signum, f"signal {signum}")
    if trainer._saved_step != trainer.step and trainer.step == first_step:
        # not one step done since the start: the checkpoint (if any) already holds this state
        latest = latest_checkpoint(trainer.run_dir)
        where = f"the latest checkpoint is {latest}" if latest is not None else "no checkpoint was saved"
        raise Interrupted(f"stopped by {how} before the first step: {where}; {RESUME_HINT}", signum)
    if trainer._saved_step != trainer.step:
        trainer.save()
    saved = checkpoint_path(trainer.run_dir, trainer.step)
    raise Interrupted(f"stopped by {how} after step {trainer.step}: saved {saved}; {RESUME_HINT}", signum)


def interrupted_again(trainer) -> Interrupted:
    """The error for a KeyboardInterrupt inside the loop (a second Ctrl-C): nothing was saved of
    the step under way; say which checkpoint the run continues from."""
    latest = latest_checkpoint(trainer.run_dir)
    if trainer._saving and latest is not None and latest == checkpoint_path(trainer.run_dir, trainer.step):
        # the interrupt came after the new checkpoint was complete
        return Interrupted(f"interrupted again after the save was complete: saved {latest}", signal.SIGINT)
    again = "interrupted again" if trainer._signals is not None and trainer._signals.signum else "interrupted"
    when = "during the save" if trainer._saving else f"during step {trainer.step + 1}"
    if latest is None:
        return Interrupted(f"{again} {when}: no checkpoint was saved; the run starts over", signal.SIGINT)
    return Interrupted(f"{again} {when}: the previous checkpoint {latest} is intact; {RESUME_HINT}", signal.SIGINT)
