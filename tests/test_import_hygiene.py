"""The package's import structure (issue 13, one home per job): no import cycles, no private names across modules.

Read from the source with ``ast`` (nothing is imported): every ``import`` / ``from ... import`` of an
atlasreg module, at module level or inside a function (a lazy import hides a cycle, it does not remove it),
except under ``if TYPE_CHECKING:``. The implicit import of a package's ``__init__`` is not counted.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "atlasreg"



def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _owner(name: str, mods: dict) -> str:
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph():
    mods = _modules()
    edges: dict[str, set] = {m: set() for m in mods}
    private = []
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges[m].update(_owner(a.name, mods) for a in node.names if a.name.split(".")[0] == "atlasreg")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg[:len(pkg) - (node.level - 1)]
                    target = ".".join(base + (node.module.split(".") if node.module else []))
                elif (node.module or "").split(".")[0] == "atlasreg":
                    target = node.module
                else:
                    continue
                for a in node.names:
                    if f"{target}.{a.name}" in mods:  # a submodule
                        edges[m].add(f"{target}.{a.name}")
                        continue
                    owner = _owner(target, mods)
                    edges[m].add(owner)
                    if a.name.startswith("_") and not a.name.startswith("__") and owner != m:
                        private.append(f"{m} imports {a.name} from {owner} (line {node.lineno})")
        edges[m].discard(m)
    return edges, private


def _cycles(edges) -> list[frozenset]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    edges, _ = _graph()
    assert len(edges) > 80 and "atlasreg.io.ome_zarr" in edges  # the walk found the package
    cycles = [sorted(c) for c in _cycles(edges)]
    assert not cycles, f"import cycles (make the shared part public in a lower module): {cycles}"


def test_no_private_names_imported_across_modules():
    _, private = _graph()
    assert not private, "private names used across modules (make them public, or move them lower):\n" + \
        "\n".join(private)


def test_the_checker_sees_cycles_and_private_imports(tmp_path, monkeypatch):
    """The checker itself: a two-module package with a lazy cycle and a private import is caught."""
    pkg = tmp_path / "atlasreg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("def thing():\n    from . import a\n    from ..c import _helper\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import a\n"
                              "def _helper():\n    pass\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    edges, private = _graph()
    assert _cycles(edges) == [frozenset({"atlasreg.sub.a", "atlasreg.sub.b"})]
    assert private == ["atlasreg.sub.b imports _helper from atlasreg.c (line 3)"]
