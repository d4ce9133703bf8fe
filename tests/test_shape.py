"""The shape of the code: layers that only point down, and short functions.

The package graph is built from the source, counting every ``import`` at any depth (inside
functions too), so an import placed in a function to dodge a cycle is still seen.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

MMCL = Path(__file__).resolve().parents[1] / "mmcl"
MAX_FUNCTION_LINES = 100

# The layers, lowest first: a package may import only from packages before it in this list (and
# from the base modules). ``config`` is the old recipe module kept for compatibility: nothing in
# mmcl imports it, it may import anything.
LAYERS = ["recipe", "data", "models", "negatives", "losses", "eval", "train", "interop", "report", "cli"]
BASE = {"errors", "registry", "weights"}
TOP = {"config"}


def _unit(module: str) -> str | None:
    """The package (or top-level module) of ``mmcl.a.b``: ``a``; None for ``mmcl`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mmcl" else None


def _imports(path: Path) -> list[tuple[str, int]]:
    rel = path.relative_to(MMCL.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if parts[-1] == "__init__":
        package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{a.name}", node.lineno) for a in node.names]
    return found


def package_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: ["file:line", ...]} over every import in mmcl/."""
    units = {p.stem for p in MMCL.glob("*.py")} | {p.name for p in MMCL.iterdir() if (p / "__init__.py").is_file()}
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in MMCL.rglob("*.py"):
        rel = path.relative_to(MMCL.parent)
        src = _unit(".".join(rel.with_suffix("").parts))
        if src is None or src == "__init__":
            continue
        for module, line in _imports(path):
            dst = _unit(module)
            if dst in units and dst != src:
                graph[src][dst].append(f"{rel}:{line}")
    return graph


def _cycle(graph) -> list[str] | None:
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in graph.get(node, {}):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        colour[node] = "black"
        stack.pop()
        return None

    for node in list(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    cycle = _cycle(graph)
    assert cycle is None, (
        " -> ".join(cycle)
        + "; edges: "
        + "; ".join(f"{a} -> {b} at {graph[a][b][:3]}" for a, b in zip(cycle, cycle[1:]))
    )


def test_packages_import_only_lower_layers():
    graph, order = package_graph(), {name: i for i, name in enumerate(LAYERS)}
    wrong = [
        f"{src} -> {dst} ({sites[0]})"
        for src, targets in graph.items()
        if src not in TOP
        for dst, sites in targets.items()
        if dst not in BASE and (src in BASE or dst in TOP or order.get(dst, -1) > order.get(src, len(LAYERS)))
    ]
    assert not wrong, "imports pointing up a layer: " + "; ".join(sorted(wrong))


def test_every_package_is_in_a_layer():
    units = {p.name for p in MMCL.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in MMCL.glob("*.py")} - {"__init__"}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))
    assert modules <= BASE | TOP, sorted(modules - BASE - TOP)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """The graph is not fooled by an import moved into a function (what held the old cycle together)."""
    for package in ("data", "train"):
        (tmp_path / "mmcl" / package).mkdir(parents=True)
        (tmp_path / "mmcl" / package / "__init__.py").write_text("")
    sample = tmp_path / "mmcl" / "data" / "x.py"
    sample.write_text("def f():\n    from ..train import Trainer\n    return Trainer\n")
    global MMCL
    saved, MMCL = MMCL, tmp_path / "mmcl"
    try:
        assert "train" in package_graph()["data"]
    finally:
        MMCL = saved


def _functions():
    for path in sorted(MMCL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(MMCL.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_no_function_is_longer_than_the_limit(limit):
    long = [f"{name} ({n} lines)" for name, n in _functions() if n > limit]
    assert not long, f"functions over {limit} lines: " + "; ".join(long)


def test_trainer_module_stays_short():
    n = len((MMCL / "train" / "trainer.py").read_text().splitlines())
    assert n <= 350, f"mmcl/train/trainer.py has {n} lines; move what is not the loop out"


def test_the_recipe_layer_names_no_loss():
    """The recipe is checked by asking the losses what they need; the recipe code names none of them."""
    import re

    import mmcl

    text = "\n".join(p.read_text() for p in sorted((MMCL / "recipe").glob("*.py")))
    named = [name for name in mmcl.list_losses() if re.search(rf"\b{name}\b", text)]
    assert not named, f"mmcl/recipe/ names the losses {named}"
