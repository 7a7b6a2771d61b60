"""The house rules, checked statically: no import cycle among the project's modules, every room imports only
the rooms below it (the order of docs/architecture.md), no module over 500 lines, and `import rnas` /
`rnas --help` do not load torch."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search_spaces", "supernets", "rnas")
# lowest first; a module may import its own room and the rooms before it (docs/architecture.md says the same)
ROOMS = ("search_spaces", "supernets", "rnas.base", "rnas.runtime", "rnas.data", "rnas.config", "rnas.robust",
         "rnas.method", "rnas.nets", "rnas.teachers", "rnas.engine", "rnas.evaluation", "rnas.study",
         "rnas.report", "rnas.commands", "rnas.cli")
BASE = {"rnas", "rnas.errors", "rnas.names", "rnas.moved", "rnas.resources"}
MAX_LINES = 500


def module_files() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (top level, in functions, under
    TYPE_CHECKING): a cycle hidden in a function is still a cycle."""
    mods = module_files()
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                full = node.module or ""
                if node.level:
                    pkg = base
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    full = f"{pkg}.{node.module}" if node.module else pkg
                targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in mods else full for a in node.names]
            for target in targets:
                found = _resolve(target, mods)
                if found and found != mod:
                    edges[mod].add(found)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def room(mod: str) -> str:
    if mod in BASE or mod.startswith("rnas.resources"):
        return "rnas.base"
    for name in sorted(ROOMS, key=len, reverse=True):
        if mod == name or mod.startswith(name + "."):
            return name
    if mod == "rnas.__main__":
        return "rnas.cli"
    raise AssertionError(f"{mod}: in no room of tests/test_house.py ROOMS")


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_room_imports_only_the_rooms_below_it():
    wrong = [f"{mod} ({room(mod)}) imports {target} ({room(target)})"
             for mod, targets in sorted(import_graph().items()) for target in sorted(targets)
             if ROOMS.index(room(target)) > ROOMS.index(room(mod))]
    assert wrong == []


def test_the_architecture_page_gives_the_same_order():
    text = (ROOT / "docs" / "architecture.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("Import order:"))
    written = [part.strip() for part in line.removeprefix("Import order:").split("→")]
    assert written == [{"rnas.base": "errors, names, moved"}.get(name, name.removeprefix("rnas.")) for name in ROOMS]


def test_no_module_is_over_500_lines():
    long = {mod: n for mod, path in module_files().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("code", ["import rnas", "import rnas.cli, sys; sys.argv = ['rnas', '--help']\n"
                                                 "try:\n    rnas.cli.main()\nexcept SystemExit:\n    pass"])
def test_import_rnas_and_help_do_not_load_torch(code):
    check = f"{code}\nimport sys\nassert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-800:]
