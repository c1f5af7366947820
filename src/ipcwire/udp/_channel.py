"""What both udp drivers' channels and listeners keep and decide without waiting.

The blocking driver (a blocking socket, waiting in poll() for timeouts; a listener's waiting
callers take turns reading for everyone) and the asyncio driver (a datagram transport whose
protocol queues what arrives) differ in how they wait and do I/O. The rest is here once: how an
address is written, the words of the errors, the options and addresses of ``connect``, the
counters and ``statistics()``, what a channel for one peer of a listener is
(:class:`PeerCore`), and the listener's table of peers: admitting a new one, forgetting one,
when the socket is no longer used by anyone (:class:`ListenerCore`), and when a silent peer's
channel ends (``idle_timeout``: UDP has no close, so a listener would otherwise keep every peer
that ever sent it a datagram, and ``serve()`` a thread or task for each), and which one ends
early when the table is full (``max_peers``: clients that come and go faster than
``idle_timeout`` would otherwise grow it without bound). Nothing here imports ``socket``: the
socket calls are in :mod:`ipcwire.udp._socket`.
"""

from __future__ import annotations

import abc
import errno
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from ipcwire._core.url import Endpoint, parse_url
from ipcwire._deadline import not_a_number
from ipcwire._oserror import translate
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.channel import closed_error as channel_closed_error
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    IpcwireError,
    LocalProtocolError,
)
from ipcwire.options import ChannelOptions, count_limit, reject_unknown
from ipcwire.udp._socket import DatagramFormat, UdpAddress, resolve

__all__ = [
    "ACCEPT_BACKLOG",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PEERS",
    "STALE_MAX",
    "Address",
    "ChannelCore",
    "ListenerCore",
    "PeerCore",
    "address_url",
    "closed_error",
    "connect_addresses",
    "idle_timeout_option",
    "max_peers_option",
    "not_connected_error",
    "options_for",
    "os_error",
    "send_address",
]

log = logging.getLogger("ipcwire")

Address = tuple[str, int]
ACCEPT_BACKLOG: Final = 128  # new peers waiting for accept() before dropping
# seconds a listener's peer may stay silent before its channel's recv() ends (as a NAT's
# UDP mapping does); a stale peer would otherwise be kept for ever
DEFAULT_IDLE_TIMEOUT: Final = 300.0
# peers a listener keeps at once; a new one past it ends the channel of the longest-silent
DEFAULT_MAX_PEERS: Final = 1024
# datagrams a connected channel's request() discards at most before sending: what the peer
# sent before the request (a duplicated or late reply to an earlier one) is not its reply
STALE_MAX: Final = 4096
_NO_LIMIT: Final = 1e9  # a longer idle_timeout is none (as _deadline.NO_LIMIT for timeouts)
_IDLE_STEPS: Final = 64  # see ListenerCore.idle_step


def address_url(addr: Any) -> str:
    """``udp://host:port`` of a socket address (``[host]`` for IPv6)."""
    host, port = addr[0], addr[1]
    return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"


def closed_error(url: str, channel: object | None = None) -> ChannelClosed:
    """``URL is closed``; with the channel, also why, when a request() closed it."""
    if channel is not None:
        return channel_closed_error(channel)
    return ChannelClosed(f"{url} is closed", endpoint=url)


def not_connected_error(url: str) -> LocalProtocolError:
    """``send`` on an unconnected socket (made with ``bind``)."""
    return LocalProtocolError(
        f"{url} is not connected to one peer; use send_to(obj, address)", endpoint=url
    )


def os_error(exc: OSError, url: str, doing: str) -> IpcwireError:
    """A socket's OSError in ipcwire's words: ECONNREFUSED (an ICMP "port unreachable" for an
    earlier datagram) leaves the channel usable; the rest as :func:`translate` says."""
    if exc.errno == errno.ECONNREFUSED:
        return ConnectionRefused(
            f"nothing listens at {url}: a datagram sent there was refused (ICMP port "
            f"unreachable); start the receiver. The channel stays usable",
            endpoint=url,
        )
    return translate(exc, url, doing)


