"""An http listener's scheme and its ssl= agree, as ws's and sse's must: ``https://``
without ``ssl=`` served plain HTTP under its https:// URL (a client trusting the URL sent its
token in cleartext), and ``http://`` with ``ssl=`` served TLS under an http:// URL no client
could use. Both are refused before anything is bound, blocking and asyncio (helper-124)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError


def _ctx() -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # (no certificate needed)


def test_blocking_scheme_and_ssl_must_agree() -> None:
    with pytest.raises(ConfigurationError, match="needs ssl=SSLContext"):
        ipcwire.listen("https://127.0.0.1:0/api")
    with pytest.raises(ConfigurationError, match=r"ssl= is for https:// URLs"):
        ipcwire.listen("http://127.0.0.1:0/api", ssl=_ctx())


def test_asyncio_scheme_and_ssl_must_agree() -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match="needs ssl=SSLContext"):
            await aio.listen("https://127.0.0.1:0/api")
        with pytest.raises(ConfigurationError, match=r"ssl= is for https:// URLs"):
            await aio.listen("http://127.0.0.1:0/api", ssl=_ctx())

    asyncio.run(main())
