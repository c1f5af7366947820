"""Server-Sent Events: a feed that survives a dropped connection without losing an event."""

from __future__ import annotations

import ipcwire
from ipcwire.sse.blocking import SseServerChannel

with ipcwire.listen("sse+http://127.0.0.1:0/events", codec="json", retry=0.05) as server:
    print("serving", server.url, "(curl -N the http:// URL, or new EventSource(url) in a page)")

    with ipcwire.connect(server.url, codec="json") as feed:
        stream = server.accept(timeout=5)  # one channel per client stream
        assert isinstance(stream, SseServerChannel)  # for drop_connection() below
        stream.send({"price": 100})
        print("got", feed.recv(timeout=5))

        stream.drop_connection()  # the network fails ...
        stream.send_many([{"price": 101}, {"price": 102}])  # ... while the server goes on
        print("got", feed.recv(timeout=5), feed.recv(timeout=5), "after resuming")
        print("statistics:", feed.statistics())

        stream.close()  # ends the stream: the client sees EndOfChannel
        try:
            feed.recv(timeout=5)
        except ipcwire.EndOfChannel:
            print("the server ended the stream")

        try:
            feed.send("up")
        except ipcwire.LocalProtocolError:
            print("clients cannot send on an event stream: it is one-way")
