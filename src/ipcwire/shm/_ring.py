"""Which ring implementation runs: the C extension, or the pure-Python fallback.

``IMPLEMENTATION`` is ``"c"`` when ``ipcwire._ext._native`` imports, ``"python"`` otherwise
(the package was installed with ``IPCWIRE_NO_EXT=1``, or without a compiler). Setting the
environment variable ``IPCWIRE_SHM_IMPL=python`` forces the fallback (tests use it to prove
that a C end and a Python end interoperate).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from ipcwire.shm import _pyring

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["IMPLEMENTATION", "RingEnd", "available", "init_ring", "make_ring"]


class RingEnd(Protocol):
    """One end of a ring: what the C ``Ring`` and the Python ``PyRing`` both provide."""

    @property
    def capacity(self) -> int: ...
    @property
    def max_record(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def messages(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def broken(self) -> bool: ...

    policy: str
    spin_ns: int
    max_message: int
    max_send: int
    # called with the error of the peer's end (went away, closed): returns the one to raise
    on_end: Callable[[Exception], Exception] | None

    def send(self, data: Buffer, timeout: float | None = None) -> None: ...
    def send_many(self, items: Sequence[Buffer], timeout: float | None = None) -> None: ...
    def send_some(self, data: Buffer, offset: int = 0) -> int: ...
    def loan(self, size: int, timeout: float | None = None) -> memoryview: ...
    def commit(self, size: int | None = None) -> None: ...
    def abort(self) -> None: ...
    def recv(self, timeout: float | None = None) -> bytes: ...
    def recv_many(
        self, max_messages: int | None = 0, timeout: float | None = None
    ) -> list[bytes]: ...
    def view(self, timeout: float | None = None) -> memoryview: ...
    def release_view(self) -> None: ...
    def close(self) -> None: ...
    def abandon(self) -> None: ...
    def arm(self, size: int | None = 0) -> bool: ...
    def disarm(self) -> None: ...


def _load_native() -> Any:
    if os.environ.get("IPCWIRE_SHM_IMPL", "").lower() == "python":
        return None
    try:
        from ipcwire._ext import _native
    except ImportError:
        return None
    return _native


_native: Any = _load_native()
IMPLEMENTATION: Final[str] = "c" if _native is not None else "python"


def available() -> tuple[str, ...]:
    """The implementations this process can use, preferred first."""
    return ("c", "python") if _native is not None else ("python",)


def _pick(impl: str | None) -> str:
    impl = impl or IMPLEMENTATION
    if impl not in available():
        raise ValueError(f"ring implementation {impl!r} is not available here: {available()}")
    return impl


def make_ring(buffer: Buffer, role: str, *, impl: str | None = None, **kw: Any) -> RingEnd:
    """Attach one end of the ring in ``buffer`` (see ``Ring`` in ``_native.pyi``).

    Raises:
        RemoteProtocolError: the header is not a valid ring (magic, version, capacity).
    """
    if _pick(impl) == "c":
        ring: RingEnd = _native.Ring(buffer, role, **kw)
        return ring
    return _pyring.PyRing(buffer, role, **kw)


def init_ring(buffer: Buffer, capacity: int, offset: int = 0, *, impl: str | None = None) -> None:
    """Write a fresh ring header into ``buffer`` at ``offset``; both implementations write
    the same bytes."""
    if _pick(impl) == "c":
        _native.init_ring(buffer, capacity, offset)
    else:
        _pyring.init_ring(buffer, capacity, offset)
