"""The asyncio drivers share only the folder's I/O-free modules with the blocking drivers: no
``src/ipcwire/*/aio.py`` imports its folder's ``blocking`` module, in any form (which would
load threading code into asyncio programs and tie the two drivers together). Read with
``ast``, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tests._source import parse_python

import ipcwire

PKG = Path(ipcwire.__file__).parent


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a ``from ... import`` names, relative forms resolved against ``package``."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def blocking_imports(source: str, package: str) -> list[str]:
    """Where ``source`` (a module of ``package``) imports ``package.blocking``: line and code."""
    target = f"{package}.blocking"
    found = []
    for node in ast.walk(parse_python(source)):
        if isinstance(node, ast.Import):
            hit = any(a.name == target or a.name.startswith(target + ".") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            hit = (
                module == target
                or module.startswith(target + ".")
                or (module == package and any(a.name == "blocking" for a in node.names))
            )
        else:
            continue
        if hit:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "from ipcwire.fifo.blocking import DEFAULT_TIMEOUT",
        "from ipcwire.fifo import blocking",
        "from ipcwire.fifo import _path, blocking as b",
        "from .blocking import DEFAULT_TIMEOUT",
        "from . import blocking",
        "from ..fifo.blocking import connect",
        "import ipcwire.fifo.blocking",
        "import ipcwire.fifo.blocking as b",
        "def f():\n    from ipcwire.fifo.blocking import connect\n",
        "if TYPE_CHECKING:\n    from ipcwire.fifo.blocking import FifoListener\n",
    ],
)
def test_every_form_of_importing_the_blocking_sibling_is_seen(source: str) -> None:
    assert blocking_imports(source, "ipcwire.fifo")


@pytest.mark.parametrize(
    "source",
    [
        "from ipcwire.fifo._path import resolve",
        "from ipcwire.fifo import _path",
        "from ipcwire.pipe.blocking import connect",  # another folder's driver: not this rule
        "from ipcwire.pipe import blocking",
        "from . import _path",
        "import ipcwire.fifo",
        "from ipcwire.fifo.blocking_helpers import x",
    ],
)
def test_other_imports_are_not_taken_for_it(source: str) -> None:
    assert blocking_imports(source, "ipcwire.fifo") == []


def test_no_asyncio_driver_imports_its_blocking_sibling() -> None:
    drivers = sorted(PKG.glob("*/aio.py"))
    assert len(drivers) >= 10  # the glob really found the drivers
    offenders = {}
    for path in drivers:
        package = f"ipcwire.{path.parent.name}"
        found = blocking_imports(path.read_text(), package)
        if found:
            offenders[str(path.relative_to(PKG.parent))] = found
    assert offenders == {}, (
        "asyncio drivers importing their blocking sibling (move what both need into an "
        f"I/O-free module of the folder): {offenders}"
    )
