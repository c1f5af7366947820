"""The public conformance suite every mechanism passes (and third-party ones can run).

::

    from ipcwire.testing import check_channel, acheck_channel, pair_from_url

    check_channel(make_pair, SPEC.capabilities, url=fresh_url)
    await acheck_channel(amake_pair, SPEC.capabilities, url=fresh_url)

``make_pair(**options)`` is a context manager yielding two connected channels ``(a, b)``
built with the given common options (``codec``, ``max_frame``, ``token``...). For one-way
mechanisms ``a`` sends and ``b`` receives. With ``url`` (a callable returning a fresh URL the
mechanism can listen on), the listener checks run too. Checks skip only by capability; each
failure says which property broke.
"""

from __future__ import annotations

from ipcwire.testing._aio import acheck_channel, apair_from_url
from ipcwire.testing._blocking import check_channel, pair_from_url
from ipcwire.testing._samples import SAMPLES, ConformanceError

__all__ = [
    "SAMPLES",
    "ConformanceError",
    "acheck_channel",
    "apair_from_url",
    "check_channel",
    "pair_from_url",
]
