"""A spawn channel's endpoint text (its ``url``, every error's message and ``endpoint``)
shows control characters of the command line escaped, as repr would: a ``-c`` program with
newlines no longer breaks a log line in two."""

from __future__ import annotations

import asyncio

import pytest

from ipcwire.errors import ChannelBroken
from ipcwire.spawn import spawn
from ipcwire.spawn.aio import spawn as aspawn

ARGV = ["sh", "-c", "exit 0\n#\t\x1b 'q' \\"]


def test_the_url_escapes_control_characters_on_both_apis() -> None:
    with spawn(ARGV, codec="bytes") as ch:
        blocking = ch.url

    async def main() -> str:
        async with await aspawn(ARGV, codec="bytes") as ch:
            return ch.url

    asyncio_ = asyncio.run(main())
    for url in (blocking, asyncio_):
        # bash's $'...' quoting: escaped as repr would, and still the same command in a shell
        assert url.startswith("spawn:sh -c $'exit 0\\n#\\t\\x1b \\'q\\' \\\\' [pid "), url
    assert blocking.rpartition(" [pid")[0] == asyncio_.rpartition(" [pid")[0]


def test_a_start_error_escapes_them_too() -> None:
    prog = "no-such\nprogram"
    for attempt in (lambda: spawn([prog]), lambda: asyncio.run(aspawn([prog]))):
        with pytest.raises(ChannelBroken) as err:
            attempt()
        assert "\n" not in str(err.value), repr(str(err.value))
        assert err.value.endpoint == "spawn:$'no-such\\nprogram'"
