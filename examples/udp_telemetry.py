"""UDP: a collector accepts one channel per sender; fire-and-forget and connected senders.

Run: python examples/udp_telemetry.py
"""

from __future__ import annotations

import ipcwire
from ipcwire import FrameTooLarge, udp

with ipcwire.listen("udp://127.0.0.1:0", codec="json") as collector:  # loopback, any free port
    print("collector at", collector.url)
    udp.send_to(collector.url, {"metric": "cpu", "value": 0.42}, codec="json")  # fire and forget
    with collector.accept(timeout=5) as first:
        print("from", first.peer.address if first.peer else "?", ":", first.recv(timeout=5))

    with ipcwire.connect(collector.url, codec="json") as sender:  # connected mode
        sender.send({"metric": "mem", "value": 0.7})
        with collector.accept(timeout=5) as second:
            print("got:", second.recv(timeout=5))
            second.send({"ack": True})  # replies go back to that sender's address
            print("reply:", sender.recv(timeout=5))
        try:
            sender.send("x" * 70_000)  # over one datagram: refused before sending
        except FrameTooLarge as exc:
            print("refused:", exc.size, "bytes > limit", exc.limit)
