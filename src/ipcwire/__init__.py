"""ipcwire: every way processes talk on one computer, through one API.

Blocking::

    with ipcwire.listen("unix:///run/user/1000/app.sock", codec="json") as server:
        with server.accept(timeout=5) as ch:
            ch.send({"echo": ch.recv(timeout=5)})

    with ipcwire.connect("unix:///run/user/1000/app.sock", codec="json") as ch:
        reply = ch.request({"op": "ping"}, timeout=2)

asyncio: the same names in :mod:`ipcwire.aio`, with ``await``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipcwire._api import connect, listen
from ipcwire._core.codecs import Codec
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo
from ipcwire.errors import (
    AddressInUse,
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    HandshakeError,
    InvalidURL,
    IpcwireError,
    LocalProtocolError,
    MechanismUnavailable,
    PermissionDenied,
    ProgramNotFound,
    ProtocolError,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.registry import Capabilities, MechanismSpec, lookup, mechanisms
from ipcwire.signals import graceful_shutdown, terminate
from ipcwire.spawn import spawn, stdio

if TYPE_CHECKING:  # at run time, imported on first use (__getattr__ below)
    from ipcwire import aio as aio
    from ipcwire import bench as bench
    from ipcwire import doctor as doctor
    from ipcwire import testing as testing

__version__ = "0.1.0"

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "Capabilities",
    "Channel",
    "ChannelBroken",
    "ChannelClosed",
    "ChannelStatistics",
    "Codec",
    "ConfigurationError",
    "ConnectionRefused",
    "EndOfChannel",
    "FrameTooLarge",
    "HandshakeError",
    "InvalidURL",
    "IpcwireError",
    "Listener",
    "LocalProtocolError",
    "MechanismSpec",
    "MechanismUnavailable",
    "PeerInfo",
    "PermissionDenied",
    "ProgramNotFound",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceExhausted",
    "Timeout",
    "__version__",
    "connect",
    "graceful_shutdown",
    "listen",
    "lookup",
    "mechanisms",
    "spawn",
    "stdio",
    "terminate",
]


_LAZY = frozenset({"aio", "bench", "doctor", "testing"})


def __getattr__(name: str) -> object:
    """``ipcwire.aio`` (and ``doctor``, ``testing``, ``bench``) after a plain ``import
    ipcwire``, as the docs write them, imported on first use: a blocking program does not
    import asyncio."""
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"ipcwire.{name}")
    raise AttributeError(f"module 'ipcwire' has no attribute {name!r}")
