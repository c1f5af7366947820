"""D-Bus: connecting with (almost) no descriptors left gives ``ResourceExhausted`` (it said
``MechanismUnavailable``, "cannot reach the D-Bus daemon ... is it running?", as if the daemon
were the problem), and leaves nothing open. The same check as tests/test_connect_fd_limit.py,
on a private session bus."""

from __future__ import annotations

from collections.abc import Callable

from tests.test_connect_fd_limit import check_at_the_limit


def test_connect_at_the_descriptor_limit(dbus_url: Callable[[], str]) -> None:
    check_at_the_limit(dbus_url())
