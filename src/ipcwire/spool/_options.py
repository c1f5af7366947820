"""The spool's options, read once for both drivers: keyword arguments and the URL's query,
checked, into a :class:`SpoolConfig` that builds the store and the wake-up source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire.errors import ConfigurationError, InvalidURL, MechanismUnavailable
from ipcwire.options import (
    ChannelOptions,
    file_mode,
    flag_option,
    interval_option,
    reject_unknown,
)
from ipcwire.spool._store import SpoolStore
from ipcwire.spool._watch import IN_MOVED_TO, Watcher

__all__ = [
    "OPTIONS",
    "SpoolConfig",
    "connect_options",
    "listen_options",
    "refuse_token",
    "spool_options",
]

OPTIONS: Final = (
    "mode",
    "fsync",
    "lease",
    "max_attempts",
    "reap_interval",
    "poll_interval",
    "watch",
)


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    """The spool's own options (the common ones live in ChannelOptions)."""

    path: str
    mode: int = 0o700
    fsync: bool = True
    lease: float | None = None
    max_attempts: int | None = None
    reap_interval: float = 1.0
    poll_interval: float = 0.05
    watch: str = "auto"  # "auto" (inotify if it works), "inotify", "polling"

    def watcher(self, path: str) -> Watcher:
        """The wake-up source for new messages in ``path``.

        Raises:
            MechanismUnavailable: ``watch="inotify"`` and inotify cannot be used here.
        """
        w = Watcher(
            [(path, IN_MOVED_TO)], poll_interval=self.poll_interval, polling=self.watch == "polling"
        )
        if self.watch == "inotify" and w.mode != "inotify":
            w.close()
            raise MechanismUnavailable(f"watch='inotify' asked for, but {w.reason}")
        return w

    def store(self, url: str) -> SpoolStore:
        return SpoolStore(
            self.path,
            url,
            mode=self.mode,
            fsync=self.fsync,
            lease=self.lease,
            max_attempts=self.max_attempts,
        )


def spool_options(endpoint: Endpoint, kw: dict[str, Any]) -> SpoolConfig:
    """The spool options from keyword arguments (consumed from ``kw``) and the URL's query.

    Raises:
        InvalidURL: no directory in the URL.
        ConfigurationError: a bad value, or an unknown option.
    """
    if not endpoint.path or endpoint.host:
        raise InvalidURL(
            f"{endpoint.url!r}: write a spool as spool:///absolute/dir (or spool:relative/dir)",
            endpoint=endpoint.url,
        )
    if "\0" in endpoint.path:  # (parse_url lets "@..." through for abstract unix sockets)
        raise InvalidURL(
            f"{endpoint.url!r}: the directory {endpoint.path!r} has a NUL character in it "
            f"(%00), which no file name may hold; remove it",
            endpoint=endpoint.url,
        )
    q = endpoint.params
    url = endpoint.url
    raw = {name: kw.pop(name, q.get(name)) for name in OPTIONS}
    reject_unknown(kw, endpoint, OPTIONS)
    try:
        mode = raw["mode"]
        cfg = SpoolConfig(
            path=os.path.abspath(endpoint.path),
            mode=0o700 if mode is None else file_mode(mode, endpoint.url),
            fsync=True if raw["fsync"] is None else flag_option(raw["fsync"], "fsync", url),
            lease=None if raw["lease"] is None else float(raw["lease"]),
            max_attempts=None if raw["max_attempts"] is None else int(raw["max_attempts"]),
            reap_interval=_interval(raw, "reap_interval", url, "1.0 by default"),
            poll_interval=_interval(raw, "poll_interval", url, "0.05 by default"),
            watch=str(raw["watch"] or "auto"),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad spool option for {endpoint}: {exc}", endpoint=url) from None
    if cfg.watch not in ("auto", "inotify", "polling"):
        raise ConfigurationError(
            f"watch={cfg.watch!r} for {endpoint} must be auto, inotify or polling", endpoint=url
        )
    return cfg


def _interval(raw: dict[str, Any], name: str, url: str, default: str) -> float:
    """``reap_interval=`` or ``poll_interval=``: its default when not given."""
    if raw[name] is None:
        return 1.0 if name == "reap_interval" else 0.05
    return interval_option(raw[name], name, url, default)


def refuse_token(options: ChannelOptions) -> None:
    """A spool has no handshake: a token would be checked by nobody, so it is refused
    (and with it ``codec='pickle'``, which needs one).

    Raises:
        ConfigurationError: ``token=`` was given.
    """
    if options.token is not None:
        pickle = (
            " codec='pickle' cannot be used on a spool either (it needs a token, and "
            "unpickling a message file runs whatever code its writer put in it): use "
            "codec='json' or 'msgpack'"
            if options.codec.name == "pickle"
            else ""
        )
        raise ConfigurationError(
            f"{options.url}: token= on a spool would authenticate nothing: a spool has no "
            f"handshake, and anyone who may write its directory can add messages; only the "
            f"directory's mode (mode=, 0o700 by default: only you) protects it. Drop "
            f"token=.{pickle}",
            endpoint=options.url,
        )


def connect_options(endpoint: Endpoint, kw: dict[str, Any]) -> SpoolConfig:
    """:func:`spool_options` for ``connect``: ``timeout`` and ``reconnect`` are accepted and
    dropped (opening a spool never waits)."""
    kw.pop("timeout", None)
    kw.pop("reconnect", None)
    return spool_options(endpoint, kw)


def listen_options(endpoint: Endpoint, kw: dict[str, Any]) -> SpoolConfig:
    """:func:`spool_options` for ``listen``: ``backlog`` is accepted and dropped."""
    kw.pop("backlog", None)
    return spool_options(endpoint, kw)
