"""gRPC review (rev-grpc): clients that leave before the blocking listener's handler runs do
not take its places (max_channels=) for good."""

from __future__ import annotations

import threading
import time

import grpc

import ipcwire
from ipcwire.errors import ResourceExhausted


def test_streams_and_calls_cancelled_at_once_leave_the_listener_serving() -> None:
    """A plain gRPC client opens streams and calls and cancels each at once (a client that
    dies, or gives up, as soon as it started), and nobody accepts. When an RPC was over
    before grpcio ran the listener's handler, grpcio took no callback for its end, so the
    stream's response generator waited for ever in a pool thread: after max_channels= such
    streams the listener answered every new client RESOURCE_EXHAUSTED until the application
    accepted and closed each dead channel (probe: 8 of 54 such streams, with
    max_channels=8, refused every client after). A unary call waited reply_timeout= (30 s)."""
    with ipcwire.listen("grpc://127.0.0.1:0", max_channels=2) as lis:
        with grpc.insecure_channel(lis.url.removeprefix("grpc://")) as gch:
            stream = gch.stream_stream("/ipcwire.Channel/Stream")
            call = gch.unary_unary("/ipcwire.Channel/Call")
            for _ in range(300):
                stream(iter([b"1"]), timeout=30).cancel()
                call.future(b"1", timeout=30).cancel()
        # grpcio frees the places of the RPCs that ended as it gets to them: nothing to wait
        # on but the listener's answer, so ask again for a while (a bounded poll)
        deadline = time.monotonic() + 10
        while True:
            try:
                ipcwire.connect(lis.url, timeout=5).close()
                break
            except ResourceExhausted:
                assert time.monotonic() < deadline, "the listener still refuses new clients"
                threading.Event().wait(0.05)
