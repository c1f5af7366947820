"""What a ``pipe:`` URL names: the inherited fds and the handshake role (both drivers).

The URLs come from :attr:`ipcwire.pipe.PipeEnd.url` (``_ends.url_for``) in the process that
made the pipe.
"""

from __future__ import annotations

import os
import stat

from ipcwire._core.url import Endpoint
from ipcwire.errors import InvalidURL

__all__ = ["parse_fds"]


def parse_fds(endpoint: Endpoint) -> tuple[int | None, int | None, str]:
    """The read fd, write fd and handshake role a ``pipe:`` URL names.

    Raises:
        InvalidURL: no fds, fds that are not numbers, or fds that are not open pipes.
    """
    params = endpoint.params
    role = params.get("role", "client")
    if role not in ("client", "server"):
        raise InvalidURL(f"{endpoint}: role must be client or server, not {role!r}")
    fds: list[int | None] = []
    for key in ("rfd", "wfd"):
        raw = params.get(key)
        if raw is None or raw == "":
            fds.append(None)
            continue
        try:
            fd = int(raw)
        except ValueError:
            raise InvalidURL(f"{endpoint}: {key}={raw!r} is not a file descriptor") from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            raise InvalidURL(
                f"{endpoint}: fd {fd} is not open in this process; pass it to the child with "
                f"pass_fds=end.fds (subprocess) or let multiprocessing pickle the PipeEnd"
            ) from None
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise InvalidURL(f"{endpoint}: fd {fd} is not a pipe")
        fds.append(fd)
    if fds[0] is None and fds[1] is None:
        raise InvalidURL(
            f"{endpoint} names no fds; pipe: URLs come from ipcwire.pipe.ends() "
            f"(PipeEnd.url), such as pipe:?rfd=5&wfd=8"
        )
    return fds[0], fds[1], role
