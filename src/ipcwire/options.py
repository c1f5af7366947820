"""Options every channel shares, gathered from keyword arguments and the URL's query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.codecs import Codec, get_codec
from ipcwire._core.framing import DEFAULT_MAX_FRAME, FRAMINGS, MAX_LENGTH_PREFIX
from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import NO_LIMIT
from ipcwire.errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_REQUEST_TIMEOUT",
    "ChannelOptions",
]

DEFAULT_CONNECT_TIMEOUT: Final = 10.0  # connect() of every mechanism, unless timeout= is given
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

_COMMON: Final = ("codec", "framing", "max_frame", "token", "handshake_timeout")


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """The options of one endpoint, validated.

    ``codec``: "bytes" (default), "json", "msgpack", "pickle" (needs ``token``), or a Codec.
    ``framing``: "length" (default) or "ndjson" (which defaults the codec to json).
    ``max_frame``: the largest message this side accepts, in bytes (default 64 MiB).
    ``token``: shared secret; both sides prove they know it. Through a handshake (unix,
    tcp, shm, mq, pipe and spawn, fifo with ``reply=``, ws between ipcwire peers) only HMAC
    proofs cross the wire; http, sse and grpc send it as a bearer header (use TLS beyond
    loopback or a private socket).
    """

    url: str
    codec: Codec
    framing: str = "length"
    max_frame: int = DEFAULT_MAX_FRAME
    token: bytes | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    @classmethod
    def build(cls, endpoint: Endpoint, kwargs: dict[str, Any]) -> ChannelOptions:
        """Take the common options out of ``kwargs`` (leaving the mechanism's own there),
        with the URL's query parameters as defaults.

        Raises:
            ConfigurationError: a bad value, or pickle without a token.
        """
        q = endpoint.params
        framing = str(kwargs.pop("framing", q.get("framing", "length")))
        if framing not in FRAMINGS:
            raise ConfigurationError(
                f"unknown framing {framing!r} for {endpoint}; use one of {', '.join(FRAMINGS)}",
                endpoint=endpoint.url,
            )
        default_codec = "json" if framing == "ndjson" else "bytes"
        codec_arg = kwargs.pop("codec", None) or q.get("codec", default_codec)
        token = kwargs.pop("token", None)
        if token is None:  # (token="" is refused below, never taken for no token)
            token = q.get("token")
        if isinstance(token, str):
            token = token.encode()
        if token is not None and not isinstance(token, bytes):
            raise ConfigurationError(
                f"token for {endpoint} must be str or bytes, not {type(token).__name__}",
                endpoint=endpoint.url,
            )
        if token == b"":
            raise ConfigurationError(
                f"token for {endpoint} must not be empty: give the shared secret, or no token",
                endpoint=endpoint.url,
            )
        raw_max = kwargs.pop("max_frame", q.get("max_frame", DEFAULT_MAX_FRAME))
        max_frame = _whole_number(raw_max)
        if max_frame is None or not 0 < max_frame <= MAX_LENGTH_PREFIX:
            raise ConfigurationError(
                f"max_frame={raw_max!r} for {endpoint}: give the largest message accepted, in "
                f"bytes: a whole number from 1 to {MAX_LENGTH_PREFIX} (default "
                f"{DEFAULT_MAX_FRAME}, 64 MiB)",
                endpoint=endpoint.url,
            )
        raw_hs = kwargs.pop(
            "handshake_timeout", q.get("handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)
        )
        handshake_timeout = seconds_option(
            raw_hs, "handshake_timeout", endpoint.url, f"default {DEFAULT_HANDSHAKE_TIMEOUT:g} s"
        )
        codec = get_codec(codec_arg, authenticated=token is not None, endpoint=endpoint.url)
        if "mode" in kwargs:  # the mechanism's own option, but one rule for all of them
            kwargs["mode"] = file_mode(kwargs["mode"], endpoint.url)
        opts = cls(
            url=endpoint.url,
            codec=codec,
            framing=framing,
            max_frame=max_frame,
            token=token,
            handshake_timeout=handshake_timeout,
        )
        opts.wire()  # validates the codec/framing pair now, not at first send
        return opts

    def wire(self) -> WireFormat:
        """A fresh WireFormat (its send limit is then set from the handshake)."""
        return WireFormat(self.codec, self.framing, self.max_frame, endpoint=self.url)

    def client_handshake(
        self, framing: str | None = None, *, goodbye: bool = False
    ) -> ClientHandshake:
        """A fresh client handshake; ``framing`` overrides the channel's (``"length"`` on
        mechanisms that keep message boundaries, where framing does not apply). ``goodbye``:
        a byte-stream driver that ends its channels with a goodbye frame offers it."""
        return ClientHandshake(
            codec=self.codec.name,
            framing=framing or self.framing,
            max_frame=self.max_frame,
            token=self.token,
            endpoint=self.url,
            goodbye=goodbye,
        )

    def server_handshake(
        self, framing: str | None = None, *, goodbye: bool = False
    ) -> ServerHandshake:
        """The listening side's; ``framing`` and ``goodbye`` as for :meth:`client_handshake`."""
        return ServerHandshake(
            codec=self.codec.name,
            framing=framing or self.framing,
            max_frame=self.max_frame,
            token=self.token,
            endpoint=self.url,
            goodbye=goodbye,
        )


