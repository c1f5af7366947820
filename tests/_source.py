"""Reading the package's own source in tests."""

from __future__ import annotations

import ast


def parse_python(source: str) -> ast.Module:
    """``ast.parse``, robust to a CPython 3.11 bug: the AST converter's recursion counter is
    shared by all threads, so a parse that overlaps one in another thread (CPython 3.11 parses
    source to place the carets of a traceback it formats, e.g. a background thread logging an
    exception) fails with "SystemError: AST constructor recursion depth mismatch". The
    overlap is rare and brief, so a second try succeeds; any other error is raised."""
    for _ in range(4):
        try:
            return ast.parse(source)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(source)
