"""The core stays I/O-free: no module it is made of imports an I/O or threading module."""

from __future__ import annotations

import ast
from pathlib import Path

from tests._source import parse_python

import ipcwire

FORBIDDEN = {"socket", "asyncio", "threading", "selectors", "select", "ssl", "subprocess"}
PKG = Path(ipcwire.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = parse_python(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _module_path(name: str) -> Path | None:
    if not name.startswith("ipcwire"):
        return None
    rel = Path(*name.split(".")[1:])
    for candidate in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_core_imports_no_io_modules_even_indirectly() -> None:
    todo = list((PKG / "_core").glob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            assert not name.startswith("ipcwire.") or name.startswith(
                ("ipcwire._core", "ipcwire.errors")
            ), f"{path.name} imports {name}, which is outside the I/O-free core"
            dep = _module_path(name)
            if dep is not None:
                todo.append(dep)
    assert len(seen) >= 6  # the check really walked the core
