"""macOS XPC, blocking driver: not implemented; says so (see ``ipcwire.xpc``)."""

from __future__ import annotations

from typing import Any, NoReturn

from ipcwire._core.url import Endpoint
from ipcwire.errors import MechanismUnavailable
from ipcwire.options import ChannelOptions
from ipcwire.xpc import UNAVAILABLE

__all__ = ["connect", "listen"]


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> NoReturn:
    """Raises:
    MechanismUnavailable: always (no XPC driver yet).
    """
    raise MechanismUnavailable(f"{endpoint}: {UNAVAILABLE}", endpoint=endpoint.url)


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> NoReturn:
    """Raises:
    MechanismUnavailable: always (no XPC driver yet).
    """
    raise MechanismUnavailable(f"{endpoint}: {UNAVAILABLE}", endpoint=endpoint.url)