def send_address(address: str) -> Address:
    """The (host, port) of ``udp://host:port`` for ``send_to``.

    Raises:
        InvalidURL: no host or port, or a host that does not resolve.
    """
    a = resolve(parse_url(address), listening=False)
    return (a.host, a.port)


def options_for(url: str, options: dict[str, Any]) -> ChannelOptions:
    """The common options for a channel at ``url``; anything else is refused.

    Raises:
        ConfigurationError: a bad value or an unknown option (a typo is not ignored).
    """
    endpoint = parse_url(url)
    kw = dict(options)
    opts = ChannelOptions.build(endpoint, kw)
    reject_unknown(kw, endpoint, ())
    return opts


def connect_addresses(
    endpoint: Endpoint, bind: str | None, kw: dict[str, Any]
) -> tuple[UdpAddress, UdpAddress]:
    """The peer's address and where this end binds, for ``connect``: ``bind`` if given, else a
    free port on loopback for a loopback peer, or on every address of the peer's family.

    Raises:
        InvalidURL: no host or port. ConfigurationError: unknown options.
    """
    kw.pop("timeout", None)  # nothing to wait for: UDP has no connection step
    reject_unknown(kw, endpoint, ("timeout", "bind"))
    addr = resolve(endpoint, listening=False)
    if bind is not None:
        local = resolve(parse_url(bind), listening=True)
        if local.family != addr.family:
            ip = ("IPv6", "IPv4") if ":" in local.host else ("IPv4", "IPv6")
            raise ConfigurationError(
                f"{endpoint.url}: bind={bind!r} is an {ip[0]} address and the peer an {ip[1]} "
                f"one; bind an address of the peer's family"
            )
        return addr, local
    v6 = ":" in addr.host
    if addr.host in ("127.0.0.1", "::1") or addr.host.startswith("127."):
        return addr, UdpAddress("::1" if v6 else "127.0.0.1", 0)
    return addr, UdpAddress("::" if v6 else "0.0.0.0", 0)  # noqa: S104


def _take(
    endpoint: Endpoint, kw: dict[str, Any], name: str, default: object, read: Callable[[str], Any]
) -> tuple[object, object]:
    """Take ``name=`` out of a listener's options: (what was given, its value). The URL's
    ``?name=`` is the default, text: "" or "none" is None, ``read`` reads the rest (text it
    cannot read stays text, for the caller's error)."""
    query = endpoint.params.get(name)
    raw: object = kw.pop(name, default if query is None else query)
    if query is None or raw is not query:
        return raw, raw
    if query.lower() in ("", "none"):
        return raw, None
    try:
        return raw, read(query)
    except ValueError:
        return raw, query


def idle_timeout_option(endpoint: Endpoint, kw: dict[str, Any]) -> float | None:
    """Take ``idle_timeout=`` out of a listener's options (the URL's ``?idle_timeout=`` is the
    default, where ``none`` is None) and refuse any other option left.

    Raises:
        ConfigurationError: not a number of seconds over 0, NaN, infinite; or unknown options.
    """
    raw, value = _take(endpoint, kw, "idle_timeout", DEFAULT_IDLE_TIMEOUT, float)
    reject_unknown(kw, endpoint, ("idle_timeout", "max_peers"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"idle_timeout={raw!r} for {endpoint.url}: give the seconds a peer may stay silent "
            f"before its channel ends, a finite number over 0 (default "
            f"{DEFAULT_IDLE_TIMEOUT:g}), or None to keep silent peers",
            endpoint=endpoint.url,
        )
    return None if value > _NO_LIMIT else float(value)


def max_peers_option(endpoint: Endpoint, kw: dict[str, Any]) -> int | None:
    """Take ``max_peers=`` out of a listener's options (the URL's ``?max_peers=`` is the
    default, where ``none`` is None).

    Raises:
        ConfigurationError: not a whole number of at least 1, or None.
    """
    raw, value = _take(endpoint, kw, "max_peers", DEFAULT_MAX_PEERS, int)
    return count_limit(
        value, name="max_peers", what="peers", default=DEFAULT_MAX_PEERS, url=endpoint.url,
        shown=raw,
    )  # fmt: skip


class _Counters:
    """The counters of a channel; the drivers add to them where they send and receive."""

    def __init__(self) -> None:
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    def _statistics(self, buffered: int, dropped: int) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            buffered_bytes=buffered,
            dropped=dropped,
        )


