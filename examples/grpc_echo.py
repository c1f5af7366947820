"""gRPC: an ipcwire endpoint, called by ipcwire (a stream) and by plain grpcio (unary)."""

from __future__ import annotations

import os
import secrets
import threading
import time

import grpc
import msgspec

import ipcwire

# In real use both sides read the same secret, e.g. from a 0600 file or the environment.
token = os.environ.get("APP_TOKEN") or secrets.token_hex(16)


def handler(ch: ipcwire.Channel) -> None:
    for msg in ch:  # a stream: many messages; a unary call: one
        if msg == "slow":
            time.sleep(0.5)
        ch.send({"echo": msg})


with ipcwire.listen("grpc://127.0.0.1:0", codec="json", token=token) as server:
    print("listening at", server.url)
    threading.Thread(target=server.serve, args=(handler,), daemon=True).start()

    # ipcwire's client: one bidirectional stream per channel.
    with ipcwire.connect(server.url, codec="json", token=token) as ch:
        print("request:", ch.request({"op": "ping"}, timeout=5))
        ch.send_many([1, 2])
        print("stream:", ch.recv(timeout=5), ch.recv(timeout=5))

    # Any gRPC client, no generated code: the generic unary method, bytes in and out.
    with grpc.insecure_channel(server.url.removeprefix("grpc://")) as gch:
        call = gch.unary_unary("/ipcwire.Channel/Call")
        reply = call(
            msgspec.json.encode({"from": "grpcio"}),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=5,
        )
        print("plain grpcio:", msgspec.json.decode(reply))

    # A call past its deadline is a typed error (DEADLINE_EXCEEDED is ipcwire.Timeout).
    with ipcwire.connect(server.url, codec="json", token=token, unary=True) as ch:
        try:
            ch.request("slow", timeout=0.1)
        except ipcwire.Timeout as exc:
            print("past its deadline:", type(exc).__name__)
        print("the server still serves:", ch.request("fast", timeout=5))
