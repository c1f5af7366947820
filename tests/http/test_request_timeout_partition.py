"""``request(timeout=)`` over http:// raises ``Timeout`` when its time is up, even when the
network stops carrying data (a partition, a slow link).

Before, a timed-out request closed the channel before raising, and closing sends the DELETE
that ends the session, over the same dead link: under a silent partition
``request(timeout=1.0)`` returned after 3.0 s (blocking and asyncio), and under a 200 ms
delay ``timeout=0.3`` after 0.7 s. The channel is now closed at once and the DELETE goes in
the background. (The proxy and the cases are tests/ws/test_request_timeout_partition.py's.)
"""

from __future__ import annotations

from tests.ws.test_request_timeout_partition import asyncio_case, blocking_case


def test_blocking_http_request_times_out_on_time_under_a_partition() -> None:
    blocking_case("http", "/api")


def test_asyncio_http_request_times_out_on_time_under_a_partition() -> None:
    asyncio_case("http", "/api")