class ChannelCore(_Counters):
    """A connected or unconnected UDP channel (``connect``, ``bind``, ``pair``), without the
    socket. Subclasses add the I/O and ``local_address``."""

    def __init__(self, fmt: DatagramFormat, url: str, peer_addr: Address | None) -> None:
        super().__init__()
        self.url = url
        self._fmt = fmt
        fmt.url = url  # the bound URL (the real port when the URL said 0), in errors
        self._peer_addr = peer_addr

    @property
    @abc.abstractmethod
    def local_address(self) -> Address:
        """The (host, port) this socket is bound to."""

    @property
    def local_url(self) -> str:
        """``udp://host:port`` of this socket (where peers send to)."""
        return address_url(self.local_address)

    @property
    def peer(self) -> PeerInfo | None:
        return None if self._peer_addr is None else PeerInfo(address=address_url(self._peer_addr))


L = TypeVar("L", bound="ListenerCore[Any]")


class PeerCore(_Counters, Generic[L]):
    """One peer of a listener: its datagrams, and replies to its address.

    Its activity (``_active``, ``time.monotonic()``) is the last datagram from the peer or
    message sent to it; the drivers set it. A ``recv`` that finds nothing queued waits at most
    until the peer has been inactive for the listener's ``idle_timeout``; then the channel
    ends (:meth:`_end`): EndOfChannel, and the listener no longer routes the address to it.
    """

    def __init__(self, listener: L, addr: Address) -> None:
        super().__init__()
        self._listener = listener
        self.addr = addr
        self.url = f"{listener.url} <- {address_url(addr)}"
        self._closed = False
        self._active = time.monotonic()  # admitted: its first datagram came
        self._using = True  # holds one of the listener's uses of the socket (until closed)
        self._ended: EndOfChannel | None = None  # idle: what every recv raises from now on

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=address_url(self.addr))

    def _idle_end(self, deadline: float | None) -> float | None:
        """For a ``recv`` that found nothing queued: the moment the peer will have been
        inactive for ``idle_timeout``, if it comes before the recv's ``deadline`` (None: the
        recv waits until its deadline). Once that moment has passed, the caller ends the
        channel (:meth:`_end`).

        Raises:
            EndOfChannel: the channel ended already.
            ConfigurationError: ``timeout=nan`` (a NaN deadline).
        """
        if self._ended is not None:
            raise self._ended
        if deadline is not None and math.isnan(deadline):
            raise not_a_number(self.url)
        idle = self._listener.idle_timeout
        if idle is None:
            return None
        end = self._active + idle
        return None if deadline is not None and deadline <= end else end

    def _end(self) -> EndOfChannel:
        """The peer has been inactive for ``idle_timeout``: the listener forgets its address (a
        datagram from there is a new peer, for ``accept()``); the error every ``recv`` raises
        from now on. The channel still sends to the address, and uses the socket until it is
        closed."""
        if self._ended is None:
            lst = self._listener
            if lst._peers.get(self.addr) is self:
                del lst._peers[self.addr]
            idle = f"{lst.idle_timeout:g}"
            self._ended = EndOfChannel(
                f"{self.url}: nothing came from or went to the peer for {idle} s "
                f"(idle_timeout={idle}); UDP has no close, so a silent peer ends here. If it "
                f"sends again it comes back through accept() as a new channel; raise "
                f"idle_timeout= (or None) to keep silent peers",
                endpoint=self.url,
            )
            log.debug("%s", self._ended)
        return self._ended

    def _evict(self, max_peers: int) -> None:
        """The listener is full and a new peer came: this one, the longest silent, ends
        (its next ``recv`` with nothing queued raises EndOfChannel) and is forgotten."""
        lst = self._listener
        del lst._peers[self.addr]
        silent = time.monotonic() - self._active
        self._ended = EndOfChannel(
            f"{self.url}: ended after {silent:.1f} s of silence to make room for a new peer: "
            f"the listener keeps at most max_peers={max_peers} peers, and this one had been "
            f"silent longest (UDP has no close, so peers that left are only known by their "
            f"silence). If it sends again it comes back through accept() as a new channel; "
            f"raise max_peers= (or lower idle_timeout=) if that many peers are really active",
            endpoint=self.url,
        )
        log.debug("%s", self._ended)


