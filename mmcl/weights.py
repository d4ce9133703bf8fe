"""Reading weight and state files safely, with one-line refusals.

mmcl reads ``.safetensors`` with safetensors only, and every other torch file with
``torch.load(weights_only=True)``: nothing a file holds can run code. What is refused, and why, is
said in one line naming the file (:class:`~mmcl.errors.UnsafeFileError`), never as a traceback.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .errors import ConfigError, UnsafeFileError

# the first bytes of a torch.save zip archive and of a raw pickle (protocol 2+)
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def _unpickler_reason(message: str) -> str:
    """The useful sentence of torch's weights-only refusal (the rest is the same advice every time)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(("Trying to load unsupported", "Unsupported")):
            return line[:160]
    return "not plain tensors"


def _looks_like_torch_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(_ZIP_MAGIC) or head[:1] == _PICKLE_MAGIC


def _refuse_safetensors(path: Path, e: BaseException) -> UnsafeFileError:
    if _looks_like_torch_pickle(path):
        return UnsafeFileError(
            f"{path}: refused: named .safetensors but it is a torch pickle; mmcl reads .safetensors files with "
            "safetensors only and never unpickles them (re-save it with safetensors.torch.save_file)"
        )
    return UnsafeFileError(f"{path}: not a readable safetensors file ({_first_line(e)})")


def _is_safetensors_error(e: BaseException) -> bool:
    return type(e).__name__ == "SafetensorError" or isinstance(e, (EOFError,))


def load_torch_file(path: str | os.PathLike, what: str = "weights file") -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU; a refusal is one line naming the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        raise UnsafeFileError(
            f"{path}: refused: this {what} holds pickled Python objects, not only tensors ({reason}); mmcl never "
            "unpickles code (torch files load with weights_only=True). If you trust the file, load it yourself "
            "and re-save its tensors with safetensors.torch.save_file"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UnsafeFileError(f"{path}: not a readable torch {what} ({_first_line(e)[:200]})") from None


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file; a file that is not one is refused in one line."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every bad file
        if _is_safetensors_error(e) or isinstance(e, (OSError, ValueError)):
            raise _refuse_safetensors(path, e) from None
        raise


def load_state_file(path: str | os.PathLike, what: str = "weights file") -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` (safetensors) or any other torch file (``weights_only``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    return load_torch_file(path, what)


def key_mismatch_message(source: str, missing: list[str], unexpected: list[str], expected: list[str]) -> str:
    """One line naming a few missing and unexpected keys and the naming the model expects."""

    def few(keys: list[str]) -> str:
        shown = ", ".join(keys[:3])
        return f"{len(keys)} ({shown}{', ...' if len(keys) > 3 else ''})" if keys else "0"

    return (
        f"{source}: its tensor names do not match the model: missing {few(missing)}, unexpected {few(unexpected)}; "
        f"the model expects names like {', '.join(expected[:3])}"
    )


def load_safetensors_into(model: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Copy a ``.safetensors`` file into ``model``; with ``strict`` every tensor must match.

    safetensors' own ``load_model`` is used because it restores tensors that ``save_model`` stored
    once for several names (tied weights)."""
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as e:  # shapes differ: torch lists every tensor over many lines
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise ConfigError(
            f"{path}: {len(lines) or 'some'} tensors have other shapes than the model's"
            + (f", e.g. {lines[0].removeprefix('size mismatch for ')}" if lines else f" ({_first_line(e)[:200]})")
        ) from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every bad file
        if _is_safetensors_error(e) or isinstance(e, (OSError, ValueError)):
            raise _refuse_safetensors(path, e) from None
        raise
    if strict and (missing or unexpected):
        expected = list(model.state_dict())
        raise ConfigError(key_mismatch_message(str(path), sorted(missing), sorted(unexpected), expected))
