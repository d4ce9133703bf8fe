"""Writing step-level checkpoints atomically (their layout, and reading them back without
executing pickled code: :mod:`mmcl.models.run_folder`).

A checkpoint is written to a temporary folder (``.tmp-step-0000100-PID``) and renamed into place,
then ``latest`` (a text file naming it) is replaced atomically. A crash at any moment leaves the
previous checkpoint intact; a save that fails (a full disk) or is interrupted removes its temporary
folder, and :func:`remove_stale_saves` removes those of writers that died.

Writes in the run folder that fail for lack of room or permission raise :class:`OutputError` with a
one-line message naming the folder, its free space and what to do (see :func:`output_errors`).
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_model

from ..errors import OutputError
from ..models.adapters import save_adapters
from ..models.run_folder import (  # the layout and its readers live with the model loaders
    CHECKPOINT_DIR,
    PREFIX,
    _latest_name,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
)

__all__ = [
    "CHECKPOINT_DIR",
    "OPTIMIZER_DIR",
    "check_writable",
    "checkpoint_path",
    "free_space",
    "latest_checkpoint",
    "list_checkpoints",
    "load_state",
    "load_weights",
    "output_errors",
    "discard_staged",
    "remove_stale_saves",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "stage_checkpoint",
    "write_atomic",
    "write_error",
]

# a sharded run's optimizer state, one file per rank (torch.distributed.checkpoint), in a checkpoint folder
OPTIMIZER_DIR = "optimizer"
# what torch.save says when a write stops short (it does not keep the OS error)
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
# leftovers of unfinished saves: .tmp-step-N-PID (being written), .old-step-N-PID (a re-saved step's
# previous copy, moved aside for a moment), .latest.PID.tmp (the pointer being replaced)
_LEFTOVER = re.compile(r"^\.(tmp|old)-(step-\d+)-(\d+)$|^\.latest\.(\d+)\.tmp$")


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step; a failed write leaves the old file and no temporary one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_space(path: str | os.PathLike) -> str:
    """``"3.2 MB free of 1.0 GB"`` for the file system that holds ``path`` (or would: its nearest
    existing folder)."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder.parent != folder:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{_human(usage.free)} free of {_human(usage.total)}"


def _file_in_the_way(folder: Path) -> Path | None:
    """The file (not a folder) at ``folder`` or at one of its parents, if any."""
    for p in (folder, *folder.parents):
        if p.is_dir():
            return None
        if p.exists():
            return p
    return None


def _write_failure(error: BaseException) -> tuple[str, int | None] | None:
    """``(reason, errno)`` when ``error`` is a failed write, as the OS, torch.save or safetensors
    report one; None for anything else (a bug must keep its traceback)."""
    if isinstance(error, OSError):
        return error.strerror or str(error), error.errno
    text = str(error).strip()
    if type(error).__name__ == "SafetensorError":
        code = re.search(r"os error (\d+)|code: (\d+)", text)
        if code:
            number = int(code.group(1) or code.group(2))
            return os.strerror(number), number
        return (text.splitlines()[0], None) if "IoError" in text or "No space" in text else None
    if isinstance(error, RuntimeError) and any(s in text for s in _TORCH_WRITE_FAILURES):
        detail = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", text.splitlines()[0])
        return f"torch.save stopped short: {detail}", None
    return None


def write_error(error: BaseException, folder: str | os.PathLike, what: str) -> OutputError | None:
    """A one-line :class:`OutputError` for ``error`` raised while writing ``what`` in ``folder``,
    or None when ``error`` is not a failed write."""
    failure = _write_failure(error)
    if failure is None:
        return None
    reason, number = failure
    folder = Path(folder)
    blocker = _file_in_the_way(folder)
    if blocker is not None or number in (errno.ENOTDIR, errno.EEXIST):
        blocker = blocker or Path(getattr(error, "filename", None) or folder)
        return OutputError(
            f"cannot write {what}: {blocker} is a file, not a folder, so {folder} cannot be created there; "
            "choose another train.output_dir"
        )
    if number == errno.EROFS:
        advice = "the file system is read-only; choose another train.output_dir"
    elif number in (errno.EACCES, errno.EPERM):
        advice = "no permission to write there; choose another train.output_dir or change its permissions"
    else:
        advice = "free some space there or choose another train.output_dir"
    return OutputError(f"cannot write {what} in {folder}: {reason} ({free_space(folder)}); {advice}")


