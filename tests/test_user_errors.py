"""Every user mistake and every refused file is one line, ``mmcl: error: ...``, and exit code 2.

Each case below was found by running mmcl as a user would (issue: "never show a traceback for a
user's mistake"); before the fix each ended in a Python traceback, or was silently accepted.
"""

import copy
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mmcl.cli import main

from .conftest import tiny_recipe_dict


def one_line_error(capsys, argv, *expected):
    """Run the CLI in-process; it must exit 2 with one ``mmcl: error:`` line that says ``expected``."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("mmcl: error: ")]
    assert len(errors) == 1, err
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def recipe_file(tiny_corpus, tmp_path):
    def write(text=None, **changes):
        path = tmp_path / "recipe.yaml"
        if text is None:
            data = tiny_recipe_dict(tiny_corpus, tmp_path / "run")
            for key, value in changes.items():
                section, name = key.split("__")
                data[section][name] = value
            text = yaml.safe_dump(data)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return str(path)

    return write


class Evil:
    """A pickle that would run a shell command if it were ever unpickled."""

    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def write_pickle(path):
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, path)
    return path


# --------------------------------------------------------------------------------------------------
# Recipes and overrides
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,expected",
    [
        ("train.eps=-1.0", "train.eps"),
        ("train.lr=.inf", "expected a finite number"),
        ("train.lr=.nan", "expected a finite number"),
        ("name=../../etc", "not a valid run name"),
        ("name=", "not a valid run name"),
        ("name=..", "not a valid run name"),
        ("train.optimizer=sgd", "unknown key 'train.optimizer'"),
    ],
)
def test_bad_overrides_are_one_line(capsys, recipe_file, override, expected):
    one_line_error(capsys, ["train", recipe_file(), override], expected)


def test_binary_recipe_file(capsys, recipe_file):
    one_line_error(capsys, ["train", recipe_file(bytes(range(256)) * 4)], "not a text file")


def test_yaml_syntax_error_names_file_line_and_column(capsys, recipe_file):
    path = recipe_file("name: x\ntrain:\n  lr: [1e-3\n  steps: 2\n")
    line = one_line_error(capsys, ["train", path], f"{path}:", "not valid YAML")
    assert line.count(":") >= 4  # file:line:col


def test_nul_byte_in_recipe(capsys, recipe_file):
    one_line_error(capsys, ["train", recipe_file(b"name: x\x00\n")], "not valid YAML", "#x0000")


def test_recipe_is_a_folder(capsys, tmp_path):
    one_line_error(capsys, ["train", str(tmp_path)], "is a folder")


def test_yaml_1_1_number_strings_are_numbers(tiny_corpus, tmp_path):
    """``lr: 1e-3`` in a file reads as a number, as the override ``train.lr=1e-3`` always did."""
    from mmcl import load_recipe

    data = yaml.safe_dump(tiny_recipe_dict(tiny_corpus, tmp_path / "run"))
    path = tmp_path / "r.yaml"
    path.write_text(data + "\n")
    text = path.read_text().replace("lr: 0.001", "lr: 1e-3").replace("steps: 4", "steps: 4\n  eps: 1E-8")
    path.write_text(text)
    assert "lr: 1e-3" in text
    recipe = load_recipe(path, ["train.weight_decay=5e-2"])
    assert recipe.train.lr == 1e-3 and recipe.train.eps == 1e-8 and recipe.train.weight_decay == 0.05


def test_recipe_errors_come_before_heavy_imports(recipe_file):
    """A mistake in a recipe is reported before torch, timm or transformers are imported."""
    script = (
        "import sys\nfrom mmcl.cli import main\n"
        f"code = main(['train', {recipe_file()!r}, 'train.eps=-1'])\n"
        "print('CODE', code, [m for m in ('torch', 'timm', 'transformers') if m in sys.modules])\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "CODE 2 []" in res.stdout, res.stdout + res.stderr


def test_debug_shows_the_traceback(recipe_file):
    res = subprocess.run(
        [sys.executable, "-m", "mmcl.cli", "--debug", "train", recipe_file(), "train.eps=-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "Traceback" in res.stderr and "ConfigError" in res.stderr


# --------------------------------------------------------------------------------------------------
# Refused and unreadable files
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_corpus, tmp_path_factory):
    """A 2-step run with a checkpoint (copied by each test that damages it)."""
    import mmcl
    from mmcl.recipe import recipe_from_dict

    out = tmp_path_factory.mktemp("user-errors") / "run"
    data = tiny_recipe_dict(tiny_corpus, out, steps=2)
    data["eval"]["datasets"] = []
    mmcl.Trainer(recipe_from_dict(data)).fit()
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    # the recipe saved in the run points its output at the original folder: point it here
    recipe = yaml.safe_load((dst / "recipe.yaml").read_text())
    recipe["train"]["output_dir"] = str(dst)
    (dst / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return dst


def checkpoint_of(run):
    return next((run / "checkpoints").glob("step-*"))


def test_pickled_state_on_resume_is_refused(capsys, run_copy):
    write_pickle(checkpoint_of(run_copy) / "state.pt")
    line = one_line_error(
        capsys, ["train", str(run_copy / "recipe.yaml"), "train.resume=latest", "train.steps=3"], "state.pt", "refused"
    )
    assert "weights_only" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "RUN"],
        ["export", "pretrained", "RUN", "OUT"],
        ["export", "open_clip", "RUN", "OUT"],
    ],
)
def test_pickle_named_safetensors_is_refused(capsys, run_copy, tmp_path, argv):
    weights = checkpoint_of(run_copy) / "model.safetensors"
    write_pickle(weights)
    argv = [str(run_copy) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    one_line_error(capsys, argv, "model.safetensors", "refused", "torch pickle")


def test_report_notes_a_refused_checkpoint_and_writes_the_rest(capsys, run_copy, tiny_corpus):
    """The report's plots of the metrics need no weights: the embedding part is skipped with a note."""
    recipe = yaml.safe_load((run_copy / "recipe.yaml").read_text())
    recipe["eval"] = tiny_recipe_dict(tiny_corpus, run_copy)["eval"]
    (run_copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    write_pickle(checkpoint_of(run_copy) / "model.safetensors")
    assert main(["report", str(run_copy)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    notes = [ln for ln in out.splitlines() if ln.startswith("note: ") and "refused" in ln]
    assert len(notes) == 1 and "model.safetensors" in notes[0], out
    assert (run_copy / "report" / "report.html").is_file()


def test_pickle_named_safetensors_in_init_from_is_refused(capsys, run_copy, recipe_file):
    write_pickle(checkpoint_of(run_copy) / "model.safetensors")
    argv = ["train", recipe_file(), f"model.init_from={run_copy}", f"train.output_dir={run_copy.parent / 'new'}"]
    one_line_error(capsys, argv, "model.safetensors", "refused")


def test_pickle_named_safetensors_via_the_api(run_copy):
    import mmcl
    from mmcl.errors import UnsafeFileError

    write_pickle(checkpoint_of(run_copy) / "model.safetensors")
    with pytest.raises(UnsafeFileError, match="refused"):
        mmcl.load_pretrained(run_copy)


def test_pickled_open_clip_weights_are_refused(capsys, tiny_corpus, tmp_path):
    evil = write_pickle(tmp_path / "vit_b32.pt")
    one_line_error(
        capsys,
        [
            "eval",
            "zeroshot",
            "--model",
            "ViT-B-32",
            "--pretrained",
            str(evil),
            "--dataset",
            str(tiny_corpus / "test.csv"),
        ],
        "vit_b32.pt",
        "refused",
    )


def test_remote_code_model_is_refused(capsys, tiny_corpus, tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    config = {"model_type": "my_clip", "auto_map": {"AutoConfig": "modeling_my_clip.MyClipConfig"}}
    (folder / "config.json").write_text(__import__("json").dumps(config))
    (folder / "modeling_my_clip.py").write_text("raise SystemExit('remote code ran')\n")
    one_line_error(
        capsys,
        ["eval", "retrieval", "--model", str(folder), "--dataset", str(tiny_corpus / "test.csv")],
        "refused",
        "remote code",
    )


def test_loading_a_run_needs_no_loss(run_copy):
    """A run trained with a plugin loss loads although the plugin is not imported here."""
    import mmcl

    recipe = yaml.safe_load((run_copy / "recipe.yaml").read_text())
    recipe["loss"] = {"name": "my_plugin_loss", "kwargs": {"margin": 0.3}}
    (run_copy / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    model, tokenize, _ = mmcl.load_pretrained(run_copy)
    assert model.encode_text(**tokenize(["a red circle"])).shape == (1, 16)


# --------------------------------------------------------------------------------------------------
# Vision weights load strictly
# --------------------------------------------------------------------------------------------------


def tower_state(recipe_dict):
    from mmcl.models.vision import TimmVisionTower
    from mmcl.recipe import VisionConfig
    from mmcl.recipe.load import build_section

    torch.manual_seed(123)
    return TimmVisionTower(
        build_section(VisionConfig, recipe_dict["model"]["vision"], "model.vision")
    ).trunk.state_dict()


def test_vision_weights_in_another_naming_fail_in_one_line(capsys, tiny_corpus, tmp_path):
    data = copy.deepcopy(tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=1))  # TINY_VIT is shared
    foreign = {f"backbone/{k.replace('.', '/')}:0": v for k, v in tower_state(data).items()}
    save_file(foreign, str(tmp_path / "foreign.safetensors"))
    data["model"]["vision"]["weights"] = str(tmp_path / "foreign.safetensors")
    data["model"]["vision"]["lock"] = True
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    one_line_error(
        capsys, ["train", str(tmp_path / "r.yaml")], "model.vision.weights", "missing", "unexpected", "strict: false"
    )
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))  # nothing trained, nothing saved


def test_matching_vision_weights_load_and_the_summary_says_so(capsys, tiny_corpus, tmp_path):
    import mmcl
    from mmcl.recipe import recipe_from_dict

    data = copy.deepcopy(tiny_recipe_dict(tiny_corpus, tmp_path / "run", steps=1))  # TINY_VIT is shared
    state = tower_state(data)
    state_with_head = {**state, "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    save_file(state_with_head, str(tmp_path / "tower.safetensors"))
    data["model"]["vision"]["weights"] = str(tmp_path / "tower.safetensors")
    data["eval"]["datasets"] = []
    trainer = mmcl.Trainer(recipe_from_dict(data))
    for name, value in state.items():
        torch.testing.assert_close(trainer.unwrapped.vision.trunk.state_dict()[name], value, msg=name)
    assert f"weights: vision <- {tmp_path / 'tower.safetensors'} (all {len(state)} tensors)" in trainer._summary()

    # strict: false loads what matches and says how much
    partial = {k: v for i, (k, v) in enumerate(state.items()) if i % 2 == 0}
    save_file({**partial, "extra.weight": torch.zeros(3)}, str(tmp_path / "partial.safetensors"))
    data["model"]["vision"].update(weights=str(tmp_path / "partial.safetensors"), strict=False)
    summary = mmcl.Trainer(recipe_from_dict(data))._summary()
    assert f"({len(partial)} of {len(state)} tensors" in summary and "1 in the file unused" in summary
