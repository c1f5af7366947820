"""The docs stay true: generated tables current, every error and mechanism documented."""

from __future__ import annotations

import re
from pathlib import Path

import ipcwire.errors
from ipcwire._docs import END, START, feature_matrix
from ipcwire.registry import mechanisms

ROOT = Path(__file__).parent.parent


def test_feature_matrix_is_generated_from_the_registry() -> None:
    text = (ROOT / "docs/mechanisms/README.md").read_text()
    block = text[text.index(START) + len(START) : text.index(END)].strip()
    assert block == feature_matrix(), "run: python -m ipcwire._docs"


def test_every_error_is_in_the_reference() -> None:
    text = (ROOT / "docs/errors.md").read_text()
    table = text[text.index("| error |") :]
    for name in ipcwire.errors.__all__:
        if name not in ("IpcwireError", "ProtocolError"):  # the roots, shown in the tree
            assert f"| `{name}` |" in table, f"{name} has no row in docs/errors.md"
        assert re.search(rf"\b{name}\b", text), name


def test_every_mechanism_has_a_page() -> None:
    for spec in mechanisms():
        assert spec.docs, spec.scheme
        assert (ROOT / spec.docs).is_file(), f"{spec.scheme}: {spec.docs} is missing"


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("```")[1]
    assert "./dev ipcwire bench --quick" in head
    assert "./dev test" in head
    assert "./dev test" in (ROOT / ".ci/run").read_text()
