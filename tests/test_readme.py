"""README is the front door: its two quickstart commands exist, and CI runs the test one verbatim.
Every `mmcl` command shown in the README, docs/ and the benchmark READMEs parses."""

import re
from pathlib import Path

import pytest

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


def doc_files() -> list[Path]:
    """README.md, the docs/ pages and every benchmark README."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return pages + sorted((ROOT / "evaluation").rglob("README.md"))


def mmcl_commands(path: Path) -> list[str]:
    """The `mmcl ...` lines of a page's bash blocks, with backslash continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("mmcl "):
                commands.append(line.strip())
    return commands


def parse(cmd: str) -> None:
    import shlex

    from mmcl.cli import _parser, normalise_argv

    argv = shlex.split(cmd, comments=True)[1:]
    argv = [a for a in argv if a != "--debug"]  # the CLI takes --debug anywhere on the line, before parsing
    _parser().parse_args(normalise_argv(argv))  # exits (fails the test) on an unknown option


def test_every_mmcl_command_in_the_readme_parses():
    commands = mmcl_commands(ROOT / "README.md")
    assert len(commands) >= 8
    for cmd in commands:
        parse(cmd)


@pytest.mark.parametrize("page", doc_files()[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_mmcl_command_in_the_docs_and_benchmark_readmes_parses(page):
    for cmd in mmcl_commands(page):
        parse(cmd)


def test_the_docs_show_mmcl_commands():
    assert sum(len(mmcl_commands(p)) for p in doc_files()) >= 30


def test_every_recipe_named_in_the_docs_exists():
    for page in doc_files():
        for path in set(re.findall(r"(?<![\w/])(recipes/[\w\-/]+\.yaml)", page.read_text())):
            assert (ROOT / path).is_file(), f"{page.relative_to(ROOT)}: {path}"


def test_debug_flag_is_ignored_by_the_command_check():
    parse("mmcl --debug train recipes/quickstart.yaml train.steps=2 --debug")
