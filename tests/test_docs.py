"""The documentation's links resolve: README.md, docs/*.md and every evaluation/**/README.md.

Every relative markdown link (and image) must name an existing file or folder, and a ``#anchor``
must name a heading of the target page (GitHub's anchors). Repository paths named in the text
(``recipes/*.yaml``, ``evaluation/...`` files) must exist too, so a moved script or result is caught.
"""

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "evaluation").rglob("README.md"))
    return [f for f in files if f.is_file()]


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def test_the_docs_are_there():
    names = {f.relative_to(ROOT).as_posix() for f in doc_files()}
    assert {"README.md", "docs/README.md", "evaluation/README.md"} <= names
    assert len(names) >= 12


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(doc):
    bad = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            bad.append(f"{target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
            continue
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: points outside the repository")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                bad.append(f"{target}: an anchor into something that is not a markdown page")
            elif anchor not in anchors(dest):
                bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, "\n".join(bad)


PATH_IN_TEXT = re.compile(r"(?<![\w/.-])((?:recipes|evaluation|docs|tests)/[\w./-]*\w\.(?:yaml|py|md|json|png))")


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_named_in_the_text_exists(doc):
    missing = []
    for line in doc.read_text().splitlines():
        if "old path" in line:  # notes that name the layout before the move, on purpose
            continue
        for path in PATH_IN_TEXT.findall(line):
            if not (ROOT / path).exists():
                missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"


def test_each_benchmark_folder_has_its_script_readme_and_results():
    folders = sorted({p.parent for p in (ROOT / "evaluation").glob("*/bench_*.py")})
    assert len(folders) >= 8
    for folder in folders:
        name = folder.relative_to(ROOT)
        assert (folder / "README.md").is_file(), f"{name} has no README.md"
        assert (folder / "results").is_dir(), f"{name} has no results/"
        assert f"evaluation/{folder.name}/bench_" in (folder / "README.md").read_text(), f"{name}/README.md: no command"
    index = (ROOT / "evaluation" / "README.md").read_text()
    for folder in [*folders, ROOT / "evaluation" / "quickstart"]:
        assert f"({folder.name}/README.md)" in index, f"evaluation/README.md does not list {folder.name}/"
    assert not (ROOT / "evaluation" / "results").exists(), "results belong in evaluation/<bench>/results/"


def test_slugs_follow_github():
    heading = "Hard-negative captions (NegCLIP-style fine-tuning)"
    assert slug(heading) == "hard-negative-captions-negclip-style-fine-tuning"
    assert slug("Inheritance: `_base_` and `_replace_`") == "inheritance-_base_-and-_replace_"
    assert slug("Results at 600 and 1,000 steps") == "results-at-600-and-1000-steps"
    assert slug("`eval.datasets[i]`") == "evaldatasetsi"
