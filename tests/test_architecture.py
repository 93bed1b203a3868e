"""The house rules that keep the code easy to extend: no import cycles (imports inside
functions count), no import running back up a floor (folder to folder), no folder of one file,
no source file over 400 lines, registries that refuse a taken name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import nn

from sss.models import register_model
from sss.structures import kind_names
from sss.structures.registry import get_kind, register_kind

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "sss").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _room(module: str) -> str:
    """The folder (or top-level module) of ``sss`` a module lives in: ``sss.train.engine`` → ``train``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_runs_back_up_a_floor():
    """Rooms (sss's folders) stack as floors: a room imports only rooms below it, so the
    folder-level graph has no cycle (one module importing a room that imports its room back)."""
    modules = _modules()
    rooms: dict[str, set[str]] = {}
    for m, p in modules.items():
        rooms.setdefault(_room(m), set()).update(_room(d) for d in _imports(m, p, modules) if _room(d) != _room(m))
    floors: dict[str, int] = {}

    def floor(room: str, seen: tuple[str, ...] = ()) -> int:
        if room in seen:
            pytest.fail("import runs back up: " + " -> ".join([*seen[seen.index(room) :], room]))
        if room not in floors:
            floors[room] = 1 + max((floor(r, (*seen, room)) for r in rooms.get(room, ())), default=0)
        return floors[room]

    for room in sorted(rooms):
        floor(room)


def test_no_folder_of_one_file():
    folders = {p.parent for p in (SRC / "sss").rglob("*.py")} - {SRC / "sss"}
    lonely = [str(f.relative_to(SRC)) for f in folders if len([p for p in f.glob("*.py") if p.stem != "__init__"]) < 2]
    assert not lonely


def test_no_source_file_over_400_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in (SRC / "sss").rglob("*.py")}
    long = {path: n for path, n in sizes.items() if n > 400}
    assert not long


def test_registries_refuse_a_taken_name_unless_told_to_replace():
    block = get_kind("block")
    with pytest.raises(ValueError, match="'block' is already registered; pass replace=True"):
        register_kind(block)
    assert register_kind(block, replace=True) is block and "block" in kind_names()

    def resnet20() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="model 'resnet20' is already registered"):
        register_model(resnet20)
