"""Ctrl-C and SIGTERM stop training at a step boundary: a run interrupted at any moment (mid optimizer
step, during a checkpoint save, twice in quick succession) and resumed with ``train.resume=latest``
ends with the same weights, bit for bit, as a run that was never interrupted.

The recipe makes every piece of state matter: dropout and random augmentation (RNG), BatchNorm in the
projection heads (running statistics and the batch counter), AdamW moments, an EMA of the weights.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import mmcl
from mmcl.errors import Interrupted
from mmcl.recipe import recipe_from_dict
from mmcl.train import latest_checkpoint

from ..conftest import tiny_recipe_dict

STEPS = 8
WEIGHT_FILES = ("model.safetensors", "ema.safetensors")


def recipe(corpus, out, **train) -> dict:
    train = {"steps": STEPS, "checkpoint_every": 2, "peak_flops": 1e12, "ema_decay": 0.9, **train}
    data = tiny_recipe_dict(corpus, out, **train)
    data["eval"]["datasets"] = []
    data["data"]["augment"] = {"enabled": True, "scale": [0.5, 1.0], "hflip": 0.5}
    data["model"]["head"] = "simclr"  # Linear-BN-ReLU-Linear-BN
    data["model"]["text"]["config"] = {**data["model"]["text"]["config"], "hidden_dropout_prob": 0.2}
    return data


def fit(data: dict, **train) -> None:
    data = {**data, "train": {**data["train"], **train}}
    mmcl.Trainer(recipe_from_dict(data)).fit()


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> tuple[Path, float]:
    """The final checkpoint of an uninterrupted run, and how long its training took (seconds)."""
    out = tmp_path_factory.mktemp("reference")
    trainer = mmcl.Trainer(recipe_from_dict(recipe(tiny_corpus, out)))
    start = time.monotonic()
    trainer.fit()
    return latest_checkpoint(out), time.monotonic() - start


def assert_bitwise_equal(ckpt: Path, reference: Path) -> None:
    assert ckpt.name == reference.name, "the runs ended at different steps"
    for name in WEIGHT_FILES:
        assert (ckpt / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs from the reference"


def no_leftovers(out: Path) -> None:
    assert not list((out / "checkpoints").glob(".tmp-*")), "a temporary checkpoint folder was left behind"
    assert not list((out / "checkpoints").glob(".old-*"))


def send_during(monkeypatch, obj, name: str, when, *signals: int) -> None:
    """Wrap ``obj.name`` so that the first call where ``when()`` holds sends ``signals`` to this
    process (each is handled right away, in this thread) before it does its work."""
    original = getattr(obj, name)
    sent = []

    def wrapper(*args, **kwargs):
        if not sent and when():
            sent.append(True)
            for sig in signals:
                os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_mid_optimizer_step_saves_that_step(tiny_corpus, tmp_path, reference, monkeypatch, sig):
    """The signal lands after the optimizer's update, before the EMA's and the step counter's: the
    step is finished, then saved; resuming gives the same weights."""
    out = tmp_path / "run"
    data = recipe(tiny_corpus, out)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    trainer = mmcl.Trainer(recipe_from_dict(data))
    send_during(monkeypatch, trainer.unwrapped, "clamp_logit_scale", lambda: trainer.step == 2, sig)  # in step 3
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert info.value.exit_code == 128 + sig
    message = str(info.value)
    assert "\n" not in message and "after step 3: saved" in message and "train.resume=latest" in message
    assert latest_checkpoint(out).name == "step-0000003"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    no_leftovers(out)
    fit(data, resume="latest")
    assert_bitwise_equal(latest_checkpoint(out), reference[0])


def test_sigterm_during_a_save_stops_after_it(tiny_corpus, tmp_path, reference, monkeypatch):
    from mmcl.train import checkpoint

    out = tmp_path / "run"
    data = recipe(tiny_corpus, out)
    trainer = mmcl.Trainer(recipe_from_dict(data))
    send_during(monkeypatch, checkpoint, "save_model", lambda: trainer.step == 4, signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"SIGTERM after step 4: saved") as info:
        trainer.fit()
    assert info.value.exit_code == 143
    assert latest_checkpoint(out).name == "step-0000004"
    no_leftovers(out)
    monkeypatch.undo()
    fit(data, resume="latest")
    assert_bitwise_equal(latest_checkpoint(out), reference[0])


def test_second_ctrl_c_during_the_save_keeps_the_previous_checkpoint(tiny_corpus, tmp_path, reference, monkeypatch):
    """Ctrl-C in step 3, and again while step 3 is being saved: the save is abandoned, its
    temporary folder removed, ``latest`` still names step 2."""
    from mmcl.train import checkpoint

    out = tmp_path / "run"
    data = recipe(tiny_corpus, out)
    trainer = mmcl.Trainer(recipe_from_dict(data))
    send_during(monkeypatch, trainer.unwrapped, "clamp_logit_scale", lambda: trainer.step == 2, signal.SIGINT)
    # the second one after the weights are written, before the optimizer state is
    send_during(monkeypatch, checkpoint.torch, "save", lambda: trainer.step == 3, signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        trainer.fit()
    assert info.value.exit_code == 130
    expected = f"interrupted again during the save: the previous checkpoint {out / 'checkpoints' / 'step-0000002'}"
    assert str(info.value).startswith(expected + " is intact")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert not (out / "checkpoints" / "step-0000003").exists()
    no_leftovers(out)
    monkeypatch.undo()
    fit(data, resume="latest")
    assert_bitwise_equal(latest_checkpoint(out), reference[0])


def test_second_ctrl_c_mid_step_saves_nothing(tiny_corpus, tmp_path, monkeypatch):
    """Two Ctrl-C in quick succession, both inside step 3: the torn step is not saved."""
    out = tmp_path / "run"
    trainer = mmcl.Trainer(recipe_from_dict(recipe(tiny_corpus, out, steps=4)))
    send_during(
        monkeypatch, trainer.unwrapped, "clamp_logit_scale", lambda: trainer.step == 2, signal.SIGINT, signal.SIGINT
    )
    with pytest.raises(Interrupted, match="interrupted again during step 3: the previous checkpoint .*step-0000002"):
        trainer.fit()
    assert latest_checkpoint(out).name == "step-0000002"
    no_leftovers(out)


# --------------------------------------------------------------------------------------------------
# Real signals from outside, at random moments, to `mmcl train` (and its data loader workers)
# --------------------------------------------------------------------------------------------------


def logged_steps(metrics: Path, offset: int) -> int:
    """Steps logged to metrics.jsonl after its first ``offset`` bytes (one line per step)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(offset)
            return f.read().count(b'"train/loss"')
    except FileNotFoundError:
        return 0


