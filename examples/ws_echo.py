"""WebSocket: an echo server and a client; the server also serves a page a browser could use."""

from __future__ import annotations

import threading

import ipcwire

PAGE = """<!doctype html><script>
const ws = new WebSocket(location.href.replace("http", "ws") + "chat");
ws.onopen = () => ws.send(JSON.stringify({hello: "from a browser"}));
ws.onmessage = (e) => console.log(JSON.parse(e.data));
</script>"""


def echo(ch: ipcwire.Channel) -> None:
    for msg in ch:  # ends when the client closes
        ch.send({"echo": msg})


with ipcwire.listen("ws://127.0.0.1:0/chat", codec="json", pages={"/": PAGE}) as server:
    print("listening at", server.url, "(open its http:// origin in a browser)")
    threading.Thread(target=server.serve, args=(echo,), daemon=True).start()

    with ipcwire.connect(server.url, codec="json") as ch:
        print("reply:", ch.request({"n": 1}, timeout=5))
        print("reply:", ch.request(["any", "json"], timeout=5))

    # A page from another site is refused (cross-site WebSocket hijacking).
    try:
        ipcwire.connect(server.url, codec="json", origin="http://evil.example", timeout=5)
    except ipcwire.PermissionDenied as exc:
        print("foreign origin refused:", type(exc).__name__)
