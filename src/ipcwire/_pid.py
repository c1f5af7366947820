"""This process's id, kept by a fork hook: what a channel checked on every message compares
its owner with (``os.getpid()`` is a system call each time; ``_pid.current`` an attribute).

A child made by a C-level ``fork()`` that bypasses ``os.fork`` (and so its hooks) and then
runs Python keeps its parent's value here; the drivers' slower paths still ask
``os.getpid()``.
"""

from __future__ import annotations

import os

__all__ = ["current"]

current = os.getpid()


def _after_fork_in_child() -> None:
    global current
    current = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
