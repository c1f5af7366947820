"""Option values that cannot mean anything are refused when the spool is opened, naming the
option, the endpoint and what to give. Before: ``?fsync=maybe`` (or ``fsync=""``) was taken for
on or off without a word; ``lease=nan`` was accepted and no lease ever expired (a NaN is never
exceeded); ``reap_interval=nan`` and ``poll_interval=inf`` were accepted, the one looking for
abandoned claims and files at no sane interval, the other (``watch=polling``) never looking for
new messages at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire.errors import ConfigurationError

BAD: list[tuple[str, Any]] = [
    ("fsync", "maybe"),
    ("fsync", ""),
    ("fsync", 2),
    ("lease", "nan"),
    ("lease", float("nan")),
    ("reap_interval", "nan"),
    ("reap_interval", 0),
    ("poll_interval", "inf"),
    ("poll_interval", float("inf")),
    ("poll_interval", "often"),
]


@pytest.mark.parametrize(
    ("name", "value", "where"),
    [(n, v, "keyword") for n, v in BAD] + [(n, v, "query") for n, v in BAD if isinstance(v, str)],
)
def test_a_value_that_means_nothing_is_refused(
    spool_dir: Path, name: str, value: Any, where: str
) -> None:
    base = f"spool://{spool_dir}"
    url, kw = (f"{base}?{name}={value}", {}) if where == "query" else (base, {name: value})
    with pytest.raises(ConfigurationError) as err:
        ipcwire.listen(url, **kw).close()
    assert err.value.endpoint == url
    assert name in str(err.value) and url in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("value", "on"), [("true", True), ("No", False), ("ON", True), ("0", False), (True, True)]
)
def test_fsync_takes_the_usual_words(spool_dir: Path, value: Any, on: bool) -> None:
    from ipcwire._core.url import parse_url
    from ipcwire.spool._options import spool_options

    assert spool_options(parse_url(f"spool://{spool_dir}"), {"fsync": value}).fsync is on
