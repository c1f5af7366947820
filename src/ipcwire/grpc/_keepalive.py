"""HTTP/2 keepalive pings for gRPC channels: a dead or frozen peer becomes ``ChannelBroken``.

A peer process that dies has its sockets closed by the kernel, and grpcio notices at once.
A peer that is frozen (stopped, swapped out, behind a dropped network path) answers nothing
and closes nothing: without pings a ``recv()`` waits for ever and a ``send()`` waits until the
flow-control window fills. So both sides ping after ``keepalive`` seconds without traffic and
drop the connection when the ping is not acknowledged within ``keepalive_timeout`` seconds;
every call on it then ends with UNAVAILABLE, which ipcwire reports as ``ChannelBroken``.

The grpcio knobs (grpc/doc/keepalive.md): ``grpc.keepalive_time_ms`` and
``grpc.keepalive_timeout_ms``; ``grpc.http2.max_pings_without_data = 0``, since by default
grpcio stops pinging after two pings without data, exactly when an idle channel needs them;
``grpc.keepalive_permit_without_calls`` so that an idle unary-mode client keeps its connection
checked; and on the server ``grpc.http2.min_ping_interval_without_data_ms`` (the minimum
interval between *received* pings, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS),
which must be at most the clients' interval, or the server answers their pings with GOAWAY
("too_many_pings").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire.errors import ConfigurationError

__all__ = ["DEFAULT_KEEPALIVE", "DEFAULT_KEEPALIVE_TIMEOUT", "KEEPALIVE_KW", "Keepalive"]

DEFAULT_KEEPALIVE: Final = 20.0  # seconds without traffic before a ping (as WebSocket)
DEFAULT_KEEPALIVE_TIMEOUT: Final = 20.0  # seconds a ping may stay unanswered
KEEPALIVE_KW: Final = ("keepalive", "keepalive_timeout")
# A server accepts client pings this often at most (or its own interval, if shorter); more
# often is a "ping strike" (grpcio's default is 5 minutes, which breaks 20 s keepalive).
_MIN_PEER_INTERVAL: Final = 1.0
_INT32_MAX: Final = 2**31 - 1


def _ms(seconds: float) -> int:
    return max(1, int(min(seconds * 1000, _INT32_MAX)))  # (inf: the longest grpcio takes)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """``interval``: seconds without traffic before a ping (None: no pings from this side);
    ``timeout``: seconds to wait for the acknowledgement before the connection is dropped."""

    interval: float | None = DEFAULT_KEEPALIVE
    timeout: float = DEFAULT_KEEPALIVE_TIMEOUT

    @classmethod
    def take(cls, endpoint: Endpoint, kw: dict[str, Any]) -> Keepalive:
        """Pop ``keepalive=`` and ``keepalive_timeout=`` from ``kw`` (the URL's query gives
        the defaults). ``keepalive=None`` or ``0`` turns this side's pings off.

        Raises:
            ConfigurationError: not a number, or negative.
        """
        q = endpoint.params
        raw_interval = kw.pop("keepalive", q.get("keepalive", DEFAULT_KEEPALIVE))
        raw_timeout = kw.pop("keepalive_timeout", q.get("keepalive_timeout"))
        try:
            interval = None if raw_interval in (None, "", "none") else float(raw_interval)
            timeout = DEFAULT_KEEPALIVE_TIMEOUT if raw_timeout is None else float(raw_timeout)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"keepalive={raw_interval!r}, keepalive_timeout={raw_timeout!r} for {endpoint}: "
                f"give seconds as numbers (keepalive=None turns pings off)",
                endpoint=endpoint.url,
            ) from None
        if (interval is not None and not interval >= 0) or not timeout > 0:  # (NaN too)
            raise ConfigurationError(
                f"keepalive={interval}, keepalive_timeout={timeout} for {endpoint}: the interval "
                f"must be 0 or more (0 or None: no pings) and the timeout more than 0",
                endpoint=endpoint.url,
            )
        return cls(interval or None, timeout)

    def _pings(self) -> list[tuple[str, Any]]:
        if self.interval is None:
            return [("grpc.keepalive_time_ms", _INT32_MAX)]
        return [
            ("grpc.keepalive_time_ms", _ms(self.interval)),
            ("grpc.keepalive_timeout_ms", _ms(self.timeout)),
            ("grpc.http2.ping_timeout_ms", _ms(self.timeout)),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    def client_options(self) -> list[tuple[str, Any]]:
        """The grpcio channel arguments of a client channel."""
        return [*self._pings(), ("grpc.keepalive_permit_without_calls", 1)]

    def server_options(self) -> list[tuple[str, Any]]:
        """The grpcio arguments of a server: its own pings, and how often it lets clients
        ping (clients that ping an idle connection more often are refused with GOAWAY)."""
        allow = _MIN_PEER_INTERVAL
        if self.interval is not None:
            allow = min(allow, self.interval)
        return [
            *self._pings(),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(allow)),
        ]