def _whole_number(value: object) -> int | None:
    """An int from an int, a whole float or decimal digits (a URL's query gives text); None
    otherwise (a bool, 1.5, "big")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # (1e6, 2.0**20)
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None


def _seconds(value: object) -> float | None:
    """A number of seconds as given: an int, a float or, from a URL's query, its text (None:
    none of those, a bool included); not checked further."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def seconds_option(value: object, name: str, url: str, default: str) -> float:
    """An option that is a number of seconds (``handshake_timeout=``, ``reconnect=``), 0 or
    more: an int, a float or, from a URL's query, its text; over NO_LIMIT is NO_LIMIT.

    Raises:
        ConfigurationError: anything else (negative, NaN, "soon", a bool), naming the option,
            the value, the endpoint and what is accepted.
    """
    seconds = _seconds(value)
    if seconds is None or not seconds >= 0:  # (NaN too)
        raise ConfigurationError(
            f"{name}={value!r} for {url}: give a number of seconds, 0 or more ({default})",
            endpoint=url,
        )
    return min(seconds, NO_LIMIT)


_YES: Final = frozenset({"1", "true", "yes", "on"})
_NO: Final = frozenset({"0", "false", "no", "off"})


def flag_option(value: object, name: str, url: str) -> bool:
    """An option that is on or off (``fsync=``, ``text=``): a bool, 0 or 1, or from a URL's
    query true/false, yes/no, on/off, 1/0 (any case).

    Raises:
        ConfigurationError: anything else (``?fsync=maybe`` was taken for on), naming the
            option, the value, the endpoint and what is accepted.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and (word := value.strip().lower()) in _YES | _NO:
        return word in _YES
    raise ConfigurationError(
        f"{name}={value!r} for {url}: give true or false (in a URL: true/false, yes/no, on/off "
        f"or 1/0)",
        endpoint=url,
    )


def interval_option(value: object, name: str, url: str, default: str) -> float:
    """An option that is how often something is done, in seconds (``poll_interval=``,
    ``reap_interval=``): more than 0 and finite (an infinite interval never does it), an int,
    a float or, from a URL's query, its text.

    Raises:
        ConfigurationError: anything else (0, negative, NaN, infinity, "often", a bool).
    """
    seconds = _seconds(value)
    if seconds is None or not 0 < seconds <= NO_LIMIT:  # (NaN and infinity too)
        raise ConfigurationError(
            f"{name}={value!r} for {url}: give the seconds between times, more than 0 and "
            f"finite ({default})",
            endpoint=url,
        )
    return seconds


def connect_timeout(timeout: object, url: str) -> float:
    """``connect(timeout=)`` checked: a number of seconds, 0 or more; one over 1e9 s
    (``math.inf`` included) is 1e9 s, which every wait accepts.

    Raises:
        ConfigurationError: NaN, negative, or not a number.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(
            f"timeout={timeout!r} for {url}: give a number of seconds (or leave it out for "
            f"{DEFAULT_CONNECT_TIMEOUT:g} s)",
            endpoint=url,
        )
    if not timeout >= 0:  # (NaN too)
        raise ConfigurationError(
            f"timeout={timeout!r} for {url}: must be 0 or more seconds", endpoint=url
        )
    return min(float(timeout), NO_LIMIT)