def interrupted_legs(
    recipe_path: Path, out: Path, rng: random.Random, legs: list[dict], step_time: float
) -> list[tuple[int, str]]:
    """Run ``mmcl train`` once per leg (resuming from the second on) in its own process group, and
    send the group the leg's signal (``sig``; ``double``: a second SIGINT within 50 ms), as a
    terminal's Ctrl-C reaches every process of the group, data loader workers included. The moment
    is random: a random number of steps into the leg, then up to ``step_time`` seconds more (in the
    next step or in the checkpoint save before it). Then resume to the end. Returns each leg's exit
    code and last stderr line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    metrics = out / "metrics.jsonl"
    results = []
    for i, leg in enumerate([*legs, None]):
        cmd = [sys.executable, "-m", "mmcl.cli", "train", str(recipe_path), *(leg or {}).get("overrides", [])]
        if i:
            cmd.append("train.resume=latest")
        latest = latest_checkpoint(out)
        left = STEPS - (int(latest.name.split("-")[1]) if latest else 0)
        offset = metrics.stat().st_size if metrics.exists() else 0
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        try:
            if leg is not None and left > 0:
                steps = rng.randrange(left)
                for line in proc.stdout:
                    if "throughput:" in line:  # printed once the first batch is read
                        break
                while logged_steps(metrics, offset) < steps and proc.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, step_time))
                try:
                    os.killpg(proc.pid, leg["sig"])
                    if leg.get("double"):
                        time.sleep(rng.uniform(0, 0.05))
                        os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass  # finished already
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        last = err.strip().splitlines()[-1] if err.strip() else ""
        results.append((proc.returncode, last))
        if leg is None:
            assert proc.returncode == 0, err[-3000:]
        elif proc.returncode in (130, 143):  # stopped in one line (or, past the training loop, interrupted)
            assert "Traceback" not in err and last.startswith("mmcl: "), err[-3000:]
        else:
            # done before the signal came (0), or killed by it while the interpreter shut down
            assert proc.returncode in (0, -signal.SIGINT, -signal.SIGTERM), err[-3000:]
        no_leftovers(out)
    return results


def check_random_interrupts(tiny_corpus, tmp_path, reference, seed: int, legs: list[dict]) -> list[tuple[int, str]]:
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tiny_corpus, out, checkpoint_every=1)))
    ckpt, duration = reference
    results = interrupted_legs(path, out, random.Random(seed), legs, step_time=duration / STEPS)
    assert_bitwise_equal(latest_checkpoint(out), ckpt)
    return results


def test_ctrl_c_to_the_command_and_its_workers(tiny_corpus, tmp_path, reference):
    """Ctrl-C at a random moment to the process group, 2 data loader workers included: they live on
    until the step is done and saved. (Each leg starts a process: the many-moments version is slow.)"""
    (code, line), _ = check_random_interrupts(
        tiny_corpus, tmp_path, reference, 0, [{"sig": signal.SIGINT, "overrides": ["data.num_workers=2"]}]
    )
    assert code == 130 and "stopped by Ctrl-C (SIGINT) after step" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_many_random_interrupts_of_the_command(tiny_corpus, tmp_path, reference, seed):
    """SIGINT or SIGTERM, sometimes doubled, at random moments of 5 legs in a row."""
    rng = random.Random(1000 + seed)
    legs = [
        {
            "sig": rng.choice([signal.SIGINT, signal.SIGTERM]),
            "double": rng.random() < 0.3,
            "overrides": [f"data.num_workers={rng.choice([0, 2])}"],
        }
        for _ in range(5)
    ]
    for code, line in check_random_interrupts(tiny_corpus, tmp_path, reference, seed, legs):
        print(code, line)  # what each leg met (pytest -s)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_ranks_stop_together_under_torchrun(tiny_corpus, tmp_path):
    """torchrun, 2 gloo processes. Ctrl-C to the whole group (each worker gets the terminal's and
    torchrun's forwarded copy), later SIGTERM to one worker alone: each time every rank stops after
    the same step and saves it together; resumed, the run ends where an uninterrupted one does."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mmcl.cli", "train"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def write(name: str) -> Path:
        data = recipe(tiny_corpus, tmp_path / name, steps=6, checkpoint_every=1)
        data["data"]["batch_size"] = 4
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    res = subprocess.run([*launch, str(write("straight"))], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    path, out = write("run"), tmp_path / "run"

    def leg(extra: list[str], after_steps: int, send) -> str:
        offset = (out / "metrics.jsonl").stat().st_size if (out / "metrics.jsonl").exists() else 0
        proc = subprocess.Popen(
            [*launch, str(path), *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            while logged_steps(out / "metrics.jsonl", offset) < after_steps and proc.poll() is None:
                time.sleep(0.01)
            send(proc)
            _, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        no_leftovers(out)
        return err

    def stopped_at(err: str, how: str) -> int:
        steps = re.findall(rf"mmcl: stopped by {re.escape(how)} after step (\d+): saved", err)
        assert len(steps) == 2 and steps[0] == steps[1], err[-3000:]  # each rank says so, about the same step
        assert latest_checkpoint(out).name == f"step-{int(steps[0]):07d}"
        return int(steps[0])

    err = leg([], 2, lambda proc: os.killpg(proc.pid, signal.SIGINT))
    first = stopped_at(err, "Ctrl-C (SIGINT)")
    err = leg(["train.resume=latest"], 1, lambda proc: os.kill(children(proc.pid)[-1], signal.SIGTERM))
    assert stopped_at(err, "SIGTERM") > first
    res = subprocess.run([*launch, str(path), "train.resume=latest"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_bitwise_equal(latest_checkpoint(out), latest_checkpoint(tmp_path / "straight"))
