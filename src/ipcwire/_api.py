"""``ipcwire.connect`` and ``ipcwire.listen``: the URL's scheme picks the mechanism."""

from __future__ import annotations

from typing import Any

from ipcwire._core.codecs import Codec
from ipcwire._core.url import parse_url
from ipcwire._oserror import translated
from ipcwire.channel import Channel, Listener
from ipcwire.options import (
    ChannelOptions,
    check_backlog,
    check_query,
    connect_timeout,
    query_connect_options,
)
from ipcwire.registry import lookup

__all__ = ["connect", "listen"]


def connect(
    url: str,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Channel:
    """Connect to the endpoint at ``url`` and return a channel.

    ``codec``: "bytes" (default), "json", "msgpack", or "pickle" (only with ``token``).
    ``framing``: "length" (default) or "ndjson" (JSON lines, for clients in any language).
    ``max_frame``: largest message accepted, in bytes (64 MiB by default).
    ``token``: shared secret; both sides prove they know it without sending it.
    ``timeout``: for connecting and the handshake (10 s by default). Every ``timeout=`` of
    ipcwire (connect, send, recv, accept...) takes ``math.inf`` (or anything over 1e9 s) as no
    limit.
    Mechanism options: ``reconnect=SECONDS`` (retry while refused, with backoff and jitter),
    ``ssl=`` (tcp), and those on each mechanism's docs page.

    Raises:
        InvalidURL: unknown scheme or malformed URL.
        ConnectionRefused: nothing listens there (after ``reconnect`` seconds, if given).
        PermissionDenied, AuthenticationFailed, HandshakeError, Timeout,
        MechanismUnavailable, ConfigurationError: each with the fix in its message.
    """
    endpoint = parse_url(url)
    spec = lookup(endpoint.scheme, url=endpoint.url)
    check_query(endpoint, spec.query_options)
    kw = _common(codec, framing, max_frame, token, options)
    opts = ChannelOptions.build(endpoint, kw)
    timeout = query_connect_options(endpoint, kw, timeout)
    if timeout is not None:
        kw["timeout"] = connect_timeout(timeout, endpoint.url)
    with translated(endpoint.url, "connecting to"):
        channel: Channel = spec.load("blocking").connect(endpoint, opts, **kw)
    return channel


def listen(
    url: str,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    **options: Any,
) -> Listener:
    """Listen at ``url``; ``accept()`` or ``serve()`` on the result.

    Options as for :func:`connect`, plus per mechanism: ``mode=0o600`` and ``allow_uids=``
    (unix), ``ssl=`` (tcp), ``backlog=``, ``idle_timeout=`` (udp: seconds a silent peer's
    channel lasts; each mechanism's page lists its own).

    Raises:
        AddressInUse: a live process listens there (named when it can be found).
        PermissionDenied, InvalidURL, MechanismUnavailable, ConfigurationError.
    """
    endpoint = parse_url(url)
    spec = lookup(endpoint.scheme, url=endpoint.url)
    check_query(endpoint, spec.query_options)
    kw = _common(codec, framing, max_frame, token, options)
    check_backlog(kw, endpoint.url)
    opts = ChannelOptions.build(endpoint, kw)
    with translated(endpoint.url, "listening on"):
        listener: Listener = spec.load("blocking").listen(endpoint, opts, **kw)
    return listener


def _common(
    codec: str | Codec | None,
    framing: str | None,
    max_frame: int | None,
    token: str | bytes | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    kw = dict(options)
    for name, value in (
        ("codec", codec),
        ("framing", framing),
        ("max_frame", max_frame),
        ("token", token),
    ):
        if value is not None:
            kw[name] = value
    return kw
