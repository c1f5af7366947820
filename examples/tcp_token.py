"""TCP with a shared token: both sides prove they know it; it never crosses the wire."""

from __future__ import annotations

import os
import secrets
import threading

import ipcwire

# In real use both sides read the same secret, e.g. from a 0600 file or the environment.
token = os.environ.get("APP_TOKEN") or secrets.token_hex(16)

with ipcwire.listen("tcp://127.0.0.1:0", codec="msgpack", token=token) as server:
    threading.Thread(
        target=server.serve, args=(lambda ch: [ch.send(m * 2) for m in ch],), daemon=True
    ).start()

    with ipcwire.connect(server.url, codec="msgpack", token=token) as ch:
        print("doubled:", ch.request(21, timeout=2))

    try:
        ipcwire.connect(server.url, codec="msgpack", token=token + "-wrong")
    except ipcwire.AuthenticationFailed as exc:
        print("wrong token:", type(exc).__name__)
