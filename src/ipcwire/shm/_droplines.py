"""What a shared-memory listener logs about a client it refused or dropped: the words and
levels of ``unix://``'s listener (``_stream/listener.py``: ``_refuse``, ``_refused_us``,
``_drop``) where the situation is the same, so one grep finds them on every mechanism."""

from __future__ import annotations

import logging

from ipcwire._core.handshake import ServerHandshake, token_mismatch
from ipcwire._stream.listener import log_text
from ipcwire.channel import PeerInfo, describe_peer
from ipcwire.errors import ChannelBroken
from ipcwire.shm._setup import WARN_ON_DROP

__all__ = ["log_dropped", "log_refused"]

log = logging.getLogger("ipcwire")


def log_refused(url: str, peer: PeerInfo | None, error: BaseException) -> None:
    """The handshake (or the allow-list) refused the client, and told it why: a WARNING."""
    # (a refusal may carry more for this log than its peer was told: the allow-list)
    log.warning("%s refused a client (%s): %s", url, describe_peer(peer) or "?", log_text(error))


def log_dropped(
    url: str, peer: PeerInfo | None, exc: BaseException, hs: ServerHandshake | None
) -> None:
    """The client went, or its setup failed. One that hung up at this server's token proof
    refused it (it has another token): a WARNING, as a client with a wrong token is."""
    hung_up = isinstance(exc, ChannelBroken | ConnectionResetError | BrokenPipeError)
    if hs is not None and hs.awaiting_proof and hung_up:
        pid = f" (pid {peer.pid} uid {peer.uid})" if peer is not None and peer.pid else ""
        log.warning("%s", token_mismatch(f"the client of {url}{pid}"))
        return
    level = logging.WARNING if isinstance(exc, WARN_ON_DROP) else logging.INFO
    log.log(level, "%s dropped %s: %s", url, describe_peer(peer) or "a client", log_text(exc))
