"""A program that ends with its blocking HTTP channel open (a script whose last line is a
send, a module global) delivers what it sent, and the server learns that the session ended.

Before, the sender thread (a daemon) went with the process: 195 of 200 messages of 64 KiB
arrived and the server's ``recv()`` waited for more (until the session's idle timeout). Now
the channel is closed at exit as ``close()`` closes it (``ipcwire._atexit``): everything is
posted, then the session's DELETE, and the server gets ``EndOfChannel``; as a Unix socket's
kernel delivers everything and then the end.
"""

from __future__ import annotations

from tests._exit import program_ends

from ipcwire.errors import ChannelBroken, EndOfChannel

SIZE = 65536
COUNT = 200
URL = "http://127.0.0.1:0/exit"


def test_a_program_that_never_closes_its_channel_delivers_what_it_sent() -> None:
    _, got, end = program_ends(URL, count=COUNT, size=SIZE)
    assert isinstance(end, EndOfChannel), (len(got), end)
    assert got == list(range(COUNT))


def test_an_asyncio_loop_that_ends_with_its_channel_open_says_what_it_lost() -> None:
    """asyncio.run() returning cancels the sender task and its post before ipcwire can run:
    what was queued is lost. Before, in silence on both sides (the server's recv() waited for
    more); now the client logs a WARNING and its session's DELETE counts what was lost, so
    the server's recv() raises ChannelBroken saying so."""
    err, got, end = program_ends(URL, count=COUNT, size=SIZE, aio=True)
    assert got == list(range(len(got)))  # in order, no gap, nothing twice
    if len(got) < COUNT:  # (the usual case: the sender was cut off)
        assert "the event loop ended with http://127.0.0.1:" in err, err
        assert "await aclose()" in err, err
        assert isinstance(end, ChannelBroken), end
        assert "could not deliver" in str(end), end
    else:
        assert isinstance(end, EndOfChannel), end


def test_an_asyncio_channel_closed_before_its_loop_ends_delivers_without_a_word() -> None:
    err, got, end = program_ends(URL, count=COUNT, size=SIZE, aio=True, close=True)
    assert "still open" not in err, err
    assert isinstance(end, EndOfChannel), end
    assert got == list(range(COUNT))
