"""A custom codec for tests of decode failures."""

from __future__ import annotations

from typing import Any


class FailsOnBad:
    """A custom codec: raw bytes, except that b"bad" does not decode (ValueError)."""

    name = "fails-on-bad"

    def encode(self, obj: Any) -> Any:
        return obj

    def decode(self, data: memoryview) -> Any:
        if bytes(data) == b"bad":
            raise ValueError("not decodable")
        return bytes(data)


class JsonAsIs:
    """A codec named json whose messages are the bytes given (a peer with a bug, or in
    another language, sending what JSON decoders refuse)."""

    name = "json"

    def encode(self, obj: Any) -> Any:
        return obj

    def decode(self, data: memoryview) -> Any:
        return bytes(data)


def receive_all(ch: Any, last: bytes = b"end", timeout: float = 10) -> list[object]:
    """What ``ch.recv_many`` returns until ``last`` arrives, with "error" where a call raised
    RemoteProtocolError (a message that did not decode)."""
    from ipcwire.errors import RemoteProtocolError

    got: list[object] = []
    while last not in got:
        try:
            got.extend(ch.recv_many(timeout=timeout))
        except RemoteProtocolError:
            got.append("error")
    return got


async def areceive_all(ch: Any, last: bytes = b"end", timeout: float = 10) -> list[object]:
    """:func:`receive_all` for an asyncio channel."""
    from ipcwire.errors import RemoteProtocolError

    got: list[object] = []
    while last not in got:
        try:
            got.extend(await ch.recv_many(timeout=timeout))
        except RemoteProtocolError:
            got.append("error")
    return got
