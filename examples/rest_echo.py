"""REST: a JSON endpoint served by ipcwire, called by ipcwire and by a plain HTTP client."""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.request

import ipcwire

# In real use both sides read the same secret, e.g. from a 0600 file or the environment.
token = os.environ.get("APP_TOKEN") or secrets.token_hex(16)


def handler(ch: ipcwire.Channel) -> None:
    for msg in ch:  # one message per plain POST; many for a client that opened a channel
        ch.send({"echo": msg, "peer": ch.peer.address if ch.peer else None})


with ipcwire.listen("http://127.0.0.1:0/api", codec="json", token=token) as server:
    print("listening at", server.url)
    threading.Thread(target=server.serve, args=(handler,), daemon=True).start()

    # ipcwire's client: a channel (request is one POST; send/recv work too).
    with ipcwire.connect(server.url, codec="json", token=token) as ch:
        print("request:", ch.request({"op": "ping"}, timeout=5))
        ch.send([1, 2, 3])
        print("send+recv:", ch.recv(timeout=5))

    # Any HTTP client: POST the message, get the reply (the same as curl would).
    req = urllib.request.Request(  # noqa: S310 - our own http:// URL
        server.url,
        data=json.dumps({"from": "urllib"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - our own http:// URL
        print("plain POST:", resp.status, json.loads(resp.read()))

    # The OpenAPI description of the endpoint.
    req = urllib.request.Request(  # noqa: S310
        server.url + "/openapi.json", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
        print("OpenAPI paths:", sorted(json.loads(resp.read())["paths"]))

    # A wrong token is a typed error, not a hang.
    try:
        ipcwire.connect(server.url, codec="json", token=token + "-wrong", timeout=5)
    except ipcwire.AuthenticationFailed as exc:
        print("wrong token:", type(exc).__name__)
