"""Sample messages per codec and small helpers shared by the blocking and asyncio suites."""

from __future__ import annotations

from typing import Any, Final

from ipcwire.channel import ChannelStatistics
from ipcwire.errors import ChannelBroken
from ipcwire.registry import Capabilities

__all__ = [
    "SAMPLES",
    "TOKEN",
    "ConformanceError",
    "bytes_likes",
    "check_tagged",
    "expect",
    "max_size_for",
    "payload",
    "same",
    "tagged",
    "tagged_sizes",
]

TOKEN: Final = "ipcwire-conformance-token"  # noqa: S105 - a test token, not a secret

SAMPLES: Final[dict[str, list[Any]]] = {
    "bytes": [b"hello", b"\x00\xff\n\r" * 7, bytes(range(256)), b"x" * 60_000],
    "json": [
        {"op": "ping", "id": 1},
        ["unicode \u00e9\u4e2d\U0001f600", 1.5, None, True, -(2**53)],
        "a string with\nnewlines\tand tabs",
        {"nested": {"deep": [[], {}, [1, [2, [3]]]]}},
    ],
    "msgpack": [{"op": "ping", "blob": b"\x00\x01"}, [1, 2.5, None, "s"], b"raw", 2**63 - 1],
    "pickle": [{1, 2, 3}, ("tuple", frozenset({"a"})), complex(1, 2)],
}


def bytes_likes() -> list[Any]:
    """Bytes-like objects the bytes codec must send as their bytes: a bytearray, a memoryview
    of 4-byte integers (len() counts items, not bytes), a strided view and a slice of a bigger
    buffer; the receiver gets ``memoryview(obj).tobytes()``."""
    import array

    return [
        bytearray(b"a bytearray"),
        memoryview(array.array("I", range(16))),
        memoryview(payload(64, 3))[::2],
        memoryview(payload(4096, 5))[100:300],
    ]


class ConformanceError(AssertionError):
    """A mechanism broke a property of the channel contract."""


class ProbeFailure(Exception):
    """Raised inside a ``with`` block by the check that a failed peer is told from a clean
    close (``Capabilities.tells_failure``)."""


def expect_failure_told(exc: BaseException | None, direction: str) -> None:
    """The end a channel saw after its peer's ``with`` block raised ProbeFailure."""
    expect(
        isinstance(exc, ChannelBroken) and "ProbeFailure" in str(exc),
        f"{direction}: a with block left by an exception ended the peer's channel with "
        f"{exc!r}; tells_failure promises ChannelBroken naming the exception type",
    )


def expect(cond: bool, what: str) -> None:
    """Fail with ``what`` unless ``cond``."""
    if not cond:
        raise ConformanceError(what)


def expect_five_of_ten(sa: ChannelStatistics, sb: ChannelStatistics) -> None:
    """The counters after ``a`` sent ``b`` five messages of 10 bytes (both drivers' check)."""
    expect(sa.messages_sent == 5, f"statistics: messages_sent={sa.messages_sent}, want 5")
    expect(sb.messages_received == 5, f"statistics: received={sb.messages_received}, want 5")
    expect(
        sa.bytes_sent == 50 and sb.bytes_received == 50,
        f"statistics: 5 messages of 10 bytes counted as {sa.bytes_sent} bytes sent and "
        f"{sb.bytes_received} received, want 50 (message bytes, framing not counted)",
    )


def same(got: Any, want: Any) -> bool:
    """``got == want`` with the same types all the way down: ``1 == True == 1.0`` and
    ``{1} == frozenset({1})``, but a codec that turns one into the other is broken."""
    if type(got) is not type(want):
        return False
    if isinstance(want, dict):
        return {(type(k), k) for k in got} == {(type(k), k) for k in want} and all(
            same(got[k], v) for k, v in want.items()
        )
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, (set, frozenset)):
        return {(type(x), x) for x in got} == {(type(x), x) for x in want}
    return bool(got == want)


