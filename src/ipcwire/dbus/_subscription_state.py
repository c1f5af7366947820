"""What both D-Bus drivers keep and decide for a subscription without waiting: the ``Event``
signals received and not yet read (at most ``SUBSCRIPTION_BUFFER`` bytes), and its counters.

Apart from ``_state.py`` because a subscription shares nothing with a channel but the words for
a connection's end: it has a bus connection of its own, no hub, no window and no handshake,
only the broadcasts of a listener's ``publish``. Each driver subclasses
:class:`SubscriptionState` with its waiting.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ipcwire._core.wire import WireFormat
from ipcwire.channel import ChannelStatistics
from ipcwire.dbus._proto import SUBSCRIPTION_BUFFER, Target
from ipcwire.dbus._state import connection_ended
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
)

__all__ = ["SubscriptionState"]


class SubscriptionState:
    """A subscription's received events (``is_event(msg, self._target.path)``) and counters."""

    def __init__(self, target: Target, wire: WireFormat, url: str) -> None:
        self.url = url
        self._target = target
        self._decode = wire.decode
        self._max_frame = wire.max_frame
        self._queue: deque[tuple[str, bytes]] = deque()
        self._buffered = 0  # bytes in the queue
        self._dropped = 0  # events that arrived once it had ended for not reading
        self._closed = False
        self._gone: IpcwireError | None = None  # why the bus connection ended
        self._received = self._bytes_received = 0

    def _keep(self, topic: str, payload: bytes) -> bool:
        """Queue a received event; False when the subscription has just ended instead (the
        driver then hangs up): more than ``SUBSCRIPTION_BUFFER`` bytes were waiting. The bus
        daemon ends a subscriber that reads too slowly, but only once its own buffer for it is
        full, and the driver's reader keeps it empty: without this the queue would grow
        without bound."""
        if self._gone is not None:
            self._dropped += 1  # ended already: the rest are dropped (and counted)
            return True
        if self._buffered + len(payload) > SUBSCRIPTION_BUFFER:
            self._dropped += 1
            self._gone = ChannelBroken(
                f"{self.url}: this subscription did not read its events: more than "
                f"{SUBSCRIPTION_BUFFER} bytes of them were waiting, so it was ended (as the bus "
                f"daemon ends a subscriber that reads too slowly); events published since are "
                f"lost: read faster, or subscribe again",
                endpoint=self.url,
            )
            return False
        self._queue.append((topic, payload))
        self._buffered += len(payload)
        return True

    def _bus_gone(self, why: str, cause: BaseException | None) -> ChannelBroken:
        """What a subscription raises once its bus connection ended (``why``), after the
        events it had received."""
        return connection_ended(
            self.url,
            why,
            "subscribe again once the bus is back (the daemon drops a subscriber that reads "
            "too slowly; events published meanwhile are lost)",
            cause,
        )

    def _next(self) -> tuple[str, bytes] | None:
        """The next received event's topic and payload, or None while there is none.

        Raises:
            ChannelClosed, ChannelBroken (the bus connection ended): none will come.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._queue:
            event = self._queue.popleft()
            self._buffered -= len(event[1])
            return event
        if self._gone is not None:
            raise self._gone
        return None

    def _only_receives(self) -> LocalProtocolError:
        return LocalProtocolError(
            f"{self.url} is a subscription: it only receives; publish with the listener's publish()"
        )

    def _no_event(self, timeout: float | None) -> str:
        """What a ``Timeout`` of ``recv_event`` says."""
        if timeout:
            return f"no event from {self.url} within {timeout} s"
        return f"no event from {self.url} yet"

    def _taken(self, topic: str, payload: bytes) -> tuple[str, Any]:
        """The event a taken signal carries.

        Raises:
            FrameTooLarge: over max_frame (skipped).
        """
        self._received += 1
        self._bytes_received += len(payload)
        if len(payload) > self._max_frame:
            raise FrameTooLarge(
                f"an event of {len(payload)} bytes from {self.url} is over max_frame="
                f"{self._max_frame}; it was skipped",
                size=len(payload),
                limit=self._max_frame,
                endpoint=self.url,
            )
        return topic, self._decode(memoryview(payload))

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=0,
            messages_received=self._received,
            bytes_sent=0,
            bytes_received=self._bytes_received,
            buffered_bytes=self._buffered,
            dropped=self._dropped,
        )
