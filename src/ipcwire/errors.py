"""Every error ipcwire raises, under one root.

::

    IpcwireError
    ├── ChannelClosed            you closed this channel (or listener); wins over Broken
    ├── ChannelBroken            the peer or the OS failed; the OSError is the __cause__
    │   ├── ConnectionRefused    nothing is listening there (also ConnectionRefusedError)
    │   └── ProgramNotFound      spawn(): the program is not there (also FileNotFoundError)
    ├── EndOfChannel             the peer closed cleanly; iteration ends
    ├── Timeout                  a deadline passed (also TimeoutError)
    ├── FrameTooLarge            a message over the size limit (size, limit; also ValueError)
    ├── ProtocolError
    │   ├── LocalProtocolError   this side broke the protocol (a bug or misuse here)
    │   ├── RemoteProtocolError  the peer broke the protocol (garbage, bad frames)
    │   └── HandshakeError       both sides speak it, but disagree (version, codec, framing)
    ├── AuthenticationFailed     token missing or wrong, on either side
    ├── PermissionDenied         the OS or an allow-list refused (also PermissionError)
    ├── AddressInUse             something already listens there (names the pid when known)
    ├── ResourceExhausted        out of file descriptors, memory, queue slots...
    ├── MechanismUnavailable     not on this platform, or a library or daemon is missing
    ├── InvalidURL               the URL cannot be understood (also ValueError)
    └── ConfigurationError       options that contradict each other or are unsafe (also ValueError)

Every message says what happened, at which endpoint, and what to do about it.
"""

from __future__ import annotations

import errno

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "ChannelBroken",
    "ChannelClosed",
    "ConfigurationError",
    "ConnectionRefused",
    "EndOfChannel",
    "FrameTooLarge",
    "HandshakeError",
    "InvalidURL",
    "IpcwireError",
    "LocalProtocolError",
    "MechanismUnavailable",
    "PermissionDenied",
    "ProgramNotFound",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceExhausted",
    "Timeout",
]


class IpcwireError(Exception):
    """Root of every error ipcwire raises.

    ``endpoint`` is the URL (or description) of the endpoint concerned, when known.
    """

    endpoint: str | None
    #: The errno an ``OSError`` subclass carries (``except OSError as e: e.errno == ...``);
    #: None for the others.
    _ERRNO: int | None = None

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        _set_errno(self)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[IpcwireError], message: str, state: dict[str, object]) -> IpcwireError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    _set_errno(err)
    return err


def _set_errno(err: IpcwireError) -> None:
    """OSError's own ``errno`` for the classes that have one (its message stays the text)."""
    if err._ERRNO is not None and isinstance(err, OSError):
        err.errno = err._ERRNO


class ChannelClosed(IpcwireError):
    """The channel (or listener) was closed by this side; it cannot be used any more."""


class ChannelBroken(IpcwireError):
    """The peer vanished or the OS failed the operation; the OSError is ``__cause__``."""


class ConnectionRefused(ChannelBroken, ConnectionRefusedError):
    """Nothing is listening at the address (ECONNREFUSED, or no socket file)."""

    _ERRNO = errno.ECONNREFUSED


class ProgramNotFound(ChannelBroken, FileNotFoundError):
    """``spawn()`` could not find the program (not in PATH, no such file, a missing ``#!``
    interpreter or ``cwd=``); the FileNotFoundError is ``__cause__``."""

    _ERRNO = errno.ENOENT


class EndOfChannel(IpcwireError):
    """The peer closed its end cleanly; no more messages will arrive. Ends iteration."""


class Timeout(IpcwireError, TimeoutError):
    """A deadline passed before the operation could complete."""


class FrameTooLarge(IpcwireError, ValueError):
    """A message is larger than the limit; it was not sent, or not delivered."""

    size: int
    limit: int
    #: A length prefix's 4 bytes, when the size was read from one (b"" otherwise): text
    #: there means the peer writes lines (see ``ServerHandshake.misframed``).
    header: bytes = b""

    def __init__(self, message: str, *, size: int, limit: int, endpoint: str | None = None):
        super().__init__(message, endpoint=endpoint)
        self.size = size
        self.limit = limit


class ProtocolError(IpcwireError):
    """The bytes on the wire do not follow the protocol."""


class LocalProtocolError(ProtocolError):
    """This side tried to break the protocol (for example sending on a read-only end)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: a malformed frame, undecodable payload, bad handshake."""


class HandshakeError(ProtocolError):
    """Both sides speak the protocol but disagree on version, codec or framing."""


class AuthenticationFailed(IpcwireError):
    """A token was missing or wrong (on either side), so the connection was refused."""


class PermissionDenied(IpcwireError, PermissionError):
    """The OS (file mode, owner) or an allow-list (``allow_uids``) refused access."""


class AddressInUse(IpcwireError):
    """Something already listens at this address. ``pid`` names its process when known."""

    pid: int | None

    def __init__(self, message: str, *, pid: int | None = None, endpoint: str | None = None):
        super().__init__(message, endpoint=endpoint)
        self.pid = pid


class ResourceExhausted(IpcwireError):
    """The OS ran out of something: file descriptors (EMFILE), memory, buffer or queue space."""


class MechanismUnavailable(IpcwireError):
    """The mechanism cannot work here: wrong platform, missing library or daemon.

    The message says how to make it available (``pip install 'ipcwire[web]'``...).
    """


class InvalidURL(IpcwireError, ValueError):
    """The URL could not be parsed, or names an unknown scheme."""


class ConfigurationError(IpcwireError, ValueError):
    """Options that contradict each other, exceed a limit, or would be unsafe."""
