"""docs/choose.md renders the whole rule table; it must match the rules data."""

from __future__ import annotations

from pathlib import Path

from ipcwire.advisor.docs import END, START, decision_tree
from ipcwire.advisor.rules import RULES

PAGE = Path(__file__).parents[2] / "docs" / "choose.md"


def test_decision_tree_in_the_docs_is_current() -> None:
    text = PAGE.read_text()
    block = text[text.index(START) + len(START) : text.index(END)].strip()
    assert block == decision_tree().strip(), "run: python -m ipcwire.advisor.docs"


def test_every_rule_appears_in_the_tree() -> None:
    tree = decision_tree()
    for rule in RULES:
        assert f"({rule.id}: {rule.because})" in tree
    assert tree.count("flowchart TD") == 1
