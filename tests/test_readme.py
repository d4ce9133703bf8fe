"""README is the front door: its two quickstart commands exist, and CI runs the test one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^(pip install -e \"\.\[dev\]\" && .+)$", text, flags=re.M)


def test_readme_has_exactly_the_two_quickstart_commands():
    cmds = quickstart_commands()
    assert 'pip install -e ".[dev]" && mmcl train recipes/quickstart.yaml' in cmds
    assert any(c.endswith("&& pytest") for c in cmds)


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = next(c for c in quickstart_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci]


def test_every_recipe_in_the_readme_table_exists():
    text = (ROOT / "README.md").read_text()
    for path in set(re.findall(r"`(recipes/[\w\-/]+\.yaml)`", text)):
        assert (ROOT / path).is_file(), path


def test_every_mmcl_command_in_the_readme_parses():
    import shlex

    from mmcl.cli import _parser, normalise_argv

    text = (ROOT / "README.md").read_text()
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.strip().startswith("mmcl ")
    ]
    assert len(commands) >= 8
    parser = _parser()
    for cmd in commands:
        argv = shlex.split(cmd.split("#")[0])[1:]
        parser.parse_args(normalise_argv(argv))  # exits (fails the test) on an unknown option