P = TypeVar("P", bound=PeerCore[Any])


class ListenerCore(Generic[P]):
    """A bound socket's table of peers; a channel per peer address.

    The socket is used by the listener and by every peer channel not closed yet (including
    one that ended idle and is no longer in the table): it closes when :meth:`_release` or
    :meth:`_stop` says nobody uses it any more.
    """

    def __init__(
        self,
        options: ChannelOptions,
        url: str,
        family: Any,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_peers: int | None = DEFAULT_MAX_PEERS,
    ) -> None:
        self.url = url
        self.idle_timeout = idle_timeout
        self.max_peers = max_peers
        # the blocking driver's reader waits for idle time in steps of this (rounded down: a
        # recv right after some activity waits as long as the last one), the last step
        # exactly
        self.idle_step = (idle_timeout or 0.0) / _IDLE_STEPS
        self._fmt = DatagramFormat(options, family)
        self._fmt.url = url  # the bound URL (the real port when the URL said 0), in errors
        self._peers: dict[Address, P] = {}
        self._closed = False
        self.dropped = 0  # datagrams from new peers while the accept backlog was full
        self.evicted = 0  # peers ended early for want of room (max_peers)
        self._full = False  # the backlog is full (logged once until a peer is admitted)
        self._users = 1  # the listener, plus each open peer channel: the socket closes at 0

    @abc.abstractmethod
    def _new_peer(self, addr: Address) -> P:
        """A channel for the peer at ``addr``."""

    @abc.abstractmethod
    def _wake_peer(self, ch: P) -> None:
        """Wake a ``recv`` waiting on ``ch`` (it ended: :meth:`_make_room`)."""

    def _admit(self, addr: Address, waiting: int) -> P | None:
        """A channel for a new peer, whose first datagram came in; None (and the datagram
        counted in ``dropped``) when the listener is closed or ``waiting`` (peers not accepted
        yet) is at :data:`ACCEPT_BACKLOG`."""
        if self._closed or waiting >= ACCEPT_BACKLOG:
            self.dropped += 1
            if not self._closed and not self._full:
                self._full = True
                log.warning(
                    "%s: %d new peers are waiting for accept(); datagrams from "
                    "further new peers are dropped (counted in the listener's dropped) until "
                    "accept() takes some",
                    self.url,
                    waiting,
                )
            return None
        self._full = False
        if self.max_peers is not None and len(self._peers) >= self.max_peers:
            self._make_room(self.max_peers)
        ch = self._peers[addr] = self._new_peer(addr)
        self._users += 1
        return ch

    def _make_room(self, max_peers: int) -> None:
        """End the channel of the peer silent longest, for a new one (a scan of the table,
        only when it is full)."""
        victim = min(self._peers.values(), key=lambda p: p._active)
        victim._evict(max_peers)
        self.evicted += 1
        self._wake_peer(victim)
        if self.evicted == 1:
            log.warning(
                "%s: %d peers, the most it keeps (max_peers): a new peer ended the "
                "channel of the one silent longest (%.1f s); further ones are logged at debug "
                "level and counted in the listener's evicted. Raise max_peers= or lower "
                "idle_timeout= if that many peers are really active",
                self.url,
                max_peers,
                time.monotonic() - victim._active,
            )

    def _release(self, ch: P) -> bool:
        """Forget a closed peer channel (once; not a newer peer at its address, after it ended
        idle); True if nobody uses the socket any more."""
        if not ch._using:
            return False
        ch._using = False
        if self._peers.get(ch.addr) is ch:
            del self._peers[ch.addr]
        self._users -= 1
        return self._users == 0

    def _stop(self) -> bool:
        """The listener let go of the socket (``close()`` set ``_closed`` and closed the peers
        nobody accepted; the others go on); True if nobody uses it any more."""
        self._users -= 1
        return self._users == 0
