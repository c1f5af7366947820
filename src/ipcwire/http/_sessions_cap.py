"""How many client channels (sessions) an HTTP listener keeps: ``max_sessions``.

A client that goes away without ``close()`` (killed after only making requests) never says
so: its session, its server channel (and ``serve()``'s handler thread or task for it) would
stay until ``session_timeout`` (300 s) passes. Clients that come and go faster than that
would grow the server without bound. So a listener keeps at most ``max_sessions``: a new
session past it ends the one idle longest, as the udp listener's ``max_peers`` does.

*Idle* means no request of its client is being handled (``in_flight == 0``: no call waiting
for its reply, no delivery waiting for room, no long poll, no open message stream; a client
killed during one of those closed its connection, which ends the request). Among those, the
victim is the one whose client was last heard from longest ago (``last_seen``: the one
``session_timeout`` would end first). Its application still receives the messages already
queued, then ``EndOfChannel`` naming ``max_sessions``; a waiting ``recv`` wakes; its
unfetched replies are dropped and later sends raise ``ChannelBroken``; its client's next
request gets 404 ``no_channel``. When every session is busy, none is ended: the new client
is refused (503 ``busy``), so the number of sessions never passes the cap.

Only the server's event loop calls :class:`SessionCap`.
"""

from __future__ import annotations

import logging
from typing import Final

from ipcwire.errors import ChannelBroken, EndOfChannel
from ipcwire.http._protocol import Problem
from ipcwire.http._session import Session
from ipcwire.options import count_limit

__all__ = ["DEFAULT_MAX_SESSIONS", "SessionCap", "max_sessions_option"]

log = logging.getLogger("ipcwire")

DEFAULT_MAX_SESSIONS: Final = 1024


def max_sessions_option(url: str, value: object) -> int | None:
    """``max_sessions=`` checked: a whole number of at least 1, or None (no limit).

    Raises:
        ConfigurationError: anything else (naming the endpoint).
    """
    return count_limit(
        value, name="max_sessions", what="client channels", default=DEFAULT_MAX_SESSIONS, url=url
    )


class SessionCap:
    """Makes room for a new session in a listener's table when it is full."""

    def __init__(self, url: str, limit: int | None) -> None:
        self.url = url
        self.limit = limit
        self.evicted = 0  # sessions ended early for want of room

    def make_room(self, sessions: dict[str, Session], now: float) -> None:
        """Before a new session goes into ``sessions``: if the table is full, end the
        idle session heard from longest ago (a scan, only when it is full).

        Raises:
            Problem: 503 ``busy``, the table is full and every session is busy.
        """
        limit = self.limit
        while limit is not None and len(sessions) >= limit:
            victim = min(
                (s for s in sessions.values() if s.in_flight == 0),
                key=lambda s: s.last_seen,
                default=None,
            )
            if victim is None:
                raise Problem(
                    503,
                    "busy",
                    f"{len(sessions)} channels are open, each with a request being handled "
                    f"(max_sessions={limit}); try again, or listen with a larger max_sessions=",
                )
            self._evict(sessions, victim, limit, now - victim.last_seen)

    def _evict(self, sessions: dict[str, Session], s: Session, limit: int, idle: float) -> None:
        del sessions[s.id]
        self.evicted += 1
        why = (
            f"the listener keeps at most max_sessions={limit} client channels, and a new "
            f"client came while this one's had been idle longest ({idle:.1f} s without a "
            f"request)"
        )
        fix = (
            "listen with a larger max_sessions= if that many clients are really active at "
            "once, or have clients close() their channels"
        )
        s.client_close(
            EndOfChannel(f"{self.url}: channel ended: {why}; {fix}", endpoint=self.url),
            ChannelBroken(
                f"cannot send to the client of {self.url}: its channel was ended: {why}; {fix}",
                endpoint=self.url,
            ),
        )
        if self.evicted == 1:
            log.warning(
                "%s: %d client channels, the most it keeps (max_sessions): a new "
                "client ended the channel idle longest (%.1f s); further ones are logged at "
                "debug level and counted in the listener's evicted. Listen with a larger "
                "max_sessions= (or a lower session_timeout=) if that many clients are really "
                "active",
                self.url,
                limit,
                idle,
            )
        else:
            log.debug("%s: channel %s... ended (max_sessions)", self.url, s.id[:12])