def max_size_for(caps: Capabilities) -> int:
    """The largest message the suite tries: 1 MiB, or the mechanism's own limit."""
    limit = 1 << 20
    if caps.max_message_size is not None:
        limit = min(limit, caps.max_message_size)
    return limit


def payload(size: int, seed: int = 0) -> bytes:
    """Distinct, checkable bytes of a given size."""
    block = bytes((i * 31 + seed) & 0xFF for i in range(256))
    return (block * (size // 256 + 1))[:size]


def tagged_sizes(caps: Capabilities, count: int) -> list[int]:
    """Message sizes for the concurrency checks: from a few bytes up to 256 KiB (or the
    mechanism's limit), so that large ones take several writes and small ones slip between."""
    cap = min(max_size_for(caps), 256 * 1024)
    return [max(8, (cap >> (i % 9)) - (i * 7919) % 97) for i in range(count)]


def close_burst(caps: Capabilities) -> list[bytes]:
    """What the close checks send right before ``close()``: a dozen messages of mixed sizes
    (up to 256 KiB or the mechanism's limit), enough that some are still on their way when
    the channel closes."""
    return [payload(n, i) for i, n in enumerate(tagged_sizes(caps, 12))]


def tagged(sender: int, seq: int, size: int) -> bytes:
    """A message that names its sender and sequence number and whose bytes can be checked."""
    head = sender.to_bytes(2, "big") + seq.to_bytes(6, "big")
    return head + payload(size - 8, sender * 131 + seq)


def check_tagged(got: list[Any], senders: int, sizes: list[int], *, ordered: bool) -> None:
    """Every message of ``senders`` senders (``len(sizes)`` each, as made by :func:`tagged`)
    arrived once and whole; with ``ordered``, each sender's in the order it sent them."""
    seen: dict[int, list[int]] = {k: [] for k in range(senders)}
    for msg in got:
        expect(isinstance(msg, bytes) and len(msg) >= 8, f"a message arrived torn: {msg!r:.40}")
        sender, seq = int.from_bytes(msg[:2], "big"), int.from_bytes(msg[2:8], "big")
        expect(
            sender in seen and seq < len(sizes) and msg == tagged(sender, seq, sizes[seq]),
            f"a message arrived torn or mixed with another ({len(msg)} bytes, header says "
            f"sender {sender} message {seq}): concurrent senders interleaved their writes",
        )
        seen[sender].append(seq)
    for sender, seqs in seen.items():
        expect(
            sorted(seqs) == list(range(len(sizes))),
            f"sender {sender}: {len(seqs)} of {len(sizes)} messages arrived, "
            f"{len(seqs) - len(set(seqs))} twice",
        )
        if ordered:
            expect(seqs == sorted(seqs), f"sender {sender}'s messages arrived out of order")


class _Unencodable:
    """An object of a class no codec but pickle knows."""


def unencodable() -> list[tuple[str, Any]]:
    """Objects codec='json' cannot encode, each with what it is: a class it does not know, a
    str with a lone surrogate, a list nested deeper than the recursion limit."""
    deep: list[Any] = []
    inner = deep
    for _ in range(10_000):
        inner.append([])
        inner = inner[0]
    return [("an object of a class", _Unencodable()), ("a lone surrogate", "\ud800"),
            ("a list nested 10000 deep", deep)]  # fmt: skip


def expect_unsendable(exc: BaseException | None, what: str, url: str) -> None:
    """``send(what)`` raised LocalProtocolError naming the endpoint (not a bare TypeError,
    UnicodeEncodeError or RecursionError)."""
    from ipcwire.errors import LocalProtocolError

    expect(
        isinstance(exc, LocalProtocolError) and exc.endpoint == url and url in str(exc),
        f"send() of {what} with codec='json' raised {exc!r:.200}; want LocalProtocolError "
        f"naming {url}",
    )
