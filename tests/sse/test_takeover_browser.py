"""A real headless Chromium's EventSource and an ipcwire client resuming one stream: the
newest connection takes it over, and an EventSource that lost it, even on a page that knows
nothing of ``ipcwire-taken``, stops (409 to its reconnect) instead of taking it back in a
loop. Uses tests/browser's Chromium fixture; waits on the page's state, never sleeps."""

from __future__ import annotations

from typing import Any

import pytest
from selenium import webdriver
from tests.browser.test_chromium import browser, origin_of, until

import ipcwire
from ipcwire.errors import ChannelBroken
from ipcwire.sse.blocking import SseClientChannel, SseServerChannel

__all__ = ["browser"]  # the fixture, shared with tests/browser

# A page that does what EventSource does by default: no handler for ipcwire's events.
PAGE = """<!doctype html>
<meta charset="utf-8">
<script>
window.log = {data: [], opens: 0, errors: 0, ids: []};
window.openSse = function (path) {
  const es = new EventSource(path);
  window.es = es;
  es.onopen = () => { log.opens += 1; };
  es.onerror = () => { log.errors += 1; };
  es.onmessage = (e) => { log.data.push(JSON.parse(e.data)); log.ids.push(e.lastEventId); };
};
</script>
"""


def generation(server: Any) -> int:
    return int(server._stream.generation)


def test_an_event_source_that_lost_its_stream_stops(browser: webdriver.Chrome) -> None:
    with ipcwire.listen(
        "sse+http://127.0.0.1:0/events", codec="json", retry=0.05, pages={"/": PAGE}
    ) as site:
        browser.get(origin_of(site.url) + "/")
        browser.execute_script("openSse('/events')")
        with site.accept(timeout=30) as ch:
            assert isinstance(ch, SseServerChannel)
            ch.send_many([1, 2])
            ids = until(browser, "return log.ids", lambda s: len(s) == 2)
            # A program resumes the page's stream (a copied id): it takes the stream over.
            with ipcwire.connect(site.url, codec="json", timeout=5, last_event_id=ids[-1]) as ch2:
                # The page's EventSource reconnects with the taken event's id, gets 409, and
                # stops for good (readyState CLOSED): before, it took the stream back every
                # 50 ms (retry=), and so did the program.
                assert until(browser, "return es.readyState", lambda s: s == 2) == 2
                assert browser.execute_script("return log.opens") == 1
                ch.send(3)
                assert ch2.recv(timeout=5) == 3
                assert generation(ch) == 2
                assert browser.execute_script("return log.data") == [1, 2]


def test_a_page_resuming_a_programs_stream_takes_it_over(browser: webdriver.Chrome) -> None:
    """A duplicated tab: the page resumes an id it kept (``?lastEventId=``, since EventSource
    cannot set the header on its first request); the program that had the stream stops."""
    with ipcwire.listen(
        "sse+http://127.0.0.1:0/events", codec="json", retry=0.05, pages={"/": PAGE}
    ) as site:
        browser.get(origin_of(site.url) + "/")
        program = ipcwire.connect(site.url, codec="json", timeout=5)
        assert isinstance(program, SseClientChannel)
        with program, site.accept(timeout=30) as ch:
            assert isinstance(ch, SseServerChannel)
            ch.send(1)
            assert program.recv(timeout=5) == 1
            browser.execute_script(f"openSse('/events?lastEventId={program.last_event_id}')")
            until(browser, "return log.opens", lambda n: n == 1)
            with pytest.raises(ChannelBroken, match="took it over"):
                program.recv(timeout=10)
            ch.send(2)
            assert until(browser, "return log.data", lambda s: len(s) == 1) == [2]
            assert generation(ch) == 2
