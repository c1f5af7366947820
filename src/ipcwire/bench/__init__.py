"""``ipcwire bench``: every mechanism measured here, side by side with raw Python and peers.

Programmatic use::

    from ipcwire.bench import QUICK, build_document, run
    doc = build_document(run(QUICK), command_line=["my-script"])

Adding a row (a raw baseline or a peer for a new mechanism): define a :class:`Contender`
in an importable module and :func:`register_contender` it; ipcwire's own mechanisms are
measured from the registry without any change here. See docs/benchmarks.md.
"""

from __future__ import annotations

from ipcwire.bench.analysis import SCHEMA_VERSION, build_document
from ipcwire.bench.contender import Contender, Task, register_contender, unregister_contender
from ipcwire.bench.payload import Pool, VerificationError
from ipcwire.bench.runner import FULL, QUICK, BenchConfig, RunOutput, run
from ipcwire.bench.schema import SCHEMA, validate

__all__ = [
    "FULL",
    "QUICK",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchConfig",
    "Contender",
    "Pool",
    "RunOutput",
    "Task",
    "VerificationError",
    "build_document",
    "register_contender",
    "run",
    "unregister_contender",
    "validate",
]
