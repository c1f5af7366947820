"""A spool has no handshake: token= (and so codec='pickle') is refused at connect() and
listen(), on both APIs, before anything is created. Before, the token was taken and never
checked: a consumer with token='the-real-secret' unpickled what a producer with a wrong token
(or none that an ipcwire producer would check) put in the directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError


@pytest.mark.parametrize("codec", ["pickle", "json"])
@pytest.mark.parametrize("how", ["connect", "listen"])
def test_blocking_refuses_a_token(spool_dir: Path, codec: str, how: str) -> None:
    path = spool_dir / "q"
    with pytest.raises(ConfigurationError) as info:
        getattr(ipcwire, how)(f"spool://{path}", codec=codec, token="the-real-secret")
    text = str(info.value)
    assert f"spool://{path}" in text
    assert "authenticate nothing" in text and "Drop token=" in text
    assert ("codec='pickle' cannot be used on a spool" in text) == (codec == "pickle")
    assert not path.exists()  # refused before the directory was made


@pytest.mark.parametrize("how", ["connect", "listen"])
def test_asyncio_refuses_a_token(spool_dir: Path, how: str) -> None:
    path = spool_dir / "q"

    async def main() -> str:
        with pytest.raises(ConfigurationError) as info:
            await getattr(aio, how)(f"spool://{path}?token=t", codec="pickle")
        return str(info.value)

    text = asyncio.run(main())
    assert "authenticate nothing" in text and "codec='pickle' cannot be used" in text
    assert not path.exists()


def test_pickle_without_a_token_is_still_refused(spool_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="pickle"):
        ipcwire.connect(f"spool://{spool_dir / 'q'}", codec="pickle")
