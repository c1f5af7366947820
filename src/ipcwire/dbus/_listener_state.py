"""What both D-Bus drivers keep and decide for a listener without waiting: its handshakes in
progress (at most ``CHANNELS_PER_PEER`` channels per bus connection), the peers it watches, and
the ``Event`` signal that ``publish`` sends.

Apart from ``_state.py`` (a channel, and the hub routing a connection's calls) because the
listener is where a channel begins, not what carries it: the hub hands it ``Handshake`` calls
and the news of a peer leaving; once a handshake is done, the driver makes the channel and
registers it with the hub. Each driver subclasses :class:`ListenerState` with its waiting
(``accept``) and its clock.
"""

from __future__ import annotations

import abc
import itertools
import logging
from typing import Any

from dbus_fast import Message

from ipcwire._core.codecs import encoder_for
from ipcwire._core.handshake import ServerHandshake
from ipcwire._core.wire import WireFormat
from ipcwire.dbus._proto import (
    ERROR_REFUSED,
    MAX_MESSAGE,
    Target,
    check_topic,
    event_signal,
    handshake_text,
    handshakes,
)
from ipcwire.dbus._state import HubState
from ipcwire.errors import ChannelClosed, FrameTooLarge, IpcwireError
from ipcwire.options import ChannelOptions

__all__ = ["CHANNELS_PER_PEER", "PUBLISH_TIMEOUT", "ListenerState"]

log = logging.getLogger("ipcwire")

# Channels (open, or with a handshake in progress) a listener keeps for one bus connection.
# An ipcwire client makes a connection per channel; without a bound one connection could open
# any number, each holding up to a window of messages in the listener.
CHANNELS_PER_PEER = 8

# How long ``publish`` waits, by default, for the bus daemon to take an event. Subscribers
# cannot hold a publisher up (the daemon buffers for them, and ends one that falls too far
# behind): only a daemon that stopped reading does, and then waiting for ever helps no one.
# The same as what ipcwire's own messages wait for the daemon (``_conn.SEND_TIMEOUT``).
PUBLISH_TIMEOUT = 5.0


class ListenerState(abc.ABC):
    """A listener's handshakes in progress and the peers it watches."""

    def __init__(
        self, hub: HubState, target: Target, options: ChannelOptions, url: str, timeout: float
    ) -> None:
        self.url = url
        self._hub = hub
        self._target = target
        self._options = options
        self._timeout = timeout  # for a handshake to finish
        self._pending: dict[tuple[str, str], tuple[ServerHandshake, float]] = {}
        self._watched: set[str] = set()
        self._ids = itertools.count(1)
        self._closed = False
        hub.users += 1
        hub.listener = self

    @abc.abstractmethod
    def _now(self) -> float:
        """The monotonic clock the handshake deadlines use."""

    @abc.abstractmethod
    def _watch(self, sender: str) -> None:
        """Learn when ``sender`` leaves the bus (it may have left already)."""

    @abc.abstractmethod
    def _open(self, sender: str, chan: str, wire: WireFormat, fails: bool) -> None:
        """A handshake finished: make, register and (once the peer is known) hand out its
        channel (``fails``: the client takes ``Fail``)."""

    @abc.abstractmethod
    def _wake(self) -> None:
        """Wake ``accept``: something changed."""

    def _event(self, obj: Any, topic: str) -> Message:
        """The ``Event`` signal that publishes ``obj``.

        Raises:
            ChannelClosed: the listener is closed.
            ConfigurationError: ``topic`` is not text a D-Bus string carries.
            FrameTooLarge: over what a bus carries.
        """
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        check_topic(topic, self.url)
        data = bytes(encoder_for(self._options.codec, self.url)(obj))
        if len(data) > MAX_MESSAGE:  # the system bus would drop this connection for it
            raise FrameTooLarge(
                f"event of {len(data)} bytes not published by {self.url}: over the limit of "
                f"{MAX_MESSAGE} bytes (what a bus carries); use unix:// for large messages",
                size=len(data),
                limit=MAX_MESSAGE,
                endpoint=self.url,
            )
        return event_signal(self._target.path, topic, data)

    def _not_published(self, err: IpcwireError) -> IpcwireError:
        """What ``publish`` raises when sending its event failed with ``err``: the listener
        closed meanwhile (its close ends a send the daemon is not reading) is
        ``ChannelClosed``, which wins over the failure it caused."""
        if self._closed:
            return ChannelClosed(
                f"listener {self.url} was closed while publishing; the event may not have "
                f"been sent",
                endpoint=self.url,
            )
        return err

    def _handshake(self, msg: Message) -> None:
        sender: str = msg.sender
        chan, text = msg.body
        if self._closed:
            self._hub.refuse(msg, ERROR_REFUSED, "the listener is closed")
            return
        now = self._now()
        for key in [k for k, (_, dl) in self._pending.items() if dl < now]:
            del self._pending[key]
        if not chan:
            if self._opened_by(sender) >= CHANNELS_PER_PEER:
                self._hub.refuse(
                    msg,
                    ERROR_REFUSED,
                    f"this connection has {CHANNELS_PER_PEER} channels open or opening "
                    f"already; open a new connection for each channel (as ipcwire does)",
                )
                return
            chan = f"c{next(self._ids)}"
            self._pending[(sender, chan)] = (handshakes(self._options)[1], now + self._timeout)
            self._watch(sender)
        entry = self._pending.get((sender, chan))
        if entry is None:
            self._hub.refuse(msg, ERROR_REFUSED, "unknown or expired handshake")
            return
        hs = entry[0]
        step = hs.receive(text.encode())
        if step.error is not None or step.done:
            del self._pending[(sender, chan)]
        if step.error is not None:
            log.warning("%s refused %s: %s", self.url, sender, step.error)
        elif step.done:
            wire = self._options.wire()
            wire.send_limit = hs.peer_max_frame
            self._open(sender, chan, wire, hs.goodbye)
        self._hub.send(Message.new_method_return(msg, "ss", [chan, handshake_text(step.send)]))

    def _opened_by(self, sender: str) -> int:
        """The channels of ``sender``'s connection: open, or with a handshake in progress."""
        with self._hub.lock:
            opened = sum(1 for peer, _ in self._hub.channels if peer == sender)
        return opened + sum(1 for peer, _ in self._pending if peer == sender)

    def _forget(self, name: str) -> None:
        for key in [k for k in self._pending if k[0] == name]:
            del self._pending[key]
        self._watched.discard(name)
