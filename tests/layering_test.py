"""The package layering of docs/architecture.md, checked on the source: who may import whom, and no cycles."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("learn_tf", "beam", "serving", "tfx_pipeline", "learn_app")
# Which project packages each package may import (itself always).
MAY_IMPORT = {
    "learn_tf": set(),
    "beam": {"learn_tf"},
    "serving": {"learn_tf"},
    "tfx_pipeline": {"learn_tf", "beam", "serving"},
    "learn_app": {"learn_tf", "beam", "serving", "tfx_pipeline"},
}


def source_modules(root: str) -> dict[str, str]:
    """Module name -> file of every non-test module of the project's packages."""
    mods = {}
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(root, pkg)):
            for f in files:
                if f.endswith(".py") and not f.endswith("_test.py") and f != "conftest.py":
                    name = os.path.relpath(os.path.join(d, f), root)[:-3].replace(os.sep, ".")
                    mods[name.removesuffix(".__init__")] = os.path.join(d, f)
    return mods


def imports_of(path: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import in a file, `from a.b import c` giving a.b and a.b.c."""
    out = []
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def layer_violations(mods: dict[str, str]) -> list[str]:
    """`file:line pkg imports name` for every import that crosses the layering upwards."""
    bad = []
    for mod, path in mods.items():
        src = mod.split(".")[0]
        for line, name in imports_of(path):
            top = name.split(".")[0]
            if top in PACKAGES and top != src and top not in MAY_IMPORT[src]:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} {src} imports {name}")
    return sorted(set(bad))


def import_cycles(mods: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups (size > 1) of the module import graph."""
    graph = {m: {n for _, n in imports_of(p) if n in mods and n != m} for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


def test_no_package_imports_upwards():
    assert layer_violations(source_modules(ROOT)) == []


def test_no_import_cycle_between_modules():
    assert import_cycles(source_modules(ROOT)) == []


@pytest.mark.parametrize("src,imported", [("learn_tf", "serving.export"), ("serving", "tfx_pipeline.lineage"),
                                          ("beam", "serving"), ("learn_tf", "learn_app.cli")])
def test_the_check_catches_an_upward_import(tmp_path, src, imported):
    for pkg in PACKAGES:
        os.makedirs(tmp_path / pkg)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / src / "bad.py").write_text(f"import {imported}\n")
    mods = source_modules(str(tmp_path))
    assert [v.split(" ", 1)[1] for v in layer_violations(mods)] == [f"{src} imports {imported}"]


def test_the_check_catches_a_cycle(tmp_path):
    os.makedirs(tmp_path / "learn_tf")
    (tmp_path / "learn_tf" / "__init__.py").write_text("")
    (tmp_path / "learn_tf" / "a.py").write_text("from learn_tf import b\n")
    (tmp_path / "learn_tf" / "b.py").write_text("def f():\n    from learn_tf.a import x\n")
    assert import_cycles(source_modules(str(tmp_path))) == [["learn_tf.a", "learn_tf.b"]]
