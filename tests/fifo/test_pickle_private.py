"""Pickle over FIFOs only when nobody else may open them. A FIFO does not tell one writer
from another, and the token authenticates only the handshake: before, a listener with
codec='pickle', token=..., mode=0o660 unpickled a frame a group member (without the token)
wrote straight into its FIFO after a real client's handshake. Now listen() refuses pickle
with a mode open to others, a client refuses pickle over FIFOs open to others (or not its
own), and a listener checks a FIFO again when it opens it anew for the next session."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError

WHY = "does not tell one writer from another"


def _url(d: Path) -> str:
    return f"fifo://{d}/in.fifo?reply={d}/out.fifo"


def test_listen_refuses_pickle_with_a_mode_open_to_others(sock_dir: Path) -> None:
    url = _url(sock_dir)
    with pytest.raises(ConfigurationError, match=WHY) as info:
        ipcwire.listen(url, codec="pickle", token="real-secret", mode=0o660)
    assert "mode=0o660" in str(info.value) and "mode=0o600" in str(info.value)

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=WHY):
            await aio.listen(url, codec="pickle", token="real-secret", mode=0o640)

    asyncio.run(main())
    assert list(sock_dir.iterdir()) == []  # refused before any FIFO was made
    # msgpack over the same shared FIFOs is fine: nothing it decodes runs code
    ipcwire.listen(url, codec="msgpack", token="real-secret", mode=0o660).close()


def test_a_client_refuses_pickle_over_fifos_open_to_others(sock_dir: Path) -> None:
    url = _url(sock_dir)
    with ipcwire.listen(url, codec="json", token="real-secret", mode=0o660):
        with pytest.raises(ConfigurationError, match=WHY) as info:
            ipcwire.connect(url, codec="pickle", token="real-secret", timeout=5)
        assert "out.fifo is mode 0o660" in str(info.value)

        async def main() -> None:
            with pytest.raises(ConfigurationError, match=WHY):
                await aio.connect(url, codec="pickle", token="real-secret", timeout=5)

        asyncio.run(main())


def test_pickle_works_over_private_fifos_and_a_replaced_fifo_is_refused(
    sock_dir: Path,
) -> None:
    url = _url(sock_dir)
    opts: dict[str, Any] = {"codec": "pickle", "token": "real-secret"}
    with ipcwire.listen(url, **opts) as listener:
        t, box = in_thread(lambda: listener.accept(timeout=10))
        with ipcwire.connect(url, timeout=10, **opts) as client:
            assert finished(t)
            with box[0] as session:
                client.send({1, 2})
                assert session.recv(timeout=5) == {1, 2}
        # Someone who may write the directory swaps in a FIFO open to all: the listener
        # opens the FIFO again by its path for the next session, and refuses it.
        fifo = sock_dir / "in.fifo"
        fifo.rename(sock_dir / "old.fifo")
        os.mkfifo(fifo)
        os.chmod(fifo, 0o666)
        with pytest.raises(ConfigurationError, match=WHY) as info:
            listener.accept(timeout=5)
        assert "in.fifo is mode 0o666" in str(info.value)


def test_asyncio_listener_checks_a_fifo_opened_anew(sock_dir: Path) -> None:
    url = _url(sock_dir)
    opts: dict[str, Any] = {"codec": "pickle", "token": "real-secret"}

    async def main() -> None:
        listener = await aio.listen(url, **opts)
        try:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            client = await aio.connect(url, timeout=10, **opts)
            session = await accepting
            await client.send((3, "x"))
            assert await session.recv(timeout=5) == (3, "x")
            await client.aclose()
            await session.aclose()
            fifo = sock_dir / "in.fifo"
            fifo.rename(sock_dir / "old.fifo")
            os.mkfifo(fifo)
            os.chmod(fifo, 0o622)
            with pytest.raises(ConfigurationError, match=WHY):
                await listener.accept(timeout=5)
        finally:
            await listener.aclose()

    asyncio.run(main())
