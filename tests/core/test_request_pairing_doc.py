"""docs/protocol.md section 6: no request ids on the wire; request() returns the next
message, so a notification the peer sends before its reply is taken as the reply, and that
reply then answers the next request."""

from __future__ import annotations

import threading
from pathlib import Path

import ipcwire


def test_a_notification_before_the_reply_is_taken_as_the_reply(tmp_path: Path) -> None:
    def handler(ch: ipcwire.Channel) -> None:
        for msg in ch:
            ch.send({"note": msg})
            ch.send({"reply": msg})

    url = f"unix://{tmp_path / 'r.sock'}"
    with ipcwire.listen(url, codec="json") as lis:
        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        with ipcwire.connect(url, codec="json", timeout=10) as ch:
            assert ch.request(1, timeout=10) == {"note": 1}
            assert ch.request(2, timeout=10) == {"reply": 1}
    t.join(5)
