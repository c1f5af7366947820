"""Waiting for SIGKILL or SIGSTOP, and installing handlers outside the main thread: the
blocking and asyncio APIs give the same reason in the same words, naming the endpoint. The
asyncio one said "run the loop in the main thread" for SIGKILL in the main thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import ipcwire
from ipcwire import aio, signals
from ipcwire.errors import ConfigurationError


def _blocking_error(make: Callable[[], Any]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as err:
        make()
    return err.value


def _aio_error(make: Callable[[], Awaitable[Any]]) -> ConfigurationError:
    async def main() -> None:
        await make()

    with pytest.raises(ConfigurationError) as err:
        asyncio.run(main())
    return err.value


async def _aio_shutdown(sig: str) -> None:
    signals.aio.graceful_shutdown(signals=(sig,))


@pytest.mark.parametrize("sig", ["KILL", "STOP"])
def test_uncatchable_signals_same_words_on_both_apis(sig: str) -> None:
    url = f"signal:{sig}"
    errors = [
        _blocking_error(lambda: ipcwire.listen(url)),
        _blocking_error(lambda: signals.graceful_shutdown(signals=(sig,))),
        _aio_error(lambda: aio.listen(url)),
        _aio_error(lambda: _aio_shutdown(sig)),
    ]
    want = f"{url}: SIG{sig} cannot be caught, so it cannot be waited for"
    for exc in errors:
        assert str(exc).startswith(want), str(exc)
        assert "main thread" not in str(exc), str(exc)
        assert exc.endpoint == url
    assert len({str(e) for e in errors}) == 1


def test_outside_the_main_thread_both_apis_name_the_endpoint() -> None:
    got: list[BaseException] = []

    def run() -> None:
        for attempt in (
            lambda: ipcwire.listen("signal:USR1"),
            lambda: asyncio.run(aio.listen("signal:USR1")),
        ):
            try:
                attempt()
            except BaseException as exc:
                got.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert [type(e) for e in got] == [ConfigurationError, ConfigurationError]
    for exc in got:
        assert isinstance(exc, ConfigurationError)
        assert str(exc).startswith("signal:USR1: "), str(exc)
        assert "main thread" in str(exc), str(exc)
        assert exc.endpoint == "signal:USR1"