@contextmanager
def output_errors(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a failed write of ``what`` in ``folder`` into a one-line :class:`OutputError` (a full
    disk, a read-only file system, a path below a file); other errors pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as e:
        error = write_error(e, folder, what)
        if error is None:
            raise
        raise error from e


def check_writable(run_dir: str | os.PathLike) -> None:
    """Create ``RUN_DIR/checkpoints`` and write and remove a small file in it, so that an output
    folder that cannot be written fails in one line before any compute, not at the first checkpoint.

    Raises:
        OutputError: the folder cannot be created or written; the message says why and what to do.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    probe = root / f".write-probe-{os.getpid()}"
    with output_errors(run_dir, "the run folder"):
        try:
            root.mkdir(parents=True, exist_ok=True)
            # a few bytes, not an empty file: a full disk may still have room for one more inode
            probe.write_bytes(b"mmcl write probe\n")
        finally:
            if probe.is_file():
                probe.unlink()


def _writer_alive(pid: int, path: Path) -> bool:
    """Whether process ``pid``, the writer named in the leftover ``path``, still runs here. A zombie
    (dead, not yet reaped) does not; nor does a process that started after ``path`` was last changed:
    the pid was reused (in containers pids repeat from one run to the next)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "PID (command) STATE ... STARTTIME(22nd) ..."; the command may hold ") "
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line[:6] == "btime "
        )
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return started <= path.stat().st_mtime + 2  # slack: the boot time is in whole seconds
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # not Linux, or it just ended: keep the folder, to be safe


def remove_stale_saves(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what unfinished saves of earlier processes left in ``RUN_DIR/checkpoints`` (their
    temporary folders hold up to a whole checkpoint each) and return the removed paths.

    Leftovers of a process that still runs here are kept: that writer may be saving right now. A
    checkpoint that a re-save had moved aside (``.old-step-N-PID``) is put back when ``step-N`` is
    missing. Call it before this process saves (a run's only writer is its main process)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.iterdir()):
        match = _LEFTOVER.match(path.name)
        if match is None:
            continue
        kind, name, pid = match.group(1), match.group(2), int(match.group(3) or match.group(4))
        if pid != os.getpid() and _writer_alive(pid, path):
            continue
        if kind == "old" and not (root / name).exists():
            os.rename(path, root / name)
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _staging_path(run_dir: str | os.PathLike, step: int) -> Path:
    final = checkpoint_path(run_dir, step)
    return final.parent / f".tmp-{final.name}-{os.getpid()}"


def stage_checkpoint(run_dir: str | os.PathLike, step: int) -> Path:
    """Create (empty) the folder this process writes the checkpoint of ``step`` into before it is
    renamed into place, for other ranks to write their shards in first (:func:`save_checkpoint`
    with ``staged``). :func:`discard_staged` removes it if the save fails."""
    tmp = _staging_path(run_dir, step)
    with output_errors(tmp.parent, f"checkpoint {checkpoint_path(run_dir, step).name}"):
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    return tmp


def discard_staged(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of ``step`` is (or would be) saved."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{PREFIX}{step:07d}"


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    state: dict,
    keep: int,
    extra_models: dict[str, torch.nn.Module] | None = None,
    staged: Path | None = None,
) -> Path:
    """Write ``model`` weights and ``state`` (tensors and plain containers) for ``step``, plus
    ``NAME.safetensors`` for each of ``extra_models`` (e.g. the EMA weights); keep the newest
    ``keep`` checkpoints. Returns the checkpoint folder.

    A save that fails or is interrupted (even by KeyboardInterrupt) removes what it wrote and leaves
    ``latest`` naming the previous checkpoint. ``staged``: the folder of :func:`stage_checkpoint`,
    already holding what other ranks wrote (a sharded optimizer state); it is completed and renamed.

    Raises:
        OutputError: the checkpoint could not be written (a full disk, a read-only file system).
    """
    final = checkpoint_path(run_dir, step)
    root = final.parent
    tmp = staged if staged is not None else _staging_path(run_dir, step)
    aside = root / f".old-{final.name}-{os.getpid()}"
    renamed = False
    with output_errors(root, f"checkpoint {final.name}"):
        try:
            if staged is None:
                root.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
            save_model(model, str(tmp / "model.safetensors"))
            save_adapters(model, tmp)  # LoRA/DoRA runs: the adapters alone too, in peft's format
            for name, extra in (extra_models or {}).items():
                save_model(extra, str(tmp / f"{name}.safetensors"))
            torch.save(state, tmp / "state.pt")
            for f in tmp.rglob("*"):  # the files of the sharded optimizer state too
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            if final.exists():  # re-saving the same step (e.g. after a resume): move the old copy aside
                os.rename(final, aside)
            os.rename(tmp, final)
            renamed = True
            _fsync_dir(root)
            write_atomic(root / "latest", final.name + "\n")
        except BaseException:
            # On a full disk a partial folder would hold the room the next save needs.
            shutil.rmtree(tmp, ignore_errors=True)
            if renamed and _latest_name(root) != final.name:  # the pointer still names the previous one
                shutil.rmtree(final, ignore_errors=True)
            if aside.exists():
                if final.exists():
                    shutil.rmtree(aside, ignore_errors=True)
                else:
                    os.rename(aside, final)
            raise
    shutil.rmtree(aside, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final
