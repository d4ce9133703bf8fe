"""Step-level checkpoints: written atomically, loaded without executing pickled code.

Layout of ``RUN_DIR/checkpoints/step-0000100/``:
    model.safetensors   model weights
    ema.safetensors     the EMA of the weights (with train.ema_decay)
    state.pt            optimizer, scheduler, RNG states, step and data position
                        (plain tensors and containers only: loaded with ``weights_only=True``)

A checkpoint is written to a temporary folder and renamed into place, then ``latest`` (a text
file naming it) is replaced atomically. A crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_model

from ..weights import load_safetensors_into, load_torch_file

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step-"


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    state: dict,
    keep: int,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Write ``model`` weights and ``state`` (tensors and plain containers) for ``step``, plus
    ``NAME.safetensors`` for each of ``extra_models`` (e.g. the EMA weights); keep the newest
    ``keep`` checkpoints. Returns the checkpoint folder."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    for name, extra in (extra_models or {}).items():
        save_model(extra, str(tmp / f"{name}.safetensors"))
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    write_atomic(root / "latest", final.name + "\n")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "model.safetensors").is_file() and (p / "state.pt").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "model.safetensors").is_file() and (candidate / "state.pt").is_file():
            return candidate
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_weights(path: str | os.PathLike, model: torch.nn.Module, name: str = "model.safetensors") -> None:
    """Load ``name`` from a checkpoint folder into ``model`` (strict; a bad file is refused in one line)."""
    load_safetensors_into(model, Path(path) / name, strict=True)


def load_state(path: str | os.PathLike) -> dict:
    """The checkpoint's ``state.pt``, read with ``weights_only=True`` (a pickle with code is refused)."""
    return load_torch_file(Path(path) / "state.pt", "checkpoint state")
