"""The D-Bus drivers' shared state without a bus (test_state.py, test_failure.py): a hub that
keeps what it sends, and a channel whose driver hooks only record what happened."""

from __future__ import annotations

from dbus_fast import Message

from ipcwire.dbus._state import NO_LOCK, ChannelState, HubState
from ipcwire.errors import IpcwireError

__all__ = ["FakeChannel", "FakeHub"]


class FakeHub(HubState):
    """A hub (``client`` side or a listener's) whose sends are kept in ``sent``."""

    def __init__(self, *, client: bool = True) -> None:
        super().__init__(client=client, lock=NO_LOCK)
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def _unused(self) -> None:
        pass


class FakeChannel(ChannelState):
    """A channel whose driver hooks record: messages queue (within the window, as the
    drivers'), the peer's end is ``_eof``, a loss is ``_gone``."""

    def _incoming(self, msg: Message) -> None:
        if (refusal := self._enqueue(msg)) is not None:
            self._hub.refuse(msg, *refusal)

    def _peer_closed(self) -> None:
        self._eof = True

    def _lost(self, err: IpcwireError) -> None:
        self._gone = self._gone or err

    def _room(self) -> None:
        pass
