"""Fan-out to several subscribers (pyzmq's PUB/SUB) over plain channels, with a drop policy.

ipcwire has no PUB socket: the publisher listens, each subscriber connects, and the
publisher sends every event to every channel. Two things make that right:

- send_many(): one write per subscriber for a whole batch of events, not one per event;
- send_many(..., timeout=0): a subscriber whose socket is full gets that batch dropped
  (counted here) instead of stopping the loop, and so every other subscriber, until it
  reads. A plain send() waits for room: one stalled subscriber would stall them all.

Subscribers see a drop as a gap in the sequence numbers. Run: python examples/fanout.py
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import threading
import time
from typing import Any

import ipcwire

N_SUBSCRIBERS = 3  # the last one is slow: it reads 10,000 events/s at best
N_BATCHES = 200
BATCH = 100  # events per batch: one write per subscriber for each


def subscriber(url: str, name: str, slow: bool) -> None:
    received = gaps = 0
    expected = 0
    with ipcwire.connect(url, codec="msgpack", reconnect=10) as ch:
        ch.send({"name": name})  # (channels go both ways: say who we are)
        for event in ch:  # until the publisher closes
            if event["seq"] != expected:
                gaps += 1  # events dropped for us (the publisher counted them)
            expected = event["seq"] + 1
            received += 1
            if slow and received % 10 == 0:
                time.sleep(0.001)  # a consumer that does not keep up
    print(f"{name}: received {received} events, {gaps} gaps", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"unix://{tmp}/events.sock"
        subscribers: dict[ipcwire.Channel, list[Any]] = {}  # channel -> [name, dropped]
        lock = threading.Lock()
        with ipcwire.listen(url, codec="msgpack") as server:

            def accept_all() -> None:  # late joiners welcome: they get events from now on
                while True:
                    try:
                        ch = server.accept()
                    except ipcwire.ChannelClosed:
                        return  # the listener was closed
                    try:
                        hello = ch.recv(timeout=5)
                    except ipcwire.IpcwireError:
                        ch.close()  # gone, or silent: not a subscriber
                        continue
                    with lock:
                        subscribers[ch] = [hello["name"], 0]

            threading.Thread(target=accept_all, daemon=True).start()
            ctx = mp.get_context("spawn")
            procs = [
                ctx.Process(target=subscriber, args=(url, f"sub{i}", i == N_SUBSCRIBERS - 1))
                for i in range(N_SUBSCRIBERS)
            ]
            for p in procs:
                p.start()
            while len(subscribers) < N_SUBSCRIBERS:  # (a real publisher would not wait)
                time.sleep(0.01)

            seq = 0
            for _ in range(N_BATCHES):
                batch = [{"seq": seq + i, "data": "x" * 50} for i in range(BATCH)]
                seq += BATCH
                with lock:
                    current = list(subscribers)
                for ch in current:
                    try:
                        ch.send_many(batch, timeout=0)  # never waits for a slow subscriber
                    except ipcwire.Timeout:
                        subscribers[ch][1] += len(batch)  # its socket is full: dropped for it
                    except ipcwire.IpcwireError:  # gone, or a send cut part-way: drop it
                        with lock:
                            del subscribers[ch]
                        ch.close()
                time.sleep(0.002)  # events arrive over time (a sensor, a log, a market feed)

            print(f"published {seq} events to {N_SUBSCRIBERS} subscribers")
            for ch, (name, dropped) in sorted(subscribers.items(), key=lambda kv: kv[1][0]):
                sent = ch.statistics().messages_sent
                print(f"{name}: {sent} events sent to it, {dropped} dropped", flush=True)
                ch.close()  # the subscriber reads what it has, then its loop ends
        for p in procs:
            p.join(30)


if __name__ == "__main__":
    main()