def count_limit(
    value: object, *, name: str, what: str, default: int, url: str, shown: object = None
) -> int | None:
    """A listener's cap on how many of something it keeps (``max_peers=``,
    ``max_sessions=``) checked: a whole number of at least 1, or None for no limit.
    ``shown``: what the user wrote, when it is not ``value`` itself (a URL's text).

    Raises:
        ConfigurationError: anything else, naming the option, the endpoint and the fix.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{name}={value if shown is None else shown!r} for {url}: give how many {what} "
            f"the listener keeps at once, a whole number of at least 1 (default {default}), "
            f"or None for no limit",
            endpoint=url,
        )
    return value


def check_backlog(kw: dict[str, Any], url: str) -> None:
    """``listen(backlog=)``, when given, as a whole number, 0 or more (a URL's text too; 0 is
    a legal listen() backlog, the kernel's minimum); None is left for the mechanism's
    default. Unchecked, ``backlog="x"`` was a bare TypeError from the socket, and
    ``backlog=-5`` or ``True`` were taken without a word.

    Raises:
        ConfigurationError: anything else, naming the value, the endpoint and the fix.
    """
    value = kw.get("backlog")
    if value is None:
        return
    n = _whole_number(value)
    if n is None or n < 0:
        raise ConfigurationError(
            f"backlog={value!r} for {url}: give how many connections may wait for accept(), "
            f"a whole number, 0 or more (or leave it out for the mechanism's default)",
            endpoint=url,
        )
    kw["backlog"] = n


def file_mode(value: object, url: str) -> int:
    """``mode=`` checked: the permission bits of what a listener creates (a socket file, a
    FIFO, a queue, a spool), an int from 0o000 to 0o777, or the same in octal digits ("0600",
    "0o600", as a URL's query gives it).

    Raises:
        ConfigurationError: anything else (setuid/setgid/sticky bits included), naming the
            endpoint and the fix.
    """
    mode: object = value
    if isinstance(value, str):
        digits = value.strip().lower().removeprefix("0o")
        mode = int(digits, 8) if digits and set(digits) <= set("01234567") else None
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        shown = (
            oct(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
        )
        raise ConfigurationError(
            f"mode={shown} for {url}: give the permission bits of what the listener creates, "
            f"an int from 0o000 to 0o777 such as mode=0o600 (this user only) or mode=0o660 "
            f"(and a shared group)",
            endpoint=url,
        )
    return mode


def unix_only(
    url: str, unix_scheme: str, *, mode: int | None, allow_uids: object | None = None
) -> None:
    """Refuse, on a TCP listener, the options of a Unix socket: ``allow_uids=`` (TCP has no
    peer credentials) and ``mode=`` (no socket file). They were accepted and ignored on ws://,
    http:// and grpc://: allow_uids=[...] on ws:// let every local process in.

    Raises:
        ConfigurationError: naming the option, and the ``unix_scheme`` form that takes it.
    """
    if allow_uids is not None:
        raise ConfigurationError(
            f"allow_uids= needs {unix_scheme}:// ({url} is TCP, which has no peer "
            f"credentials): listen at {unix_scheme}:///path/to/app.sock to admit processes by "
            f"uid, or give the clients a token=",
            endpoint=url,
        )
    if mode is not None:
        raise ConfigurationError(
            f"mode= is for a socket file: {unix_scheme}:///path/to/app.sock ({url} is TCP, "
            f"which has no file to give permissions to; use token= to authenticate its "
            f"clients)",
            endpoint=url,
        )


def check_query(endpoint: Endpoint, mechanism_options: tuple[str, ...]) -> None:
    """Refuse query parameters that no option reads, before anything is opened: a misspelt
    ``?codc=json`` (or ``?unary=1``, a keyword-only option) was ignored without a word. The
    query may set the common options, connect's ``timeout`` and ``reconnect``, and the
    mechanism's own ``mechanism_options`` (its registry entry's ``query_options``).

    Raises:
        ConfigurationError: naming the unknown parameters and the accepted ones.
    """
    accepted = (*_COMMON, "timeout", "reconnect", *mechanism_options)
    unknown = sorted(set(endpoint.params) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"unknown query parameter(s) {', '.join(unknown)} in {endpoint}: the query sets "
            f"ipcwire's options ({', '.join(accepted)}; keyword arguments win), and is not "
            f"sent to the peer; correct the name, or pass the option as a keyword argument",
            endpoint=endpoint.url,
        )


def query_connect_options(
    endpoint: Endpoint, kw: dict[str, Any], timeout: float | None
) -> float | None:
    """``timeout`` and ``reconnect`` from the query when no keyword argument gives them (the
    docs promise that the query sets the same options); the timeout is returned, ``reconnect``
    put in ``kw``.

    Raises:
        ConfigurationError: a value that is not a number.
    """
    q = endpoint.params
    if kw.get("reconnect") is not None:
        kw["reconnect"] = seconds_option(
            kw["reconnect"],
            "reconnect",
            endpoint.url,
            "how long to keep retrying while nothing listens; None or 0: do not retry",
        )
    for name in ("timeout", "reconnect"):
        given = timeout if name == "timeout" else kw.get(name)
        if given is not None or name not in q:
            continue
        try:
            value = float(q[name])
        except ValueError:
            raise ConfigurationError(
                f"{name}={q[name]!r} in the query of {endpoint}: give a number of seconds",
                endpoint=endpoint.url,
            ) from None
        if name == "timeout":
            timeout = value
        else:
            kw[name] = seconds_option(
                value, "reconnect", endpoint.url, "in the query: how long to keep retrying"
            )
    return timeout


def reject_unknown(kwargs: dict[str, Any], endpoint: Endpoint, accepted: tuple[str, ...]) -> None:
    """Raise for keyword arguments no one consumed.

    Raises:
        ConfigurationError: naming the unknown and the accepted options.
    """
    if kwargs:
        names = ", ".join(sorted(kwargs))
        ok = ", ".join((*_COMMON, *accepted))
        raise ConfigurationError(
            f"unknown option(s) {names} for {endpoint}; accepted: {ok}", endpoint=endpoint.url
        )
