"""A full disk, a read-only file system or an output path below a file: one line (``mmcl: error:
...``, exit code 2) naming the folder, its free space and what to do; a failed save leaves no
partial checkpoint, and the previous checkpoint stays the latest."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError

import mmcl
from mmcl.errors import OutputError
from mmcl.recipe import recipe_from_dict
from mmcl.train import checkpoint, latest_checkpoint
from mmcl.train.checkpoint import load_state, load_weights, remove_stale_saves, save_checkpoint, write_error

from ..conftest import tiny_recipe_dict

# what torch.save raised when the disk filled up mid-write
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 8451072 vs 8450960"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def recipe(corpus, out, **train) -> dict:
    data = tiny_recipe_dict(corpus, out, **{"peak_flops": 1e12, **train})
    data["eval"]["datasets"] = []
    return data


def no_leftovers(out: Path) -> None:
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message


def fail_at(monkeypatch, module, name: str, error: BaseException, when) -> None:
    """``module.name`` writes part of its file, then raises ``error``, while ``when()`` holds."""
    original = getattr(module, name)

    def wrapper(obj, path, *args, **kwargs):
        if not when():
            return original(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"\0" * 1000)
        raise error

    monkeypatch.setattr(module, name, wrapper)


FAILURES = {
    "ENOSPC": ("torch", "save", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    "torch unexpected pos": ("torch", "save", RuntimeError(TORCH_FULL), "torch.save stopped short: unexpected pos"),
    "SafetensorError": ("module", "save_model", SafetensorError(SAFETENSORS_FULL), "No space left on device"),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, kind):
    where, name, error, reason = FAILURES[kind]
    model = torch.nn.Linear(4, 3)
    state = {"step": 2, "optimizer": {"x": torch.ones(3)}}
    save_checkpoint(tmp_path, 2, model, state, keep=3)
    failing = [True]
    fail_at(monkeypatch, checkpoint.torch if where == "torch" else checkpoint, name, error, lambda: failing)
    with pytest.raises(OutputError) as info:
        save_checkpoint(tmp_path, 4, model, {**state, "step": 4}, keep=3)
    message = str(info.value)
    one_line(message)
    assert message.startswith(f"cannot write checkpoint step-0000004 in {tmp_path / 'checkpoints'}: {reason}")
    assert "free of" in message and "train.output_dir" in message
    no_leftovers(tmp_path)
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step-0000002" and (tmp_path / "checkpoints" / "latest").read_text() == "step-0000002\n"
    assert load_state(latest)["step"] == 2
    load_weights(latest, torch.nn.Linear(4, 3))
    failing.clear()  # room again: the same step saves
    assert save_checkpoint(tmp_path, 4, model, state, keep=3) == tmp_path / "checkpoints" / "step-0000004"


def test_pointer_that_cannot_be_replaced_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The new checkpoint is complete but ``latest`` cannot be rewritten (no room for even that):
    the new folder goes too, so the disk holds what it held before."""
    model = torch.nn.Linear(4, 3)
    save_checkpoint(tmp_path, 2, model, {"step": 2}, keep=3)

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "write_atomic", full)
    with pytest.raises(OutputError, match="No space left on device"):
        save_checkpoint(tmp_path, 4, model, {"step": 4}, keep=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-0000002"]
    with pytest.raises(OutputError):  # re-saving step 2 itself: the copy already there stays
        save_checkpoint(tmp_path, 2, model, {"step": 2}, keep=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-0000002"]
    assert load_state(latest_checkpoint(tmp_path))["step"] == 2


def test_full_disk_during_training_is_one_error(tiny_corpus, tmp_path, monkeypatch):
    """Through the trainer: the save of step 4 fails; step 2 stays the checkpoint to resume from."""
    out = tmp_path / "run"
    trainer = mmcl.Trainer(recipe_from_dict(recipe(tiny_corpus, out)))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fail_at(monkeypatch, checkpoint.torch, "save", full, lambda: trainer.step == 4)
    with pytest.raises(OutputError, match=r"^cannot write checkpoint step-0000004 .*No space left on device") as info:
        trainer.fit()
    one_line(str(info.value))
    no_leftovers(out)
    assert latest_checkpoint(out).name == "step-0000002"


def test_write_error_messages(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    error = write_error(NotADirectoryError(errno.ENOTDIR, "Not a directory"), blocker / "run", "the run folder")
    assert str(error) == (
        f"cannot write the run folder: {blocker} is a file, not a folder, so {blocker / 'run'} cannot be "
        "created there; choose another train.output_dir"
    )
    error = write_error(OSError(errno.EROFS, "Read-only file system"), tmp_path, "the metrics")
    assert re.fullmatch(
        rf"cannot write the metrics in {re.escape(str(tmp_path))}: Read-only file system "
        r"\([0-9.]+ [KMGT]?B free of [0-9.]+ [KMGT]?B\); the file system is read-only; choose another train.output_dir",
        str(error),
    ), str(error)
    assert write_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), tmp_path, "x") is None
    assert write_error(ValueError("bad"), tmp_path, "x") is None
    assert write_error(SafetensorError("invalid header"), tmp_path, "x") is None


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_saves_removed_at_start_up(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    root = out / "checkpoints"
    dead, writer = dead_pid(), subprocess.Popen(["sleep", "60"])
    try:
        for name in (f".tmp-step-0000003-{dead}", f".tmp-step-0000005-{writer.pid}"):
            (root / name).mkdir(parents=True)
            (root / name / "model.safetensors").write_bytes(b"\0" * 100)
        (root / f".latest.{dead}.tmp").write_text("step-0000003\n")
        # a live process with the pid of a writer that died before it started (pids repeat in containers)
        reused = root / f".tmp-step-0000001-{writer.pid}"
        reused.mkdir()
        os.utime(reused, (time.time() - 3600, time.time() - 3600))
        mmcl.Trainer(recipe_from_dict(recipe(tiny_corpus, out, steps=2))).fit()
        assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [f".tmp-step-0000005-{writer.pid}"]
    finally:
        writer.kill()
        writer.wait()
    note = [line for line in capsys.readouterr().out.splitlines() if "unfinished" in line]
    assert len(note) == 1 and note[0].startswith("removed 3 unfinished checkpoint save(s) left by a crashed run: ")
    assert str(root / f".tmp-step-0000003-{dead}") in note[0] and str(reused) in note[0]


def test_checkpoint_moved_aside_by_a_dead_resave_is_put_back(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, 2, model, {"step": 2}, keep=3)
    root = tmp_path / "checkpoints"
    aside = root / f".old-step-0000002-{dead_pid()}"
    os.rename(root / "step-0000002", aside)  # a re-save of step 2 killed between its two renames
    assert remove_stale_saves(tmp_path) == []
    assert latest_checkpoint(tmp_path) == root / "step-0000002" and not aside.exists()


# --------------------------------------------------------------------------------------------------
# The real command on real file systems
# --------------------------------------------------------------------------------------------------


def train_command(tmp_path: Path, data: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "mmcl.cli", "train", str(path)], capture_output=True, text=True, timeout=300
    )


def assert_one_error_line(res: subprocess.CompletedProcess, *expected: str) -> str:
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("mmcl: error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_output_below_a_file(tiny_corpus, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    res = train_command(tmp_path, recipe(tiny_corpus, blocker / "run"))
    assert_one_error_line(res, f"{blocker} is a file, not a folder", "choose another train.output_dir")
    assert "throughput" not in res.stdout  # failed before any compute


@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs at ``path`` for the block; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_fills_up_mid_save(tiny_corpus, tmp_path):
    """18 MB: the run folder (tokenizer) and the checkpoint of step 2 (~12 MB: weights and AdamW
    moments) fit; the save of step 4 runs out of room half way."""
    with mounted_tmpfs(tmp_path / "small", "size=18m") as disk:
        out = disk / "run"
        res = train_command(tmp_path, recipe(tiny_corpus, out))
        assert_one_error_line(
            res,
            f"cannot write checkpoint step-0000004 in {out / 'checkpoints'}",
            "free of 18.0 MB",
            "free some space there or choose another train.output_dir",
        )
        no_leftovers(out)
        latest = latest_checkpoint(out)
        assert latest.name == "step-0000002" and load_state(latest)["step"] == 2


def test_read_only_output(tiny_corpus, tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        res = train_command(tmp_path, recipe(tiny_corpus, disk / "run"))
        assert_one_error_line(res, f"cannot write the run folder in {disk / 'run'}: Read-only file system", "read-only")
        assert "throughput" not in res.stdout
