"""The client's check of who the server is, before it sends anything (both drivers).

A listener's ``allow_uids`` protects the server from unknown clients; nothing protected a client
from an unknown server. Whoever binds a name first gets its clients: any user can take an
abstract name (``unix:@name`` has no file mode), and anyone who may create files in a
shared directory (``/tmp``) can create the socket path before the real server does. So
``connect(url, allow_uids=[...])`` asks the kernel who listens (SO_PEERCRED on the connected
socket reports the listener's credentials, taken at its listen()) and refuses a uid that is not
in it, before the hello or a token's proof leaves. For an abstract name, the default is the
client's own uid and root (root can read and write any process's memory, so refusing it would
protect nothing); a socket path is protected by its file mode and directory, and is not checked
unless ``allow_uids`` is given.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from ipcwire._procfs import describe_pid
from ipcwire.errors import PermissionDenied
from ipcwire.unix._namespaces import unmapped_uid
from ipcwire.unix._socket import UNSEEN, UnixAddress, peer_info

__all__ = ["check_server", "trusted_uids"]


def trusted_uids(addr: UnixAddress, allow_uids: Iterable[int] | None) -> frozenset[int] | None:
    """The uids a server at ``addr`` may run as (None: not checked)."""
    if allow_uids is not None:
        return frozenset(allow_uids)
    if addr.abstract is not None:
        return frozenset((os.getuid(), 0))
    return None


def check_server(
    sock: socket.socket,
    addr: UnixAddress,
    url: str,
    trusted: frozenset[int] | None,
    *,
    explicit: bool,
) -> None:
    """Refuse the server behind the connected ``sock`` unless its uid is in ``trusted``.

    Raises:
        PermissionDenied: naming the server's pid and uid, and the fix.
    """
    if trusted is None:
        return
    peer = peer_info(sock, str(addr))
    unmapped = unmapped_uid(peer.uid)
    if peer.uid is not None and peer.uid in trusted and (explicit or not unmapped):
        return
    uids = sorted(trusted)
    if explicit:
        rule = f"this client trusts only uid(s) {uids} (allow_uids=)"
    else:
        rule = (
            f"an abstract name's server must be your own uid or root ({uids}) unless "
            f"connect() is given allow_uids="
        )
    if peer.uid is None:
        raise PermissionDenied(
            f"refusing the server at {url}: {rule}, and this platform does not tell which uid "
            f"runs it (no SO_PEERCRED); nothing was sent to it",
            endpoint=url,
        )
    who = describe_pid(peer.pid) if peer.pid else UNSEEN
    if unmapped:
        # Every uid outside this user namespace's map shows as the overflow uid: trusting
        # it would trust them all (and, by default, it is not "your own uid").
        raise PermissionDenied(
            f"refusing the server at {url}: it is {who}, and its uid is not mapped into this "
            f"user namespace (the kernel shows it as {peer.uid}, the overflow uid), so who "
            f"runs it cannot be told; {rule}; nothing was sent to it. Map the server's uid "
            f"into this namespace (unshare --map-users, newuidmap, or the container's uid "
            f"map); do not allow uid {peer.uid}: that would trust every unmapped user",
            endpoint=url,
        )
    if addr.abstract is not None:
        squat = "Any user can take an abstract name before the real server does"
    else:
        squat = "Anyone who may create files in its directory can listen there first"
    raise PermissionDenied(
        f"refusing the server at {url}: it is {who} of uid {peer.uid}, and {rule}; nothing "
        f"was sent to it. {squat}. If uid "
        f"{peer.uid} runs the server you meant, pass allow_uids=[{peer.uid}] to connect(); "
        f"otherwise stop that process (its owner or root can) and start the real server",
        endpoint=url,
    )
