"""ipcwire._deadline: the one place the blocking drivers' wait loops turn a deadline into a
wait time or a Timeout."""

from __future__ import annotations

import time

import pytest

from ipcwire._deadline import seconds_left
from ipcwire.errors import Timeout


def test_no_deadline_waits_without_limit() -> None:
    assert seconds_left(None, "unused", "unix:///x") is None


def test_time_left_before_the_deadline() -> None:
    left = seconds_left(time.monotonic() + 60, "unused", "unix:///x")
    assert left is not None and 0 < left <= 60


def test_a_passed_deadline_raises_the_callers_timeout() -> None:
    with pytest.raises(Timeout, match="no client connected to tcp://h:1") as info:
        seconds_left(time.monotonic(), "no client connected to tcp://h:1", "tcp://h:1")
    assert info.value.endpoint == "tcp://h:1"
    assert isinstance(info.value, TimeoutError)
